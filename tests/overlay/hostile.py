"""A hostile device beside a relay, for the simulator: Sybil floods of validly signed
bindings from fresh keys, garbage frames and replays, each from rotating UDP source ports."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable

from meshcomm.journal.events import JournalEventType as J
from meshcomm.location.binding import make_binding
from meshcomm.security.identity import Identity
from meshcomm.sim.engine import Action, ActionKind, Simulator
from meshcomm.sim.scenario import ScenarioParams, build_topology, sim_config
from meshcomm.types import LinkAddr
from meshcomm.wire.envelope import Hop, encode_frame

INCIDENT = "default"
DOMAIN = "incident.local"
#: The injector's address on the relay's radio; every frame comes from another port.
ATTACKER_HOST = "wlan0|[fe80::bad:1]"
SYBIL_PREFIX = "sip:sybil"


def sybil_key(n: int) -> Identity:
    return Identity(b"sybil---" + n.to_bytes(24, "big"))


@functools.cache
def sybil_frames(count: int, aor: str | None = None) -> tuple[bytes, ...]:
    """``count`` bindings, each from a fresh key (all on ``aor`` when given)."""
    frames = []
    for n in range(count):
        b = make_binding(sybil_key(n), incident=INCIDENT, seq=1,
                         aor=aor or f"{SYBIL_PREFIX}{n}@{DOMAIN}",
                         contacts=(f"sip:x{n}@10.9.9.9",), issued_at=1.0,
                         lifetime_s=3600)
        frames.append(encode_frame(b.envelope, Hop(ttl=16)))
    return tuple(frames)


def garbage_frames(count: int, seed: int = 9) -> tuple[bytes, ...]:
    rng = random.Random(seed)
    return tuple(bytes([0x93]) + rng.randbytes(rng.randrange(8, 400)) for _ in range(count))


def inject(sim: Simulator, node: str, frames: tuple[bytes, ...], *, start_s: float,
           rate_per_s: int, tick_s: float = 0.01, first_port: int = 20000) -> None:
    """Schedule ``frames`` into ``node`` at ``rate_per_s``, each from a new source port."""
    per_tick = max(1, round(rate_per_s * tick_s))

    def batch(i: int) -> Callable[[Simulator], None]:
        def go(s: Simulator) -> None:
            core = s.core(node)
            if core is None:
                return
            for k, frame in enumerate(frames[i:i + per_tick]):
                port = first_port + (i + k) % 40000
                core.receive(frame, LinkAddr(f"{ATTACKER_HOST}:{port}"), s.now)
            s.after_command(node)
        return go

    for tick, i in enumerate(range(0, len(frames), per_tick)):
        sim.call_at(start_s + tick * tick_s, batch(i))


def chain_with_late_joiner(seed: int, nodes: int = 6, join_at_s: float = 20.0,
                           duration_s: float = 40.0, loss: float = 0.0,
                           keep_journal: bool = True) -> Simulator:
    """A chain n0..n{nodes-1}; the last node is a new handset joining at ``join_at_s``."""
    params = ScenarioParams(topology="chain", nodes=nodes, loss=loss, duration_s=duration_s,
                            seed=seed)
    late = f"n{nodes - 1}"
    config = sim_config(params, build_topology(params),
                        actions=[Action(join_at_s, ActionKind.JOIN, (late,))],
                        absent=frozenset({late}))
    return Simulator(config, keep_journal=keep_journal)


def visible_after_s(sim: Simulator, origin: str, at: str) -> float | None:
    """Seconds from ``origin``'s first announcement to ``at`` learning it (None: never)."""
    assert sim.journal is not None
    announced = next((t for t, rec in sim.journal.get(origin, [])
                      if rec.type is J.BINDING_LEARNED and rec.data.get("via") == ""), None)
    if announced is None:
        return None
    aor = f"sip:{origin}@{DOMAIN}"
    learned = next((t for t, rec in sim.journal.get(at, [])
                    if rec.type is J.BINDING_LEARNED and rec.data.get("aor") == aor
                    and t >= announced), None)
    return None if learned is None else learned - announced
