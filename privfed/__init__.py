"""privfed: privacy-preserving federated learning."""
