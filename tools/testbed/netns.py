"""Network-namespace test beds (root): chain, star, grid and shared-medium topologies.

Each node is a network namespace. In ``chain``, ``star`` and ``grid`` every edge (i, j) is a
veth pair, so a node hears only its neighbours; in node i the interface leading to node j is
called ``to{j}`` (:meth:`Testbed.iface`). ``shared(n)`` instead puts one interface
``radio0`` per node on a common bridge (everyone hears everyone). Interfaces come up with
IPv6 link-local addresses and DAD disabled, so addresses are usable at once; random loss can
be added per interface with nftables (``numgen random mod 100 < N drop`` on the ingress hook,
so every receiver loses independently). Delay is not available in this kernel (no netem):
use the radio impairment option for that.

Names are unique per run: ``mctb<pid>x<random>-<node>``, so parallel runs do not collide and
:func:`cleanup` can tell leftovers of dead runs. A :class:`Testbed` is a context manager and
ALWAYS tears everything down (processes it started, then namespaces), also on exceptions;
an atexit hook and a SIGTERM handler (installed only where SIGTERM still has its default
action) are the safety net; ``python -m tools.testbed cleanup`` removes leftovers.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ipaddress
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType

from tools.testbed import nodes as _nodes
from tools.testbed.baresip import (
    CTRL_PORT,
    DEFAULT_DOMAIN,
    BaresipClient,
    write_config,
)
from tools.testbed.baresip import DEFAULT_SIP_PORT as BARESIP_SIP_PORT

logger = logging.getLogger(__name__)

#: Every namespace this module creates starts with this.
NAME_ROOT = "mctb"
NETNS_DIR = Path("/run/netns")
_NAME_RE = re.compile(rf"^{NAME_ROOT}(\d+)x([0-9a-f]+)-")
CLONE_NEWNET = 0x40000000
#: How long to wait for link-local addresses after bringing interfaces up.
READY_TIMEOUT_S = 10.0
READY_POLL_S = 0.02
#: Grace period between SIGTERM and SIGKILL for processes at teardown.
TERMINATE_GRACE_S = 3.0
COMMAND_TIMEOUT_S = 30.0
IFA_F_TENTATIVE = 0x40
IPV6_SCOPE_LINK = 0x20
SHARED_IFACE = "radio0"
_ATTACH_LABEL_RE = re.compile(r"[a-z]{1,6}")

Edge = tuple[int, int]


class TestbedError(RuntimeError):
    """A namespace operation failed (the message includes the command and its stderr)."""


# -- low-level helpers --------------------------------------------------------------------


def run_ip(*args: str, input_text: str | None = None, check: bool = True) -> str:
    """Run ``ip ARGS``; return stdout; TestbedError with stderr on failure."""
    return _run(["ip", *args], input_text=input_text, check=check)


def _run(argv: Sequence[str], *, input_text: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        list(argv), input=input_text, capture_output=True, text=True,
        timeout=COMMAND_TIMEOUT_S, check=False,
    )
    if check and proc.returncode != 0:
        raise TestbedError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the body with the CALLING THREAD inside namespace ``name`` (setns), then return.

    Sockets created inside stay in that namespace after the block ends, so a driver can be
    opened here and used from the event loop afterwards. Do not await other tasks that
    create sockets while inside. /sys is not remounted: use /proc/thread-self/net and
    ioctls, not /sys/class/net.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(NETNS_DIR / name, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def list_namespaces() -> list[str]:
    """Names of all named network namespaces."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def _write_sysctl(key: str, value: str) -> None:
    Path("/proc/sys", *key.split(".")).write_text(value)


def _link_locals(iface: str) -> list[tuple[str, int]]:
    """(address hex, flags) of link-local addresses of ``iface`` in the current netns."""
    found = []
    for line in Path("/proc/thread-self/net/if_inet6").read_text().splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[5] == iface and int(fields[3], 16) == IPV6_SCOPE_LINK:
            found.append((fields[0], int(fields[4], 16)))
    return found


def _format_v6(hex32: str) -> str:
    return str(ipaddress.IPv6Address(bytes.fromhex(hex32)))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_namespace_processes(name: str) -> None:
    """Kill processes left inside namespace ``name`` (ones our test bed started)."""
    out = run_ip("netns", "pids", name, check=False)
    for pid_text in out.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_text), signal.SIGKILL)


def delete_namespace(name: str) -> None:
    _kill_namespace_processes(name)
    run_ip("netns", "del", name, check=False)


