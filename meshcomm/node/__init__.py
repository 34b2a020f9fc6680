"""Composes the protocol cores into one MeshNode (handset and relay roles)."""
