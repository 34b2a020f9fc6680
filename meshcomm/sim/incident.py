"""The whole-node side of the simulator: gateways, store-and-forward, media relays, one
simulated softphone per node, and the traffic between them.

:class:`Incident` builds each whole node with the runtime's builder (``compose`` with a
:class:`GatewayConfig`, a :class:`StoreForward` restored from the node slot's SQLite store,
a :class:`MediaRelay` on a :class:`SequentialPortAllocator`, end-to-end sealing, and with
uplinks the WAN's bridge, uplink mesh and timed tunnel) and runs its client
(:class:`~meshcomm.sim.clients.SimClient`, its calls' media as ``client_media`` says): the
client's SIP goes in through ``pump.sip``, its media through ``pump.client_media``; the
node's edge hands back what the gateway sends it. Its events live in the simulator's heap
(``_Ev.CLIENT``), tagged with what to do (:class:`Do`) and the client they belong to, so
a client that died with its node is never driven again.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from meshcomm.media.packet import Channel
from meshcomm.media.relay import MediaConfig, MediaRelay, SequentialPortAllocator
from meshcomm.node.core import NodeCore, compose
from meshcomm.node.gateway.types import GatewayConfig
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.node.storeforward import RELAY_CAP, RELAY_ROLE, StoreForwardConfig
from meshcomm.overlay.core import FrameDecoder
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.sim.clients import (
    CLIENT_ADDR,
    DOMAIN,
    FRAME_INTERVAL_S,
    GATEWAY_ADDR,
    CallRecord,
    ClientCall,
    ClientMedia,
    Direction,
    MessageRecord,
    SimClient,
    TrafficStats,
)
from meshcomm.sim.metrics import SimCounter
from meshcomm.sim.traffic import TrafficEvent, TrafficKind

if TYPE_CHECKING:
    from meshcomm.sim.engine import Simulator

#: The softphone starts and registers this long after its node registered its AoR (at
#: once: a message for the AoR that arrives meanwhile would go to the node's built-in UA).
CLIENT_REGISTER_AFTER_S = 0.0
#: The call ports of each node's media relay (no sockets in the simulator).
MEDIA_FIRST_PORT = 20000
MEDIA_LAST_PORT = 21000
#: Prefer a RAM-backed directory for the nodes' SQLite stores (their fsyncs are free).
FAST_TMP = Path("/dev/shm")


class Do(Enum):
    """What an incident event in the heap does."""

    REGISTER = "register"       # start the node's client and REGISTER
    FLUSH = "flush"             # move the client's datagrams to its gateway
    TIMER = "timer"             # the client's timer
    MEDIA = "media"             # the next media frame of a call
    TRAFFIC = "traffic"         # a planned MESSAGE or call


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    do: Do
    client: SimClient | None = None
    boot: int = 0
    gen: int = 0
    call: ClientCall | None = None
    traffic: TrafficEvent | None = None


class Incident:
    """See the module docstring."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.config = sim.config
        self.stats = TrafficStats()
        self.gateway_config = GatewayConfig(local_host=GATEWAY_ADDR[0],
                                            local_port=GATEWAY_ADDR[1])
        self.sf_config = StoreForwardConfig()
        self.media_config = MediaConfig()
        #: what the clients offer and send in calls (tests set it before the run)
        self.client_media = ClientMedia()
        self._tmp: str | None = None
        self.store_dir: Path | None = self.config.store_dir

    # ------------------------------------------------------------ run lifecycle
    def open(self) -> None:
        """Make the stores' directory and put the planned traffic into the heap."""
        if self.store_dir is None:
            base = FAST_TMP if FAST_TMP.is_dir() else None
            self._tmp = tempfile.mkdtemp(prefix="meshcomm-sim-", dir=base)
            self.store_dir = Path(self._tmp)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.config
        present = [n for n in config.topology.names if n not in config.absent_at_start]
        register_by = (config.start_spread_s + config.register_delay_s[1]
                       + CLIENT_REGISTER_AFTER_S)
        rng = random.Random(f"meshcomm-sim-traffic:{config.seed}")
        islands = config.topology.components() if config.traffic.cross_site else None
        for event in config.traffic.expand(present, rng, config.duration_s, register_by,
                                           islands):
            self.sim.push_incident(event.at_s, event.src,
                                   IncidentEvent(Do.TRAFFIC, traffic=event))

    def close(self) -> None:
        for name in self.sim.node_names():
            self.sim.edge(name).close_storage()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def report(self) -> dict[str, object]:
        return self.stats.report()

    # ------------------------------------------------------------ whole nodes
    def mesh_node(self, name: str, identity: Identity, settings: NodeSettings,
                  rng: random.Random, boots: int, verifier: SignatureVerifier,
                  decoder: FrameDecoder) -> MeshNode:
        if settings.role == RELAY_ROLE and RELAY_CAP not in settings.caps:
            settings = NodeSettings(incident=settings.incident, role=settings.role,
                                    registration_lifetime_s=settings.registration_lifetime_s,
                                    trust=settings.trust, overlay=settings.overlay,
                                    caps=(*settings.caps, RELAY_CAP))
        wan = self.sim.wan
        if wan is not None and wan.is_member(name):
            settings = wan.island_settings(settings)
        return MeshNode(identity, settings, verifier=verifier, rng=rng, now=self.sim.now,
                        seq_base=boots << 32, frame_decoder=decoder)

    def compose(self, name: str, identity: Identity, node: MeshNode, boots: int) -> NodeCore:
        """The whole node, built by the runtime's ``compose``: gateway, end-to-end sealing,
        store-and-forward restored from the slot's store, media relay, and in a run with
        uplinks a tunnel whose resolutions are timed, plus an uplinked relay's DHT bridge
        and uplink mesh. Only the edge and the randomness are the simulator's."""
        assert self.store_dir is not None, "Incident.open() first"
        now = self.sim.now
        parts_rng = random.Random(f"meshcomm-sim-parts:{self.config.seed}:{name}:{boots}")
        sf = self.sim.edge(name).open_store_forward(self.store_dir, node, self.sf_config, now)
        relay = MediaRelay(identity, SequentialPortAllocator(GATEWAY_ADDR[0], MEDIA_FIRST_PORT,
                                                             MEDIA_LAST_PORT),
                           random.Random(parts_rng.getrandbits(64)), self.media_config)
        dht = uplink = make_tunnel = None
        wan = self.sim.wan
        if wan is not None:
            if wan.is_member(name):
                dht = wan.bridge(name, identity, node, boots)
                uplink = wan.uplink_mesh(name, identity, node.settings, boots,
                                         node.overlay.verifier, self.sim.decoder)
            make_tunnel = wan.tunnel_factory(name)
        return compose(node, gateway_config=self.gateway_config,
                       rng=random.Random(parts_rng.getrandbits(64)),
                       node_aor=self.aor(name), now=now, sf=sf, relay=relay,
                       dht=dht, uplink=uplink, make_tunnel=make_tunnel,
                       key_rng=random.Random(f"meshcomm-sim-keys:{self.config.seed}:{name}:{boots}"))

    @staticmethod
    def aor(name: str) -> str:
        return f"sip:{name}@{DOMAIN}"

    @staticmethod
    def contacts(name: str, core: NodeCore) -> tuple[str, ...]:
        """The node's own binding names its gateway (``sip:user@<nodehex>.mesh``)."""
        assert core.gateway is not None
        return (f"sip:{name}@{core.gateway.mesh_host}",)

    def node_registered(self, name: str) -> None:
        """The node announced its AoR: its softphone starts and registers soon after."""
        self.sim.push_incident(self.sim.now + CLIENT_REGISTER_AFTER_S, name,
                               IncidentEvent(Do.REGISTER, boot=self.sim.boots(name)))

    def client_gone(self, name: str) -> None:
        """The node stopped: its softphone goes with it (its heap events go stale)."""
        self.sim.edge(name).client = None

    # ------------------------------------------------------------ events
    def dispatch(self, name: str, payload: object) -> None:
        assert isinstance(payload, IncidentEvent)
        do = payload.do
        if do is Do.TRAFFIC:
            assert payload.traffic is not None
            self._traffic(payload.traffic)
            return
        if do is Do.REGISTER:
            self._start_client(name, payload.boot)
            return
        client = payload.client
        if client is None or client is not self.sim.edge(name).client:
            return                                   # the client died with its node
        if do is Do.FLUSH:
            client.flush_pending = False
            self._flush(name, client)
        elif do is Do.TIMER:
            if payload.gen == client.timer_gen:
                client.armed_at = None
                client.ua.on_timer(self.sim.now)
                self._flush(name, client)
        elif do is Do.MEDIA:
            assert payload.call is not None
            self._media(name, client, payload.call)

    def _start_client(self, name: str, boot: int) -> None:
        sim = self.sim
        if boot != sim.boots(name) or not sim.running(name):
            return
        edge = sim.edge(name)
        rng = random.Random(f"meshcomm-sim-client:{self.config.seed}:{name}:{boot}")
        client = SimClient(name, self.aor(name), rng, self.stats, lambda: None,
                           self.client_media)
        client.wake = lambda: self._wake(name, client)
        edge.client = client
        client.register()
        self._flush(name, client)

    def _wake(self, name: str, client: SimClient) -> None:
        if not client.flush_pending:
            client.flush_pending = True
            self.sim.push_incident(self.sim.now, name, IncidentEvent(Do.FLUSH, client))

    def _flush(self, name: str, client: SimClient) -> None:
        sim = self.sim
        pump, now = sim.pump(name), sim.now
        if pump is None:
            return
        for data in client.take_outgoing(now):
            pump.sip(data, CLIENT_ADDR, now)
        for call in client.media_starts:
            sim.push_incident(now + FRAME_INTERVAL_S, name,
                              IncidentEvent(Do.MEDIA, client, call=call))
        client.media_starts.clear()
        deadline = client.ua.next_timer()
        if deadline != client.armed_at:
            client.timer_gen += 1
            client.armed_at = deadline
            if deadline is not None:
                sim.push_incident(deadline, name,
                                  IncidentEvent(Do.TIMER, client, gen=client.timer_gen))

    def _media(self, name: str, client: SimClient, call: ClientCall) -> None:
        sim = self.sim
        record = call.record
        if (call.direction is Direction.FORWARD and record.established_at is not None
                and sim.now >= record.established_at + record.duration_s):
            client.hang_up(call)
            self._flush(name, client)
            return
        if not call.live:
            return
        frame = client.next_frame(call, sim.now)
        if frame is not None:
            call_id = self._relay_call(name, call)
            pump = sim.pump(name)
            if call_id is None or pump is None:
                self.sim.counters[SimCounter.MEDIA_WITHOUT_SESSION] += 1
            else:
                pump.client_media(call_id, 0, Channel.RTP, frame, sim.now)
        sim.push_incident(sim.now + FRAME_INTERVAL_S, name,
                          IncidentEvent(Do.MEDIA, client, call=call))

    def _relay_call(self, name: str, call: ClientCall) -> str | None:
        """The gateway's call whose port the client sends to (what a UDP socket bound to
        that port would tell the runtime)."""
        if call.relay_call_id is not None:
            return call.relay_call_id
        core = self.sim.node_core(name)
        relay = core.relay if core is not None else None
        if relay is None or call.gateway_port is None:
            return None
        for call_id, session in relay.sessions.items():
            leg = session.legs.get(0)
            if leg is not None and leg.ports.rtp_port == call.gateway_port:
                call.relay_call_id = call_id
                return call_id
        return None

    def _traffic(self, event: TrafficEvent) -> None:
        sim = self.sim
        client = sim.edge(event.src).client
        if client is None or not client.registered or not sim.running(event.src):
            self.stats.skipped += 1
            return
        now = sim.now
        if event.kind is TrafficKind.MESSAGE:
            message = MessageRecord(len(self.stats.messages), event.src, event.dst, now)
            self.stats.messages[message.key] = message
            client.send_message(message, self.aor(event.dst))
        else:
            call = CallRecord(len(self.stats.calls), event.src, event.dst, now,
                              event.duration_s)
            self.stats.calls[call.key] = call
            client.call(call, self.aor(event.dst))
        self._flush(event.src, client)