def cleanup(prefix: str | None = None) -> list[str]:
    """Delete namespaces starting with ``prefix``; without it, leftovers of dead runs.

    Returns the names removed.
    """
    removed = []
    for name in list_namespaces():
        if prefix is not None:
            if not name.startswith(prefix):
                continue
        else:
            match = _NAME_RE.match(name)
            if match is None or _pid_alive(int(match.group(1))):
                continue
        delete_namespace(name)
        removed.append(name)
    return removed


def new_prefix() -> str:
    """A fresh name prefix ``mctb<pid>x<hex>`` (namespaces are ``<prefix>-<node>``)."""
    return f"{NAME_ROOT}{os.getpid()}x{secrets.token_hex(3)}"


# -- safety net -----------------------------------------------------------------------------

_LIVE: dict[str, Testbed] = {}
_LIVE_LOCK = threading.Lock()
_SAFETY_NET_INSTALLED = False


def _close_all_live() -> None:
    with _LIVE_LOCK:
        beds = list(_LIVE.values())
    for bed in beds:
        bed.close()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into SystemExit so `with` blocks unwind and tear down.
    raise SystemExit(128 + signum)


def _install_safety_net() -> None:
    global _SAFETY_NET_INSTALLED
    if _SAFETY_NET_INSTALLED:
        return
    _SAFETY_NET_INSTALLED = True
    atexit.register(_close_all_live)
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
        signal.signal(signal.SIGTERM, _on_sigterm)


# -- the test bed ---------------------------------------------------------------------------


