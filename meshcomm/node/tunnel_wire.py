"""Wire forms of cross-site traffic (issue 10): what crosses from one island to another
through uplinked relays, and the resolution of a remote AoR through an island's relay.

Every body is a msgpack array carried in a mesh unicast of its :class:`AppKind`:

* ``RESOLVE``   node -> an uplinked relay of its island: ``[request id, aor]``
* ``RESOLVED``  relay -> node: ``[request id, status, [entry, ...]]``, each entry
  ``[node id, [relay ids], ttl_s, binding signed bytes, binding signature]``: the node's
  owner-signed BINDING envelope exactly as the DHT holds it (the asker checks it as gossip
  checks a binding, :mod:`meshcomm.node.tunnel_answer`); both empty only in the answering
  relay's entry naming itself (its gateway takes the request to an upstream proxy)
* ``TUNNEL_OUT`` node -> an uplinked relay of its island: ``[[far relay ids], item]``
* ``TUNNEL_WAN`` relay -> relay over the uplink mesh: ``[item]``
* ``TUNNEL_IN`` relay -> the destination node in its island: ``[far relay id, item]``

An *item* is what the origin sends to the destination, end to end:

* signed: ``[1, origin key, dst, kind, msg_no, body, signature]``: the origin signs
  ``[incident, dst, kind, msg_no, body]`` (with :data:`ITEM_DOMAIN`), so the destination
  knows who sent it whichever relays carried it, and relays cannot alter it;
* media: ``[2, origin id, dst, stream, payload]``: like radio MEDIA frames, unsigned (the
  media layer authenticates every payload end to end with the call's key).

Decoders are ``*_untrusted``: they range-check every field and raise only DecodeError.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from meshcomm.errors import DecodeError
from meshcomm.location.binding import Binding, binding_from_envelope_untrusted
from meshcomm.overlay.forwarding import MAX_MESSAGE_BYTES
from meshcomm.overlay.media import MAX_MEDIA_PAYLOAD_BYTES, STREAM_ID_LEN
from meshcomm.security.identity import Identity, node_id_of
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import NODE_ID_LEN, PUBLIC_KEY_LEN, SIGNATURE_LEN, NodeId
from meshcomm.wire import codec, limits
from meshcomm.wire.envelope import decode_signed_untrusted

ITEM_DOMAIN = b"meshcomm-tunnel-item-v1\x00"
#: Room for the tunnel's own fields around an item's body inside one mesh message.
TUNNEL_OVERHEAD_BYTES = 512
#: Largest body an item carries (a SIP message a little under the mesh's largest).
MAX_ITEM_BODY_BYTES = MAX_MESSAGE_BYTES - TUNNEL_OVERHEAD_BYTES
#: Far relays named in one TUNNEL_OUT (the sending relay picks one it reaches).
MAX_FAR_RELAYS = 8
#: Bindings in one RESOLVED answer, relays per binding, and the largest TTL given.
MAX_ANSWER_BINDINGS = 8
MAX_ANSWER_TTL_S = 3600
#: An entry's binding: one BINDING envelope's signed bytes (it fits a datagram). Eight
#: of the largest entries still fit one unicast (:data:`MAX_RESOLVED_BYTES`).
MAX_ANSWER_BINDING_BYTES = limits.MAX_DATAGRAM_BYTES
MAX_RESOLVED_BYTES = MAX_MESSAGE_BYTES
MAX_REQUEST_ID = (1 << 32) - 1
MAX_ITEM_KIND = 255
#: Length of an item's id (as an envelope digest's).
ITEM_ID_LEN = 16


class ItemType(IntEnum):
    SIGNED = 1
    MEDIA = 2


class ResolveStatus(IntEnum):
    FOUND = 0
    NOT_FOUND = 1
    UPLINK_DOWN = 2      # no uplink, and nothing known of the AoR
    BUSY = 3
    UNREACHABLE = 4      # known, but no relay reaches it now (its island's uplink is down)


@dataclass(frozen=True, slots=True)
class SignedItem:
    origin_key: bytes
    dst: NodeId
    kind: int
    msg_no: int
    body: bytes
    signature: bytes

    @property
    def origin(self) -> NodeId:
        return node_id_of(self.origin_key)

    @property
    def item_id(self) -> bytes:
        """The item's id (16 bytes), the same at its origin and its destination: the
        journals name the message it carries by it (``env``, as a mesh envelope's digest)."""
        return hashlib.sha256(self.signature).digest()[:ITEM_ID_LEN]

    def verify(self, incident: str, verifier: SignatureVerifier) -> bool:
        return verifier.verify(self.origin_key, _item_signed(incident, self.dst, self.kind,
                                                             self.msg_no, self.body),
                               self.signature)


@dataclass(frozen=True, slots=True)
class MediaItem:
    origin: NodeId
    dst: NodeId
    stream: bytes
    payload: bytes


Item = SignedItem | MediaItem


@dataclass(frozen=True, slots=True)
class AnswerEntry:
    node: NodeId
    relays: tuple[NodeId, ...]
    ttl_s: int
    #: The node's owner-signed binding of the AoR asked for, as the DHT holds it (not yet
    #: verified when decoded); None only in a relay's entry naming itself.
    binding: Binding | None = None

    @property
    def key(self) -> bytes:
        """The key of the entry's binding (b"": none; the asker seals SIP to it once the
        binding is verified, meshcomm.node.e2e_sip)."""
        return self.binding.key if self.binding is not None else b""


def _item_signed(incident: str, dst: bytes, kind: int, msg_no: int, body: bytes) -> bytes:
    return ITEM_DOMAIN + codec.pack([incident, dst, kind, msg_no, body])


def seal_item(identity: Identity, incident: str, dst: bytes, kind: int, msg_no: int,
              body: bytes) -> SignedItem:
    """A signed item from this node (``body`` at most :data:`MAX_ITEM_BODY_BYTES`)."""
    if len(body) > MAX_ITEM_BODY_BYTES:
        raise ValueError(f"tunnel item body over {MAX_ITEM_BODY_BYTES} bytes")
    signature = identity.sign(_item_signed(incident, dst, kind, msg_no, body))
    return SignedItem(identity.public_key, NodeId(dst), kind, msg_no, body, signature)


def item_value(item: Item) -> list[Any]:
    if isinstance(item, SignedItem):
        return [ItemType.SIGNED, item.origin_key, item.dst, item.kind, item.msg_no,
                item.body, item.signature]
    return [ItemType.MEDIA, item.origin, item.dst, item.stream, item.payload]


def _node(value: object, name: str) -> NodeId:
    return NodeId(codec.read_bytes(value, name, exact=NODE_ID_LEN))


def read_item(value: object) -> Item:
    """An item from its decoded msgpack value; DecodeError when malformed."""
    raw = codec.read_list(value, "item", 7)
    if not raw:
        raise DecodeError("item: empty", reason="malformed")
    kind = codec.read_int(raw[0], "item.type", 1, 2)
    if kind == ItemType.SIGNED:
        fields = codec.read_tuple(raw, "item", 7)
        return SignedItem(
            codec.read_bytes(fields[1], "item.origin_key", exact=PUBLIC_KEY_LEN),
            _node(fields[2], "item.dst"),
            codec.read_int(fields[3], "item.kind", 0, MAX_ITEM_KIND),
            codec.read_int(fields[4], "item.msg_no", 0, limits.MAX_SEQ),
            codec.read_bytes(fields[5], "item.body", max_len=MAX_ITEM_BODY_BYTES),
            codec.read_bytes(fields[6], "item.signature", exact=SIGNATURE_LEN))
    fields = codec.read_tuple(raw, "item", 5)
    return MediaItem(_node(fields[1], "item.origin"), _node(fields[2], "item.dst"),
                     codec.read_bytes(fields[3], "item.stream", exact=STREAM_ID_LEN),
                     codec.read_bytes(fields[4], "item.payload",
                                      max_len=MAX_MEDIA_PAYLOAD_BYTES))


def _unpack(body: bytes, name: str, length: int) -> list[Any]:
    value = codec.unpack_untrusted(body, max_bytes=MAX_MESSAGE_BYTES, check_depth=False)
    return list(codec.read_tuple(value, name, length))


def encode_tunnel_out(far_relays: tuple[bytes, ...], item: Item) -> bytes:
    return codec.pack([list(far_relays[:MAX_FAR_RELAYS]), item_value(item)])


def decode_tunnel_out_untrusted(body: bytes) -> tuple[tuple[NodeId, ...], Item]:
    fields = _unpack(body, "tunnel_out", 2)
    relays = codec.read_list(fields[0], "tunnel_out.relays", MAX_FAR_RELAYS)
    if not relays:
        raise DecodeError("tunnel_out: no far relay", reason="malformed")
    return tuple(_node(r, "tunnel_out.relay") for r in relays), read_item(fields[1])


def encode_tunnel_wan(item: Item) -> bytes:
    return codec.pack([item_value(item)])


def decode_tunnel_wan_untrusted(body: bytes) -> Item:
    return read_item(_unpack(body, "tunnel_wan", 1)[0])


def encode_tunnel_in(far_relay: bytes, item: Item) -> bytes:
    return codec.pack([far_relay, item_value(item)])


def decode_tunnel_in_untrusted(body: bytes) -> tuple[NodeId, Item]:
    fields = _unpack(body, "tunnel_in", 2)
    return _node(fields[0], "tunnel_in.relay"), read_item(fields[1])


def encode_resolve(request_id: int, aor: str) -> bytes:
    return codec.pack([request_id, aor])


def decode_resolve_untrusted(body: bytes) -> tuple[int, str]:
    fields = _unpack(body, "resolve", 2)
    return (codec.read_int(fields[0], "resolve.id", 0, MAX_REQUEST_ID),
            codec.read_str(fields[1], "resolve.aor", limits.MAX_AOR_LEN))


def _entry_value(entry: AnswerEntry) -> list[Any]:
    env = entry.binding.envelope if entry.binding is not None else None
    return [entry.node, list(entry.relays[:MAX_FAR_RELAYS]), entry.ttl_s,
            env.signed_bytes if env is not None else b"",
            env.signature if env is not None else b""]


def encode_resolved(request_id: int, status: ResolveStatus,
                    entries: tuple[AnswerEntry, ...]) -> bytes:
    """The answer; entries beyond :data:`MAX_ANSWER_BINDINGS` are left out."""
    return codec.pack([request_id, int(status),
                       [_entry_value(e) for e in entries[:MAX_ANSWER_BINDINGS]]])


def _read_entry(raw: object) -> AnswerEntry:
    entry = codec.read_tuple(raw, "resolved.binding", 5)
    relays = codec.read_list(entry[1], "resolved.relays", MAX_FAR_RELAYS)
    signed = codec.read_bytes(entry[3], "resolved.binding_signed",
                              max_len=MAX_ANSWER_BINDING_BYTES)
    signature = codec.read_bytes(entry[4], "resolved.binding_signature",
                                 max_len=SIGNATURE_LEN)
    binding = None
    if signed or signature:
        if len(signature) != SIGNATURE_LEN:
            raise DecodeError("resolved.binding_signature: wrong length", reason="malformed")
        binding = binding_from_envelope_untrusted(decode_signed_untrusted(signed, signature))
    return AnswerEntry(_node(entry[0], "resolved.node"),
                       tuple(_node(r, "resolved.relay") for r in relays),
                       codec.read_int(entry[2], "resolved.ttl", 0, MAX_ANSWER_TTL_S), binding)


def decode_resolved_untrusted(body: bytes) -> tuple[int, ResolveStatus,
                                                    tuple[AnswerEntry, ...]]:
    """The answer's fields and entries, bindings decoded but not verified (the asker
    checks each, :func:`meshcomm.node.tunnel_answer.entry_refusal`)."""
    if len(body) > MAX_RESOLVED_BYTES:
        raise DecodeError(f"{len(body)}-byte answer", reason="oversized")
    fields = _unpack(body, "resolved", 3)
    request_id = codec.read_int(fields[0], "resolved.id", 0, MAX_REQUEST_ID)
    status = ResolveStatus(codec.read_int(fields[1], "resolved.status", 0,
                                          max(ResolveStatus)))
    entries = tuple(_read_entry(raw) for raw in
                    codec.read_list(fields[2], "resolved.bindings", MAX_ANSWER_BINDINGS))
    return request_id, status, entries
