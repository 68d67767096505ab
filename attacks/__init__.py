"""Attacks that measure what a privfed configuration leaks."""
