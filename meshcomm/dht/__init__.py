"""Sites bridged over a structured DHT when an uplink appears (sans-IO).

The DHT itself is OpenDHT, at the edge; this package decides what to publish, when to
refresh, what to look up and how to merge what comes back, talking to the DHT through the
port of :mod:`meshcomm.dht.port`:

* :mod:`.records`: the record of one AoR at one relay (keyed-hash DHT key, sealed value:
  the owner's binding bytes unchanged plus the relay's signed attachment), its
  ``*_untrusted`` decoder and its verification;
* :mod:`.uplink`: the uplink state machine (hysteresis) fed by the DHT node's health;
* :mod:`.remote`: what is known of remote AoRs (merge rule, relays, lapse, bounds);
* :mod:`.bridge` (:mod:`.api`, :mod:`.counters`): the bridge core, its settings, events
  and counters;
* :mod:`.model`: an in-memory DHT (latency, loss, partitions, churn, TTL) for the
  simulator and the tests.
"""
