"""Topologies for the simulator: chain, grid, random geometric graph, or a scenario file."""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field

from meshcomm.errors import ConfigError

#: Radio range in units where the default random area holds 100 nodes per unit square.
DEFAULT_RANGE = 0.2
MAX_PLACEMENT_TRIES = 200


@dataclass(frozen=True, slots=True)
class LinkSpec:
    loss: float
    delay_s: float


@dataclass(slots=True)
class Topology:
    names: list[str]
    #: links[a][b] = spec of the directed link a -> b (b hears a)
    links: dict[str, dict[str, LinkSpec]] = field(default_factory=dict)
    positions: dict[str, tuple[float, float]] = field(default_factory=dict)

    def add_link(self, a: str, b: str, spec: LinkSpec) -> None:
        self.links.setdefault(a, {})[b] = spec
        self.links.setdefault(b, {})[a] = spec

    def neighbours(self, name: str) -> dict[str, LinkSpec]:
        return self.links.get(name, {})

    def hop_distances(self, source: str) -> dict[str, int]:
        dist = {source: 0}
        todo = deque([source])
        while todo:
            cur = todo.popleft()
            for nxt in self.neighbours(cur):
                if nxt not in dist:
                    dist[nxt] = dist[cur] + 1
                    todo.append(nxt)
        return dist

    def components(self) -> dict[str, int]:
        """Node -> index of its radio component (an island), in name order."""
        out: dict[str, int] = {}
        island = 0
        for name in self.names:
            if name not in out:
                for reached in self.hop_distances(name):
                    out[reached] = island
                island += 1
        return out

    def is_connected(self) -> bool:
        return not self.names or len(self.hop_distances(self.names[0])) == len(self.names)

    def diameter(self) -> int:
        return max((max(self.hop_distances(n).values()) for n in self.names), default=0)

    def mean_degree(self) -> float:
        return sum(len(self.neighbours(n)) for n in self.names) / max(1, len(self.names))


def node_names(count: int) -> list[str]:
    return [f"n{i}" for i in range(count)]


def chain(count: int, spec: LinkSpec) -> Topology:
    topo = Topology(node_names(count))
    for i in range(count - 1):
        topo.add_link(topo.names[i], topo.names[i + 1], spec)
    return topo


def grid(count: int, spec: LinkSpec) -> Topology:
    width = max(1, math.isqrt(count))
    if width * width < count:
        width += 1
    topo = Topology(node_names(count))
    for i, name in enumerate(topo.names):
        topo.positions[name] = (float(i % width), float(i // width))
        if i % width and i - 1 >= 0:
            topo.add_link(topo.names[i - 1], name, spec)
        if i - width >= 0:
            topo.add_link(topo.names[i - width], name, spec)
    return topo


def random_geometric(count: int, spec: LinkSpec, rng: random.Random,
                     radio_range: float = DEFAULT_RANGE) -> Topology:
    """Nodes placed uniformly at random in a square sized for constant density
    (100 nodes per unit square); linked when closer than ``radio_range``. Placement is
    retried (deterministically) until the graph is connected."""
    side = math.sqrt(count / 100.0)
    for _ in range(MAX_PLACEMENT_TRIES):
        topo = Topology(node_names(count))
        for name in topo.names:
            topo.positions[name] = (rng.uniform(0, side), rng.uniform(0, side))
        for i, a in enumerate(topo.names):
            ax, ay = topo.positions[a]
            for b in topo.names[i + 1:]:
                bx, by = topo.positions[b]
                if (ax - bx) ** 2 + (ay - by) ** 2 <= radio_range ** 2:
                    topo.add_link(a, b, spec)
        if topo.is_connected():
            return topo
    raise ConfigError("topology", f"no connected placement of {count} nodes found")


#: Islands of one generated incident (named a, b, ... z: nodes a0, a1, ..., b0, ...).
MAX_ISLANDS = 26


def island_names(islands: int, size: int) -> list[list[str]]:
    return [[f"{chr(ord('a') + k)}{i}" for i in range(size)] for k in range(islands)]


def islands(count: int, size: int, spec: LinkSpec, rng: random.Random,
            radio_range: float = DEFAULT_RANGE) -> Topology:
    """``count`` islands of ``size`` nodes each: separate radio components, each a random
    geometric graph (:func:`random_geometric`), placed side by side out of each other's
    range."""
    if not 1 <= count <= MAX_ISLANDS:
        raise ConfigError("islands", f"must be in 1..{MAX_ISLANDS}")
    topo = Topology([])
    side = math.sqrt(size / 100.0)
    for k, names in enumerate(island_names(count, size)):
        part = random_geometric(size, spec, rng, radio_range)
        rename = dict(zip(part.names, names, strict=True))
        topo.names.extend(names)
        shift = k * (side + 2 * radio_range + 1.0)
        for old, (x, y) in part.positions.items():
            topo.positions[rename[old]] = (x + shift, y)
        for a, peers in part.links.items():
            for b, link in peers.items():
                topo.links.setdefault(rename[a], {})[rename[b]] = link
    return topo


def hub(topo: Topology, names: list[str]) -> str:
    """The most central of ``names`` (least eccentricity, then name): where an island's
    uplinked relay stands by default."""
    return min(names, key=lambda n: (max(topo.hop_distances(n).values()), n))
