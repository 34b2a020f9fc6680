"""Control command ``handover`` (issue 12.3): a role address passes to another key.

* ``{"action": "give", "aor": AOR, "to": KEYHEX}`` on the current holder's node: the node
  signs "AOR is held by key KEYHEX from now" with its key and replies
  ``{"handover": HEX}`` (the new holder's public key is in its ``ctl status``).
* ``{"action": "accept", "handover": HEX}`` on the new holder's node: the node keeps the
  hand-over (in ``handovers.bin`` in its data dir, loaded again at start) and carries it
  in its bindings of the address from then on (re-announced at once when a client has it
  registered, else with the client's next REGISTER, which the gateway now answers 200).

Who may sign is checked by every node when the binding arrives (:mod:`meshcomm.security.roles`):
the key of a credentialed claim on the address, or an agency key (``meshcomm`` offline
tools sign with an agency key the same record).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from meshcomm.diskio import write_atomic
from meshcomm.errors import DecodeError
from meshcomm.node.mesh import MAX_HANDOVERS, MeshNode
from meshcomm.runtime.control import ControlRequest
from meshcomm.runtime.driver import NodeDriver
from meshcomm.security.roles import MAX_HANDOVER_BYTES, decode_handover_untrusted, sign_handover
from meshcomm.wire import codec, limits

KEY_HEX_CHARS: Final = 64
#: Accepted hand-overs, kept across restarts (a msgpack list of hand-over records).
HANDOVERS_FILE: Final = "handovers.bin"
HANDOVERS_FILE_MODE: Final = 0o600
MAX_HANDOVERS_FILE_BYTES: Final = MAX_HANDOVERS * (MAX_HANDOVER_BYTES + 8) + 16


def handover(driver: NodeDriver, request: ControlRequest, data_dir: Path) -> object:
    """``ctl handover`` (see the module docstring)."""
    action = request.args.get("action")
    if action == "give":
        return _give(driver, request)
    if action == "accept":
        result = _accept(driver, request)
        save_handovers(data_dir, driver.node)
        return result
    raise DecodeError('"action" must be give or accept')


def save_handovers(data_dir: Path, node: MeshNode) -> None:
    """Write the node's accepted hand-overs (atomically; OSError propagates)."""
    data = codec.pack([h.to_bytes() for h in node.handovers.values()])
    write_atomic(data_dir / HANDOVERS_FILE, data, mode=HANDOVERS_FILE_MODE, replace=True)


def load_handovers(data_dir: Path, node: MeshNode, now: float) -> int:
    """Give ``node`` the hand-overs saved in ``data_dir``; how many. A missing file is
    none; a damaged one (or a record naming another key) is skipped, never fatal."""
    try:
        data = (data_dir / HANDOVERS_FILE).read_bytes()
    except FileNotFoundError:
        return 0
    try:
        items = codec.read_list(codec.unpack_untrusted(data, max_bytes=MAX_HANDOVERS_FILE_BYTES),
                                "handovers", MAX_HANDOVERS)
        records = [decode_handover_untrusted(
            codec.read_bytes(item, "handover", max_len=MAX_HANDOVER_BYTES)) for item in items]
    except DecodeError:
        return 0
    mine = [r for r in records if r.new_key == node.identity.public_key]
    for record in mine:
        node.accept_handover(record, now)
    return len(mine)


def _give(driver: NodeDriver, request: ControlRequest) -> object:
    aor, to = request.args.get("aor"), request.args.get("to")
    if not isinstance(aor, str) or not 0 < len(aor) <= limits.MAX_AOR_LEN or "@" not in aor:
        raise DecodeError('"aor" must be a sip: address')
    if not aor.startswith(("sip:", "sips:")):
        aor = f"sip:{aor}"
    if not isinstance(to, str) or len(to) != KEY_HEX_CHARS:
        raise DecodeError(f'"to" must be a public key of {KEY_HEX_CHARS} hex digits')
    try:
        key = bytes.fromhex(to)
    except ValueError:
        raise DecodeError('"to" must be hex') from None
    node = driver.node
    signed = sign_handover(node.identity, aor=aor, new_key=key,
                           from_time=int(node.overlay.wall_time(driver.now())))
    return {"handover": signed.to_bytes().hex(), "aor": signed.aor, "to": to.lower(),
            "from_time": signed.from_time}


def _accept(driver: NodeDriver, request: ControlRequest) -> object:
    text = request.args.get("handover")
    if not isinstance(text, str) or len(text) > 2 * MAX_HANDOVER_BYTES:
        raise DecodeError('"handover" must be the hex a holder\'s "give" printed')
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise DecodeError('"handover" must be hex') from None
    record = decode_handover_untrusted(data)
    node = driver.node
    if record.new_key != node.identity.public_key:
        raise DecodeError("the hand-over names another node's key")
    now = driver.now()
    driver.pump_.command(now, lambda: node.accept_handover(record, now))
    return {"accepted": record.aor, "from_time": record.from_time,
            "signer": record.signer_key.hex()}
