"""Relays hold messages at least as long as handsets (issue 7 item 7): in every shipped
field profile and in the built-in defaults. A relay that drops a custody copy before the
sender's own node gives up loses the copy that was meant to outlive the sender."""

from __future__ import annotations

from meshcomm.config import NodeConfig, RelaySettings, Role, load_profile, profile_names


def _age(cfg: NodeConfig) -> int:
    return cfg.relay.store_and_forward_max_age_s


def test_relay_profiles_hold_at_least_as_long_as_handset_profiles() -> None:
    profiles = {name: load_profile(name) for name in profile_names()}
    relays = {n: c for n, c in profiles.items() if c.node.role is Role.RELAY}
    handsets = {n: c for n, c in profiles.items() if c.node.role is not Role.RELAY}
    assert relays and handsets, sorted(profiles)
    # Profiles of one deployment: an incident's relays serve its handsets.
    for incident in {c.node.incident for c in relays.values()}:
        longest = max((_age(c) for c in handsets.values() if c.node.incident == incident),
                      default=0)
        for name, cfg in relays.items():
            if cfg.node.incident == incident:
                assert _age(cfg) >= longest, (name, _age(cfg), longest)
    default_age = RelaySettings().store_and_forward_max_age_s
    for name, cfg in relays.items():
        assert _age(cfg) >= default_age, (name, _age(cfg), default_age)


def test_the_vehicle_relay_holds_a_day() -> None:
    assert _age(load_profile("vehicle-relay")) >= _age(load_profile("handset")) == 86400
