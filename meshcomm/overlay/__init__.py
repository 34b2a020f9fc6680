"""Gossip mode: neighbours, controlled flooding, anti-entropy, routing and forwarding."""
