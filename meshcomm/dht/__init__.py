"""Sites bridged over a structured DHT when an uplink appears (sans-IO).

The DHT itself is OpenDHT, at the edge; this package decides what to publish, when to
refresh, what to look up and how to merge what comes back, talking to the DHT through the
port of :mod:`meshcomm.dht.port`.
"""
