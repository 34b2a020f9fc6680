"""A "sites" test bed (root): radio islands joined through uplinks to a shared WAN.

Each island is a chain of namespaces joined by radio veths (IPv6 link-local, loss with
:meth:`Testbed.set_loss`), built with :class:`tools.testbed.Testbed`'s primitives: island
``i``'s chain position ``p`` is test-bed node :meth:`SitesBed.node_index`. Chosen nodes of
an island (by default the last of the chain) also get an uplink: an interface
:data:`UPLINK_IFACE` that is not a radio (not in :meth:`Testbed.interfaces`, so
:meth:`Testbed.start_node` does not use it as one) and leads to the WAN namespace
``<prefix>-wan``, where a Linux bridge joins every uplink on :data:`WAN_SUBNET` (IPv4;
optionally IPv6 :data:`WAN_SUBNET6`) and :meth:`SitesBed.start_dht_node` runs
``meshcomm dht-node`` on :data:`WAN_DHT_HOST`.

An island built with ``nat=True`` has each uplink behind a NAT box of its own: a namespace
``<prefix>-nat<letter>`` between the relay (private ``192.168.<n+1>.2/24``, default route
via the box's ``.1``) and the WAN bridge (the box's outside address on the bridge), doing
nftables masquerade on its WAN side and forwarding only what leaves from inside and the
replies to it (no port forwarding, no inbound connections): the relay reaches the WAN only
through it, and nothing on the WAN can reach the relay unasked. NAT boxes are IPv4 only:
with ``ipv6=True`` only the uplinks directly on the WAN get an IPv6 address too.

:meth:`SitesBed.set_uplink` takes an uplink down (link down, as a pulled cable or a lost
satellite) and back up (restoring its default route). Everything is torn down with the bed
(:meth:`Testbed.close`: processes, then namespaces).
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tools.testbed.netns import Testbed, TestbedError, in_netns, run_ip
from tools.testbed.nodes import REPO, MeshProcess, wait_ready, wait_until

#: The uplink interface's name inside an uplinked node.
UPLINK_IFACE: Final = "wan0"
WAN_LABEL: Final = "wan"
WAN_BRIDGE: Final = "br0"
WAN_SUBNET: Final = ipaddress.IPv4Network("10.77.0.0/24")
WAN_SUBNET6: Final = ipaddress.IPv6Network("fd77::/64")
#: Host part of the dht-node's address on the WAN bridge.
WAN_DHT_HOST_PART: Final = 1
WAN_DHT_HOST: Final = str(WAN_SUBNET[WAN_DHT_HOST_PART])
WAN_DHT_HOST6: Final = str(WAN_SUBNET6[WAN_DHT_HOST_PART])
#: OpenDHT's port (the relays' --dht-port; the uplink transport uses it + 1).
DHT_PORT: Final = 4222
UPLINK_PORT_OFFSET: Final = 1
#: Host parts on the WAN: an uplink n directly on it, a NAT box's outside address.
DIRECT_HOST_BASE: Final = 10
NAT_HOST_BASE: Final = 100
#: At most this many uplinks (host parts and private subnets must stay distinct).
MAX_UPLINKS: Final = 80
NAT_INSIDE_IFACE: Final = "lan0"
DHT_READY_TIMEOUT_S: Final = 20.0
LOG_TAIL_LINES: Final = 25
_PREFIX_LEN: Final = 24


@dataclass(frozen=True, slots=True)
class Island:
    """One island: a chain of ``nodes`` namespaces (plus radio links ``extra_links``
    between chain positions); ``uplinked`` chain positions (empty: the last) have an
    uplink, behind a NAT box each when ``nat``."""

    nodes: int = 3
    uplinked: tuple[int, ...] = ()
    nat: bool = False
    extra_links: tuple[tuple[int, int], ...] = ()

    def uplinked_positions(self) -> tuple[int, ...]:
        positions = self.uplinked or (self.nodes - 1,)
        if any(not 0 <= p < self.nodes for p in positions) or len(set(positions)) != len(
                positions):
            raise ValueError(f"uplinked positions {positions} must be distinct in "
                             f"0..{self.nodes - 1}")
        return positions


@dataclass(frozen=True, slots=True)
class Uplink:
    """One node's uplink: its address (the DHT binds there), its default gateway (the NAT
    box's inside address, None when it sits on the WAN itself), and the address the WAN sees
    (the NAT box's outside address, or its own)."""

    number: int
    island: int
    node: int
    address: str
    gateway: str | None
    nat_ns: str | None
    wan_address: str


def island_letter(island: int) -> str:
    return chr(ord("a") + island)


class SitesBed(Testbed):
    """Islands, a WAN and optional NATs (see the module docstring). Build with :func:`sites`."""

    __test__ = False

    def __init__(self, islands: Sequence[Island], *, ipv6: bool = False,
                 prefix: str | None = None) -> None:
        if not islands:
            raise ValueError("a sites test bed needs at least one island")
        super().__init__(sum(island.nodes for island in islands), prefix=prefix)
        self.islands = tuple(islands)
        self.ipv6 = ipv6
        self.wan_ns = ""
        self.uplinks: dict[int, Uplink] = {}
        self.dht_proc: subprocess.Popen[bytes] | None = None

    # names

    def node_index(self, island: int, position: int) -> int:
        """Test-bed node of ``island``'s chain position ``position``."""
        if not 0 <= island < len(self.islands):
            raise IndexError(f"no island {island}")
        if not 0 <= position < self.islands[island].nodes:
            raise IndexError(f"island {island} has no position {position}")
        return sum(i.nodes for i in self.islands[:island]) + position

    def island_of(self, node: int) -> tuple[int, int]:
        """(island, chain position) of test-bed node ``node``."""
        self.ns(node)
        for island, spec in enumerate(self.islands):
            if node < spec.nodes:
                return island, node
            node -= spec.nodes
        raise IndexError(node)  # unreachable: ns() checked the range

    def uplinked_nodes(self, island: int | None = None) -> list[int]:
        return sorted(n for n, up in self.uplinks.items() if island in (None, up.island))

    @property
    def dht_bootstrap(self) -> str:
        """``HOST:PORT`` of the WAN's dht-node (the relays' --dht-bootstrap)."""
        return f"{WAN_DHT_HOST}:{DHT_PORT}"

    # building

    def build_sites(self) -> SitesBed:
        """Namespaces, radio chains, the WAN bridge, uplinks and NAT boxes; all up."""
        edges = []
        for island, spec in enumerate(self.islands):
            first = self.node_index(island, 0)
            edges += [(first + p, first + p + 1) for p in range(spec.nodes - 1)]
            for a, b in spec.extra_links:
                if not (0 <= a < spec.nodes and 0 <= b < spec.nodes and abs(a - b) > 1):
                    raise ValueError(f"island {island}: extra link {(a, b)} must join two "
                                     "chain positions that are not neighbours already")
                edges.append((first + a, first + b))
        self.build(edges)  # tears down by itself on error
        try:
            self._build_wan()
            number = 0
            for island, spec in enumerate(self.islands):
                for position in spec.uplinked_positions():
                    if number >= MAX_UPLINKS:
                        raise ValueError(f"at most {MAX_UPLINKS} uplinks")
                    node = self.node_index(island, position)
                    add = self._add_nat_uplink if spec.nat else self._add_direct_uplink
                    self.uplinks[node] = add(number, island, node)
                    number += 1
        except BaseException:
            self.close()
            raise
        return self

    def _build_wan(self) -> None:
        self.wan_ns = self.add_namespace(WAN_LABEL)
        run_ip("-n", self.wan_ns, "link", "add", WAN_BRIDGE, "type", "bridge", "stp_state", "0")
        run_ip("-n", self.wan_ns, "addr", "add", f"{WAN_DHT_HOST}/{WAN_SUBNET.prefixlen}",
               "dev", WAN_BRIDGE)
        if self.ipv6:
            run_ip("-n", self.wan_ns, "addr", "add",
                   f"{WAN_DHT_HOST6}/{WAN_SUBNET6.prefixlen}", "dev", WAN_BRIDGE, "nodad")
        run_ip("-n", self.wan_ns, "link", "set", WAN_BRIDGE, "up")

    def _veth_to_wan(self, namespace: str, iface: str, port: str) -> None:
        """A veth ``iface`` in ``namespace`` whose other end ``port`` is on the WAN bridge."""
        run_ip("-n", namespace, "link", "add", iface, "type", "veth", "peer", "name", port,
               "netns", self.wan_ns)
        run_ip("-n", self.wan_ns, "link", "set", port, "master", WAN_BRIDGE, "up")

    def _add_direct_uplink(self, number: int, island: int, node: int) -> Uplink:
        relay = self.ns(node)
        self._veth_to_wan(relay, UPLINK_IFACE, f"u{number}")
        address = str(WAN_SUBNET[DIRECT_HOST_BASE + number])
        run_ip("-n", relay, "addr", "add", f"{address}/{WAN_SUBNET.prefixlen}",
               "dev", UPLINK_IFACE)
        if self.ipv6:
            run_ip("-n", relay, "addr", "add",
                   f"{WAN_SUBNET6[DIRECT_HOST_BASE + number]}/{WAN_SUBNET6.prefixlen}",
                   "dev", UPLINK_IFACE, "nodad")
        run_ip("-n", relay, "link", "set", UPLINK_IFACE, "up")
        return Uplink(number, island, node, address, None, None, address)

    def _add_nat_uplink(self, number: int, island: int, node: int) -> Uplink:
        relay = self.ns(node)
        box = self.add_namespace(f"nat{island_letter(number)}")
        inside = ipaddress.IPv4Network(f"192.168.{number + 1}.0/{_PREFIX_LEN}")
        gateway, address = str(inside[1]), str(inside[2])
        outside = str(WAN_SUBNET[NAT_HOST_BASE + number])
        run_ip("-n", relay, "link", "add", UPLINK_IFACE, "type", "veth", "peer", "name",
               NAT_INSIDE_IFACE, "netns", box)
        run_ip("-n", box, "addr", "add", f"{gateway}/{_PREFIX_LEN}", "dev", NAT_INSIDE_IFACE)
        run_ip("-n", box, "link", "set", NAT_INSIDE_IFACE, "up")
        self._veth_to_wan(box, UPLINK_IFACE, f"n{number}")
        run_ip("-n", box, "addr", "add", f"{outside}/{WAN_SUBNET.prefixlen}",
               "dev", UPLINK_IFACE)
        run_ip("-n", box, "link", "set", UPLINK_IFACE, "up")
        self.run_in(box, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        self.run_in(box, ["nft", "-f", "-"], input_text=_nat_rules())
        run_ip("-n", relay, "addr", "add", f"{address}/{_PREFIX_LEN}", "dev", UPLINK_IFACE)
        run_ip("-n", relay, "link", "set", UPLINK_IFACE, "up")
        run_ip("-n", relay, "route", "replace", "default", "via", gateway)
        return Uplink(number, island, node, address, gateway, box, outside)

    # using

    def set_uplink(self, node: int, up: bool) -> None:
        """Take node ``node``'s uplink down (link down) or bring it back up (and its default
        route through the NAT box, which the kernel dropped with the link)."""
        uplink = self.uplinks.get(node)
        if uplink is None:
            raise TestbedError(f"node {node} has no uplink")
        run_ip("-n", self.ns(node), "link", "set", UPLINK_IFACE, "up" if up else "down")
        if up and uplink.gateway is not None:
            run_ip("-n", self.ns(node), "route", "replace", "default", "via", uplink.gateway)

    def relay_args(self, *, impair: str | None = None,
                   extra: Sequence[str] = ()) -> list[str]:
        """The uplink flags of a relay of this bed (``meshcomm relay --help``)."""
        args = ["--uplink", UPLINK_IFACE, "--dht-bootstrap", self.dht_bootstrap,
                "--dht-port", str(DHT_PORT)]
        if impair:
            args += ["--uplink-impair", impair]
        return [*args, *extra]

    def start_dht_node(self, *, incident: str = "default",
                       extra_args: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        """Start ``meshcomm dht-node`` on the WAN (:data:`WAN_DHT_HOST`, :data:`DHT_PORT`)
        and wait until its DHT and uplink-mesh sockets are bound."""
        if self.dht_proc is not None and self.dht_proc.poll() is None:
            raise TestbedError("the dht-node runs already")
        argv = [sys.executable, "-m", "meshcomm.cli.main", "dht-node", "--listen",
                self.dht_bootstrap, "--incident", incident,
                "--data-dir", str(self.workdir / "dht-node"), *extra_args]
        with self.dht_log.open("ab") as log:
            self.dht_proc = self.popen_in(self.wan_ns, argv, stdout=subprocess.DEVNULL,
                                          stderr=log, stdin=subprocess.DEVNULL, cwd=REPO)
        ports = (DHT_PORT, DHT_PORT + UPLINK_PORT_OFFSET)
        if wait_until(lambda: self._udp_bound(ports), DHT_READY_TIMEOUT_S) is None:
            raise TestbedError(f"dht-node did not bind {ports}\n{self.dht_log_tail()}")
        return self.dht_proc

    def _udp_bound(self, ports: Sequence[int]) -> bool:
        if self.dht_proc is None or self.dht_proc.poll() is not None:
            raise TestbedError(f"dht-node exited\n{self.dht_log_tail()}")
        with in_netns(self.wan_ns):
            table = Path("/proc/thread-self/net/udp").read_text()
        bound = {int(line.split()[1].rsplit(":", 1)[1], 16)
                 for line in table.splitlines()[1:] if line.strip()}
        return all(port in bound for port in ports)

    @property
    def dht_log(self) -> Path:
        return self.workdir / "dht-node.log"

    def dht_log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.dht_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def start_islands(self, *, name: str = "{letter}{position}",
                      handset_args: Sequence[str] = (), relay_args: Sequence[str] = (),
                      wait: bool = True) -> dict[int, MeshProcess]:
        """Start every node: uplinked ones as ``meshcomm relay`` with :meth:`relay_args`
        plus ``relay_args``, the others as handsets with ``handset_args``; names from the
        ``name`` pattern (``{letter}``: the island's, ``{position}``: in its chain)."""
        started = {}
        for node in range(self.n_nodes):
            island, position = self.island_of(node)
            label = name.format(letter=island_letter(island), position=position)
            if node in self.uplinks:
                started[node] = self.start_node(node, role="relay", name=label, wait=False,
                                                extra_args=[*handset_args, *relay_args])
            else:
                started[node] = self.start_node(node, name=label, wait=False,
                                                extra_args=handset_args)
        if wait:
            for proc in started.values():
                wait_ready(proc)
        return started

    def describe(self) -> str:
        return f"{super().describe()}\n--- dht-node\n{self.dht_log_tail()}"

    def __enter__(self) -> SitesBed:
        return self


def _nat_rules() -> str:
    """Masquerade what leaves on the WAN side; forward only from inside and the replies."""
    return (
        "table ip mctb_nat {\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f'    oifname "{UPLINK_IFACE}" masquerade\n'
        "  }\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy drop;\n"
        "    ct state established,related accept\n"
        f'    iifname "{NAT_INSIDE_IFACE}" oifname "{UPLINK_IFACE}" accept\n'
        "  }\n"
        "}\n"
    )


def sites(islands: Sequence[Island], *, ipv6: bool = False,
          prefix: str | None = None) -> SitesBed:
    """Build a :class:`SitesBed` (use it as a context manager: it tears everything down)."""
    return SitesBed(islands, ipv6=ipv6, prefix=prefix).build_sites()