class Testbed:
    """A set of namespaces (nodes) and links. Build with chain/star/grid/shared."""

    __test__ = False  # not a pytest test class

    def __init__(self, n_nodes: int, *, prefix: str | None = None) -> None:
        if n_nodes < 1:
            raise ValueError("a test bed needs at least one node")
        self.prefix = prefix or new_prefix()
        self.n_nodes = n_nodes
        self.edges: list[Edge] = []
        self.bridge_ns: str | None = None
        self._ifaces: dict[int, list[str]] = {i: [] for i in range(n_nodes)}
        self._procs: list[subprocess.Popen[bytes]] = []
        self._created: list[str] = []
        self._closed = False
        self.mesh_nodes: dict[int, _nodes.MeshProcess] = {}
        self.clients: dict[str, BaresipClient] = {}
        self._workdir: Path | None = None
        self._remove_workdir = False
        _install_safety_net()
        with _LIVE_LOCK:
            _LIVE[self.prefix] = self

    # names

    def ns(self, node: int) -> str:
        """Namespace name of ``node``."""
        if not 0 <= node < self.n_nodes:
            raise IndexError(f"no node {node} in a test bed of {self.n_nodes}")
        return f"{self.prefix}-{node}"

    @property
    def namespaces(self) -> list[str]:
        return [self.ns(i) for i in range(self.n_nodes)]

    def iface(self, node: int, peer: int) -> str:
        """Name, inside ``node``, of the veth leading to ``peer``."""
        name = f"to{peer}"
        if name not in self._ifaces[node]:
            raise KeyError(f"node {node} has no link to node {peer}")
        return name

    def interfaces(self, node: int) -> list[str]:
        return list(self._ifaces[node])

    def neighbours(self, node: int) -> list[int]:
        return sorted({b for a, b in self.edges if a == node}
                      | {a for a, b in self.edges if b == node})

    # building

    def _add_namespaces(self) -> None:
        names = self.namespaces + ([self.bridge_ns] if self.bridge_ns else [])
        for name in names:
            run_ip("netns", "add", name)
            self._created.append(name)
            with in_netns(name):
                for key in ("net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"):
                    _write_sysctl(key, "0")
                _write_sysctl("net.ipv6.conf.default.router_solicitations", "0")
            run_ip("-n", name, "link", "set", "lo", "up")

    def _add_link(self, a: int, b: int) -> None:
        run_ip("-n", self.ns(a), "link", "add", f"to{b}", "type", "veth",
               "peer", "name", f"to{a}", "netns", self.ns(b))
        self.edges.append((a, b))
        self._ifaces[a].append(f"to{b}")
        self._ifaces[b].append(f"to{a}")

    def _add_shared_medium(self) -> None:
        assert self.bridge_ns is not None
        # A radio channel has no multicast snooping and no STP: frames reach every port.
        run_ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge",
               "mcast_snooping", "0", "stp_state", "0")
        run_ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for i in range(self.n_nodes):
            port = f"p{i}"
            run_ip("-n", self.ns(i), "link", "add", SHARED_IFACE, "type", "veth",
                   "peer", "name", port, "netns", self.bridge_ns)
            run_ip("-n", self.bridge_ns, "link", "set", port, "master", "br0", "up")
            self._ifaces[i].append(SHARED_IFACE)

    def _bring_up(self) -> None:
        for i in range(self.n_nodes):
            for name in self._ifaces[i]:
                with in_netns(self.ns(i)):
                    _write_sysctl(f"net.ipv6.conf.{name}.accept_dad", "0")
                run_ip("-n", self.ns(i), "link", "set", name, "up")
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = [(i, name) for i in range(self.n_nodes) for name in self._ifaces[i]]
        while pending:
            still = []
            for i, name in pending:
                with in_netns(self.ns(i)):
                    addrs = _link_locals(name)
                if not any(not flags & IFA_F_TENTATIVE for _, flags in addrs):
                    still.append((i, name))
            pending = still
            if pending and time.monotonic() > deadline:
                raise TestbedError(f"no link-local address after {READY_TIMEOUT_S} s: {pending}")
            if pending:
                time.sleep(READY_POLL_S)

    def build(self, edges: Sequence[Edge] = (), *, shared: bool = False) -> Testbed:
        """Create namespaces, links (or the shared bridge), bring all up. Tears down on error."""
        try:
            if shared:
                self.bridge_ns = f"{self.prefix}-br"
            self._add_namespaces()
            for a, b in edges:
                self._add_link(a, b)
            if shared:
                self._add_shared_medium()
            self._bring_up()
        except BaseException:
            self.close()
            raise
        return self

    # using

    def link_local(self, node: int, iface: str) -> str:
        """The (non-tentative) IPv6 link-local address of ``iface`` in ``node``."""
        with in_netns(self.ns(node)):
            addrs = _link_locals(iface)
        for hex32, flags in addrs:
            if not flags & IFA_F_TENTATIVE:
                return _format_v6(hex32)
        raise TestbedError(f"node {node} {iface}: no link-local address")

    def set_loss(self, node: int, iface: str, percent: int) -> None:
        """Drop ``percent``% of frames arriving on ``iface`` of ``node`` (0 removes it)."""
        if not 0 <= percent <= 100:
            raise ValueError("loss percent must be in 0..100")
        table = "mctb_loss_" + re.sub(r"[^A-Za-z0-9_]", "_", iface)
        script = f"add table netdev {table}\ndelete table netdev {table}\n"
        if percent:
            # numgen values are 0..99, so 100% is a plain drop.
            rule = "drop" if percent == 100 else f"numgen random mod 100 < {percent} drop"
            script += (
                f"table netdev {table} {{\n  chain ingress {{\n"
                f'    type filter hook ingress device "{iface}" priority 0; policy accept;\n'
                f"    {rule}\n  }}\n}}\n"
            )
        self.run(node, ["nft", "-f", "-"], input_text=script)

    def set_loss_everywhere(self, percent: int) -> None:
        for i in range(self.n_nodes):
            for name in self._ifaces[i]:
                self.set_loss(i, name, percent)

    def run(self, node: int, argv: Sequence[str], *, input_text: str | None = None,
            check: bool = True) -> str:
        """Run ``argv`` inside ``node`` to completion; return stdout."""
        return _run(["ip", "netns", "exec", self.ns(node), *argv],
                    input_text=input_text, check=check)

    def popen(self, node: int, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``node`` in its own session; stopped at teardown."""
        return self.popen_in(self.ns(node), argv, **kwargs)

    def popen_in(self, namespace: str, argv: Sequence[str],
                 **kwargs: object) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside this bed's namespace ``namespace`` (a node's or one made by
        :meth:`attach`) in its own session; stopped at teardown."""
        if namespace not in self._created:
            raise TestbedError(f"{namespace} is not a namespace of this test bed")
        kwargs.setdefault("start_new_session", True)
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", namespace, *argv], **kwargs
        )
        self._procs.append(proc)
        return proc

    def add_namespace(self, label: str) -> str:
        """Add an empty namespace ``<prefix>-<label>`` (1-6 letters), loopback up, IPv6 DAD
        off, torn down with the bed: a WAN, a NAT box, a device beside a node. Returns it."""
        if not _ATTACH_LABEL_RE.fullmatch(label):
            raise ValueError(f"namespace label {label!r}: 1-6 letters (digits are node indexes)")
        name = f"{self.prefix}-{label}"
        if name in self._created:
            raise TestbedError(f"{name} exists already")
        run_ip("netns", "add", name)
        self._created.append(name)
        with in_netns(name):
            for key in ("net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"):
                _write_sysctl(key, "0")
        run_ip("-n", name, "link", "set", "lo", "up")
        return name

    def run_in(self, namespace: str, argv: Sequence[str], *, input_text: str | None = None,
               check: bool = True) -> str:
        """Run ``argv`` to completion inside this bed's namespace ``namespace``; stdout."""
        if namespace not in self._created:
            raise TestbedError(f"{namespace} is not a namespace of this test bed")
        return _run(["ip", "netns", "exec", namespace, *argv], input_text=input_text,
                    check=check)

    def attach(self, node: int, label: str = "x") -> str:
        """Add a namespace ``<prefix>-<label>`` linked to ``node`` alone: a device beside it
        (a hostile injector in the hostile tests). ``node`` gets interface ``to<label>``, the
        new namespace ``to<node>``. Call it before :meth:`start_node` of ``node``, whose
        radios are the interfaces it has then. Returns the namespace; torn down with the bed.
        """
        if not _ATTACH_LABEL_RE.fullmatch(label):
            raise ValueError(f"attach label {label!r}: 1-6 letters (digits are node indexes)")
        name, here, there = self.add_namespace(label), f"to{label}", f"to{node}"
        run_ip("-n", self.ns(node), "link", "add", here, "type", "veth",
               "peer", "name", there, "netns", name)
        self._ifaces[node].append(here)
        for namespace, iface in ((self.ns(node), here), (name, there)):
            with in_netns(namespace):
                _write_sysctl(f"net.ipv6.conf.{iface}.accept_dad", "0")
            run_ip("-n", namespace, "link", "set", iface, "up")
        self._wait_ready()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            with in_netns(name):
                if any(not flags & IFA_F_TENTATIVE for _, flags in _link_locals(there)):
                    return name
            if time.monotonic() > deadline:
                raise TestbedError(f"{name} {there}: no link-local address")
            time.sleep(READY_POLL_S)

    def entered(self, node: int) -> contextlib.AbstractContextManager[None]:
        """Context manager: the calling thread inside ``node`` (see :func:`in_netns`)."""
        return in_netns(self.ns(node))

    def loopback_udp(self, node: int) -> socket.socket:
        """A UDP socket bound to 127.0.0.1 (a free port) inside ``node``'s namespace: a
        SIP client's socket beside that node's gateway."""
        with self.entered(node):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
        return sock

    # meshcomm nodes and SIP clients

    @property
    def workdir(self) -> Path:
        """Where data dirs, logs and client configs go: a temp dir removed at teardown,
        unless :meth:`use_workdir` named one (kept, e.g. pytest's tmp_path)."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
            self._remove_workdir = True
        return self._workdir

    def use_workdir(self, path: Path) -> None:
        """Put data dirs and logs under ``path`` (kept after teardown)."""
        if self._workdir is not None:
            raise TestbedError("the work dir is already in use")
        path.mkdir(parents=True, exist_ok=True)
        self._workdir = path

    def radio_specs(self, node: int, kind: str = "udp") -> list[str]:
        """``KIND:IFACE`` for every interface of ``node``."""
        return [f"{kind}:{name}" for name in self._ifaces[node]]

    def start_node(self, node: int, *, role: str = "handset", name: str | None = None,
                   sip_port: int = _nodes.DEFAULT_SIP_PORT, impair: str | None = None,
                   extra_args: Sequence[str] = (), radio_kind: str = "udp",
                   data_dir: Path | None = None, wait: bool = True) -> _nodes.MeshProcess:
        """Start ``meshcomm ROLE`` in ``node`` on all its interfaces; wait for ``ctl status``.

        The data dir is a fresh dir under :attr:`workdir` (zero-config start) unless given.
        ``impair`` is the radio impairment (``"delay=15ms,loss=0.1"``). Stopped at teardown.
        """
        if node in self.mesh_nodes and self.mesh_nodes[node].running():
            raise TestbedError(f"node {node} already runs a meshcomm process")
        self.ns(node)
        data = data_dir or self.workdir / f"node{node}"
        argv = _nodes.node_argv(role, data, self.radio_specs(node, radio_kind), name=name,
                                sip_port=sip_port, impair=impair, extra_args=extra_args)
        proc = _nodes.MeshProcess(node, role, name, data, self.workdir / f"node{node}.log",
                                  sip_port, argv)
        self.mesh_nodes[node] = proc
        _nodes.launch(proc, self.popen)
        if wait:
            _nodes.wait_ready(proc)
        return proc

    def node(self, node: int) -> _nodes.MeshProcess:
        """The meshcomm process started in ``node``."""
        try:
            return self.mesh_nodes[node]
        except KeyError:
            raise TestbedError(f"no meshcomm node started in node {node}") from None

    def stop_node(self, node: int, sig: int = signal.SIGTERM) -> int | None:
        """Signal the node's process (SIGTERM: clean de-register; SIGKILL: crash); its exit
        status."""
        return _nodes.stop(self.node(node), sig)

    def restart_node(self, node: int, sig: int = signal.SIGTERM,
                     wait: bool = True) -> _nodes.MeshProcess:
        """Stop the node with ``sig`` and start it again with the same argv and data dir."""
        proc = self.node(node)
        _nodes.stop(proc, sig)
        _nodes.launch(proc, self.popen)
        if wait:
            _nodes.wait_ready(proc)
        return proc

    def start_baresip(self, node: int, user: str, *, audio_in: Path | None = None,
                      contacts: Sequence[str] = (), domain: str = DEFAULT_DOMAIN,
                      sip_port: int = BARESIP_SIP_PORT, answer_auto: bool = True,
                      node_sip_port: int | None = None) -> BaresipClient:
        """Start baresip in ``node`` registering ``sip:USER@DOMAIN`` to the node's gateway.

        ``audio_in`` is the WAV it sends in calls (8 kHz mono 16-bit; the call ends when it
        runs out); calls are recorded in the client's config dir (see
        :mod:`tools.testbed.baresip`). ``contacts`` are the AoRs it may MESSAGE.
        """
        if node_sip_port is None:
            mesh = self.mesh_nodes.get(node)
            node_sip_port = mesh.sip_port if mesh is not None else _nodes.DEFAULT_SIP_PORT
        conf = self.workdir / f"baresip-{user}"
        write_config(conf, user, node_sip_port=node_sip_port, sip_port=sip_port,
                     audio_in=audio_in, domain=domain, contacts=tuple(contacts),
                     answer_auto=answer_auto)
        client = BaresipClient(node, user, conf, self.workdir / f"baresip-{user}.log",
                               sip_port, domain)
        with client.log_path.open("ab") as log:
            client.proc = self.popen(node, ["baresip", "-s", "-f", str(conf)],
                                     stdin=subprocess.PIPE, stdout=log,
                                     stderr=subprocess.STDOUT)
        self.clients[user] = client

        def opener() -> socket.socket:
            with self.entered(node):
                return socket.create_connection(("127.0.0.1", CTRL_PORT), timeout=1.0)

        client.connect(opener)
        return client

    def describe(self) -> str:
        """Log tails of every node and client (for assertion messages)."""
        parts = [proc.describe() for proc in self.mesh_nodes.values()]
        parts += [f"--- baresip {c.user} (node {c.index})\n{c.log_tail()}"
                  for c in self.clients.values()]
        return "\n".join(parts)

    # teardown

    def _stop_processes(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + TERMINATE_GRACE_S
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._procs.clear()

    def close(self) -> None:
        """Stop processes, delete every namespace of this bed. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            for client in self.clients.values():
                client.close()
            self._stop_processes()
        finally:
            if self._workdir is not None and self._remove_workdir:
                shutil.rmtree(self._workdir, ignore_errors=True)
            for name in self._created:
                delete_namespace(name)
            leftovers = cleanup(self.prefix + "-")
            if leftovers:
                logger.warning("test bed %s: removed stray namespaces %s", self.prefix, leftovers)
            with _LIVE_LOCK:
                _LIVE.pop(self.prefix, None)

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# -- topologies -----------------------------------------------------------------------------


def chain(n: int, *, prefix: str | None = None) -> Testbed:
    """n nodes in a line; node i linked to node i+1 (ends are n-1 hops apart)."""
    return Testbed(n, prefix=prefix).build([(i, i + 1) for i in range(n - 1)])


def star(n: int, *, prefix: str | None = None) -> Testbed:
    """Node 0 is the hub, linked to nodes 1..n-1; the leaves hear only the hub."""
    return Testbed(n, prefix=prefix).build([(0, i) for i in range(1, n)])


def grid(width: int, height: int, *, prefix: str | None = None) -> Testbed:
    """width x height nodes; node y*width+x linked to its right and lower neighbours."""
    edges = []
    for y in range(height):
        for x in range(width):
            node = y * width + x
            if x + 1 < width:
                edges.append((node, node + 1))
            if y + 1 < height:
                edges.append((node, node + width))
    return Testbed(width * height, prefix=prefix).build(edges)


def shared(n: int, *, prefix: str | None = None) -> Testbed:
    """n nodes each with interface ``radio0`` on one bridge: everyone hears everyone."""
    return Testbed(n, prefix=prefix).build(shared=True)
