"""Bridges from privfed to other federated-learning runtimes (install the matching extra)."""
