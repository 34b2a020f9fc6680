"""Decoders of cross-site traffic (node/tunnel_wire.py): round trips, and garbage,
truncation, oversized and out-of-range input raise only DecodeError."""

from __future__ import annotations

import contextlib
import random

import pytest

from meshcomm.errors import DecodeError
from meshcomm.location.binding import Binding, make_binding
from meshcomm.node.tunnel_wire import (
    MAX_ANSWER_BINDING_BYTES,
    MAX_ANSWER_BINDINGS,
    MAX_ANSWER_TTL_S,
    MAX_ITEM_BODY_BYTES,
    MAX_REQUEST_ID,
    MAX_RESOLVED_BYTES,
    AnswerEntry,
    MediaItem,
    ResolveStatus,
    decode_resolve_untrusted,
    decode_resolved_untrusted,
    decode_tunnel_in_untrusted,
    decode_tunnel_out_untrusted,
    decode_tunnel_wan_untrusted,
    encode_resolve,
    encode_resolved,
    encode_tunnel_in,
    encode_tunnel_out,
    encode_tunnel_wan,
    seal_item,
)
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import NodeId
from meshcomm.wire import codec

ME = Identity(b"\x01" * 32)
DST = NodeId(b"\x02" * 32)
RELAY = NodeId(b"\x03" * 32)
DECODERS = (decode_resolve_untrusted, decode_resolved_untrusted, decode_tunnel_in_untrusted,
            decode_tunnel_out_untrusted, decode_tunnel_wan_untrusted)


def test_round_trips_and_signature() -> None:
    item = seal_item(ME, "inc", DST, 1, 77, b"INVITE sip:x SIP/2.0\r\n\r\n")
    relays, got = decode_tunnel_out_untrusted(encode_tunnel_out((RELAY,), item))
    assert relays == (RELAY,) and got == item
    assert got.verify("inc", SignatureVerifier()) and got.origin == ME.node_id
    assert not got.verify("other-incident", SignatureVerifier())
    assert decode_tunnel_wan_untrusted(encode_tunnel_wan(item)) == item
    media = MediaItem(ME.node_id, DST, b"s" * 8, b"rtp")
    assert decode_tunnel_in_untrusted(encode_tunnel_in(RELAY, media)) == (RELAY, media)
    assert decode_resolve_untrusted(encode_resolve(9, "sip:a@b")) == (9, "sip:a@b")
    entry = AnswerEntry(DST, (RELAY,), 60)
    assert decode_resolved_untrusted(encode_resolved(9, ResolveStatus.FOUND, (entry,))) == (
        9, ResolveStatus.FOUND, (entry,))


def test_a_forged_item_fails_verification() -> None:
    item = seal_item(ME, "inc", DST, 1, 1, b"body")
    wire = codec.unpack_untrusted(encode_tunnel_wan(item), check_depth=False)
    wire[0][5] = b"other body"
    forged = decode_tunnel_wan_untrusted(codec.pack(wire))
    assert not forged.verify("inc", SignatureVerifier())


@pytest.mark.parametrize("decode", DECODERS)
def test_garbage_truncation_and_oversize_raise_only_decode_error(decode: object) -> None:
    rng = random.Random(5)
    good = [encode_tunnel_out((RELAY,), seal_item(ME, "inc", DST, 1, 1, b"x" * 300)),
            encode_resolved(1, ResolveStatus.FOUND, (AnswerEntry(DST, (RELAY,), 5),
                                                     AnswerEntry(ME.node_id, (RELAY,), 5,
                                                                 _binding()))),
            encode_tunnel_in(RELAY, MediaItem(ME.node_id, DST, b"s" * 8, b"p")),
            encode_resolve(1, "sip:a@b")]
    samples: list[bytes] = [b"", b"\xc1", b"\x93" * 50, codec.pack([1] * 300),
                            codec.pack("x" * 600), b"\x00" * (MAX_ITEM_BODY_BYTES * 2)]
    for blob in good:
        samples += [blob[:n] for n in range(0, len(blob), 7)]
        samples += [bytes(b ^ rng.randrange(256) if rng.random() < 0.05 else b for b in blob)
                    for _ in range(30)]
    samples.append(codec.pack([2, 99, []]))                     # status out of range
    samples.append(codec.pack([[RELAY] * 9, [1]]))              # too many relays
    samples.append(codec.pack([[], [2, DST, DST, b"s" * 8, b""]]))   # no relay
    assert callable(decode)
    for data in samples:
        with contextlib.suppress(DecodeError):
            decode(data)


