"""Decoders of cross-site traffic (node/tunnel_wire.py): round trips, and garbage,
truncation, oversized and out-of-range input raise only DecodeError."""

from __future__ import annotations

import contextlib
import random

import pytest

from meshcomm.errors import DecodeError
from meshcomm.node.tunnel_wire import (
    MAX_ITEM_BODY_BYTES,
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
            encode_resolved(1, ResolveStatus.FOUND, (AnswerEntry(DST, (RELAY,), 5),)),
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


def test_an_answer_carries_the_nodes_key_and_a_key_not_matching_the_id_is_refused() -> None:
    """The key lets the asker seal SIP to the remote node (issue 12, meshcomm.node.e2e_sip)."""
    entry = AnswerEntry(ME.node_id, (RELAY,), 60, ME.public_key)
    assert decode_resolved_untrusted(encode_resolved(4, ResolveStatus.FOUND, (entry,))) == (
        4, ResolveStatus.FOUND, (entry,))
    for bad in (AnswerEntry(DST, (RELAY,), 60, ME.public_key),      # another node's key
                AnswerEntry(ME.node_id, (RELAY,), 60, ME.public_key[:31])):
        with pytest.raises(DecodeError):
            decode_resolved_untrusted(encode_resolved(4, ResolveStatus.FOUND, (bad,)))
