"""Deterministic simulator: drives the same cores in virtual time."""