def test_an_item_body_over_the_limit_is_refused_both_ways() -> None:
    with pytest.raises(ValueError):
        seal_item(ME, "inc", DST, 1, 1, b"x" * (MAX_ITEM_BODY_BYTES + 1))
    value = [1, ME.public_key, DST, 1, 1, b"x" * (MAX_ITEM_BODY_BYTES + 1), b"s" * 64]
    with pytest.raises(DecodeError):
        decode_tunnel_wan_untrusted(codec.pack([value]))


def _binding(aor: str = "sip:me@fire.example", contacts: tuple[str, ...] = ("mesh:me",),
             credential: bytes | None = None) -> Binding:
    return make_binding(ME, incident="inc", seq=3, aor=aor, contacts=contacts,
                        issued_at=1_800_000_000.0, lifetime_s=600, credential=credential)


def test_an_answer_carries_the_owner_signed_binding_unchanged() -> None:
    """The asker checks the binding itself (node.tunnel_answer), and seals SIP to its key."""
    binding = _binding()
    entry = AnswerEntry(ME.node_id, (RELAY,), 60, binding)
    _, _, (got,) = decode_resolved_untrusted(encode_resolved(4, ResolveStatus.FOUND, (entry,)))
    assert got == entry and got.key == ME.public_key
    assert got.binding is not None
    assert got.binding.envelope.signed_bytes == binding.envelope.signed_bytes
    assert got.binding.envelope.verify(SignatureVerifier())
    assert AnswerEntry(ME.node_id, (), 0).key == b""


def test_a_malformed_binding_in_an_answer_raises_only_decode_error() -> None:
    env = _binding().envelope
    for signed, sig in ((b"garbage", env.signature), (env.signed_bytes, env.signature[:63]),
                        (env.signed_bytes, b""), (b"", env.signature),
                        (b"x" * (MAX_ANSWER_BINDING_BYTES + 1), env.signature),
                        (codec.pack([1, 2, 3]), env.signature)):
        body = codec.pack([4, 0, [[ME.node_id, [RELAY], 60, signed, sig]]])
        with pytest.raises(DecodeError):
            decode_resolved_untrusted(body)
    too_many = codec.pack([4, 0, [[ME.node_id, [RELAY], 60, b"", b""]] * 9])
    with pytest.raises(DecodeError):
        decode_resolved_untrusted(too_many)
    with pytest.raises(DecodeError):
        decode_resolved_untrusted(b"\x00" * (MAX_RESOLVED_BYTES + 1))


def test_the_largest_answer_fits_one_unicast() -> None:
    """Eight entries, eight relays each, bindings of the largest size a datagram allows."""
    cred = b"c" * 400
    binding = _binding("sip:" + "u" * 200 + "@fire.example",
                       tuple("sip:" + "c" * 50 + f"{i}@mesh" for i in range(8)), cred)
    assert len(binding.envelope.signed_bytes) <= MAX_ANSWER_BINDING_BYTES
    entries = tuple(AnswerEntry(ME.node_id, (RELAY,) * 8, MAX_ANSWER_TTL_S, binding)
                    for _ in range(12))
    body = encode_resolved(MAX_REQUEST_ID, ResolveStatus.FOUND, entries)
    assert len(body) <= MAX_RESOLVED_BYTES
    assert len(decode_resolved_untrusted(body)[2]) == MAX_ANSWER_BINDINGS
    # The bound holds for the largest binding the decoder takes, too.
    worst = codec.pack([MAX_REQUEST_ID, 0, [[ME.node_id, [RELAY] * 8, MAX_ANSWER_TTL_S,
                                             b"x" * MAX_ANSWER_BINDING_BYTES, b"s" * 64]]
                                           * MAX_ANSWER_BINDINGS])
    assert len(worst) <= MAX_RESOLVED_BYTES
