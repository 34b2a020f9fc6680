"""The node's sealing layer (meshcomm.node.e2e_sip) between two nodes, wired by hand:
compact SIP in, exactly the same bytes out; SHORT headers once the peer says it holds the
session; a receiver restart, a lost FULL message or an evicted request costs one NACK and
one FULL re-send, never the message; NACK floods and re-send copies stay bounded."""

from __future__ import annotations

import hashlib
import random

from meshcomm.node.e2e_sip import (
    MAX_RESEND_BYTES,
    MAX_RESEND_ENTRIES,
    RESEND_KEEP_S,
    E2eCounter,
    E2eOutgoing,
    SipSealing,
    is_sealed,
)
from meshcomm.node.kinds import AppKind
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.security.e2e import HELD_FLAG, SealForm
from meshcomm.security.identity import Identity
from meshcomm.types import NodeId

A = Identity(hashlib.sha256(b"e2e-sip-a").digest())
B = Identity(hashlib.sha256(b"e2e-sip-b").digest())
SIP = AppKind.SIP


def _sealing(who: Identity, seed: int) -> SipSealing:
    sealing = SipSealing(who, random.Random(seed))
    sealing.learn(A.public_key)
    sealing.learn(B.public_key)
    return sealing


def _request(n: int, text: str = "x" * 100) -> bytes:
    a_hex = A.node_id.hex()[:16]
    return (f"MESSAGE sip:n4@incident.local SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {a_hex}.mesh;branch=z9hG4bK{n:016x}\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{n + 7:016x};rport=5070;"
            f"received=127.0.0.1\r\nMax-Forwards: 69\r\n"
            f"From: <sip:n0@incident.local>;tag={n + 9:016x}\r\nTo: <sip:n4@incident.local>\r\n"
            f"Call-ID: {n + 11:024x}@127.0.0.1\r\nCSeq: {n} MESSAGE\r\n"
            f"User-Agent: meshcomm/0.1\r\nContent-Length: {len(text)}\r\n"
            f"Content-Type: text/plain;charset=utf-8\r\n\r\n{text}").encode()


def _ok(request: bytes) -> bytes:
    lines = request.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    copied = [x for x in lines if x.split(b":")[0] in (b"Via", b"From", b"To", b"Call-ID",
                                                       b"CSeq")]
    copied = [x + b";tag=00000000a951af6d" if x.startswith(b"To:") else x for x in copied]
    return b"SIP/2.0 200 OK\r\n" + b"\r\n".join(copied) + b"\r\nContent-Length: 0\r\n\r\n"


def _event(sender: Identity, body: bytes) -> UnicastReceived:
    return UnicastReceived(NodeId(sender.node_id), sender.public_key, SIP, body, 4, 1)


def _deliver(src: SipSealing, who: Identity, dst: SipSealing, body: bytes,
             now: float) -> bytes | None:
    """``body`` sealed by ``src`` (node ``who``) and opened by ``dst``: the SIP it gives."""
    sealed = src.seal(dst.node_id, SIP, body, now)
    assert sealed is not None
    opened = dst.open(_event(who, sealed), now)
    return None if opened is None else opened.body


def _exchange(a: SipSealing, b: SipSealing, n: int, now: float) -> tuple[int, int]:
    """One MESSAGE a -> b and its 200 OK back; the sealed sizes."""
    request = _request(n)
    sealed = a.seal(B.node_id, SIP, request, now)
    assert sealed is not None
    opened = b.open(_event(A, sealed), now)
    assert opened is not None and opened.body == request
    ok = _ok(request)
    sealed_ok = b.seal(A.node_id, SIP, ok, now)
    assert sealed_ok is not None
    back = a.open(_event(B, sealed_ok), now)
    assert back is not None and back.body == ok
    return len(sealed), len(sealed_ok)


def test_a_message_and_its_200_ok_arrive_byte_for_byte_and_get_short() -> None:
    a, b = _sealing(A, 1), _sealing(B, 2)
    first = _exchange(a, b, 1, 0.0)
    second = _exchange(a, b, 2, 0.1)
    third = _exchange(a, b, 3, 0.2)
    # FULL headers until the peer says it holds the session (its first answer does);
    # then SHORT, 28 bytes less
    assert second[0] == third[0] == first[0] - 28
    assert second[1] == third[1] == first[1] - 28
    assert third[0] <= 170 + 23 and third[1] <= 40 + 23, third
    assert len(_request(3)) > 550
    assert a.counters[E2eCounter.SEALED_SHORT] >= 1 and b.counters[E2eCounter.REFERENCED] == 3
    assert not a.take_outgoing() and not b.take_outgoing()


def test_a_receiver_restart_costs_a_nack_and_a_full_resend_not_the_message() -> None:
    a, b = _sealing(A, 1), _sealing(B, 2)
    for n in range(3):
        _exchange(a, b, n, 0.1 * n)
    restarted = _sealing(B, 3)
    request = _request(10)
    sealed = a.seal(B.node_id, SIP, request, 1.0)
    assert sealed is not None and sealed[0] & ~HELD_FLAG == SealForm.SHORT
    assert restarted.open(_event(A, sealed), 1.0) is None
    assert restarted.counters[E2eCounter.UNKNOWN_SESSION] == 1
    [nack] = restarted.take_outgoing()
    assert nack.dst == A.node_id and not nack.seal and len(nack.body) == 7
    assert a.open(_event(B, nack.body), 1.01) is None          # a NACK: handled, no SIP
    [again] = a.take_outgoing()
    assert again == E2eOutgoing(B.node_id, request, True)
    assert _deliver(a, A, restarted, again.body, 1.02) == request
    assert a.counters[E2eCounter.RESENT_FULL] == 1
    # the copy went: a second NACK for it finds nothing (no duplicate)
    assert a.open(_event(B, nack.body), 1.03) is None
    assert not a.take_outgoing() and a.counters[E2eCounter.NACK_MISSED] == 1


def test_a_response_whose_request_is_gone_is_sent_again_without_the_reference() -> None:
    a, b = _sealing(A, 1), _sealing(B, 2)
    request = _request(5)
    assert _deliver(a, A, b, request, 0.0) == request
    a._references.clear()                  # a evicted (or restarted and lost) it
    ok = _ok(request)
    sealed_ok = b.seal(A.node_id, SIP, ok, 0.1)
    assert sealed_ok is not None
    assert a.open(_event(B, sealed_ok), 0.1) is None
    assert a.counters[E2eCounter.UNKNOWN_REFERENCE] == 1
    [nack] = a.take_outgoing()
    assert b.open(_event(A, nack.body), 0.11) is None
    [again] = b.take_outgoing()
    assert again.body == ok and again.seal
    assert _deliver(b, B, a, again.body, 0.12) == ok


def test_a_flood_of_undecodable_short_messages_costs_one_nack_per_interval() -> None:
    a, b = _sealing(A, 1), _sealing(B, 2)
    _exchange(a, b, 1, 0.0)
    _exchange(a, b, 2, 0.1)
    sealed = a.seal(B.node_id, SIP, _request(3), 0.2)
    assert sealed is not None and sealed[0] & ~HELD_FLAG == SealForm.SHORT
    stranger = _sealing(B, 9)
    for _ in range(10_000):
        assert stranger.open(_event(A, sealed), 0.3) is None
    assert len(stranger.take_outgoing()) == 1
    assert stranger.open(_event(A, sealed), 2.0) is None     # a second after: once more
    assert len(stranger.take_outgoing()) == 1
    # garbage NACKs and NACKs for messages never sent are counted, never resent
    for body in (b"\x04", b"\x04" + bytes(6), b"\x04" + bytes(60)):
        assert a.open(_event(B, body), 0.4) is None
    assert not a.take_outgoing() and a.counters[E2eCounter.NACK_MISSED] == 3


def test_resend_copies_are_bounded_by_count_bytes_and_age() -> None:
    a, b = _sealing(A, 1), _sealing(B, 2)
    _exchange(a, b, 1, 0.0)
    _exchange(a, b, 2, 0.0)
    big = "y" * 4000
    for n in range(MAX_RESEND_ENTRIES * 2):
        a.seal(B.node_id, SIP, _request(100 + n, big if n % 2 else "z"), 1.0)
    assert len(a._kept) <= MAX_RESEND_ENTRIES and a._kept_bytes <= MAX_RESEND_BYTES
    assert a._kept_bytes == sum(len(k.sip) for k in a._kept.values())
    a.seal(B.node_id, SIP, _request(5000), 1.0 + RESEND_KEEP_S + 1)
    assert len(a._kept) == 1


def test_parcels_are_compacted_sealed_full_and_open_later() -> None:
    a, b = _sealing(A, 1), _sealing(B, 2)
    request = _request(7)
    parcel = a.seal_parcel(request, B.public_key, 0.0)
    assert parcel is not None and is_sealed(parcel) and parcel[0] == SealForm.FULL
    assert len(parcel) < len(request) // 2
    assert _sealing(B, 5).open_parcel(parcel, A.public_key) == request   # after a restart
    assert b.open_parcel(request, A.public_key) == request                # held in clear
    assert b.open_parcel(parcel[:-1], A.public_key) is None
    assert b.counters[E2eCounter.PARCEL_OPEN_FAILED] == 1


def _with_method(request: bytes, method: str) -> bytes:
    head, _, _ = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    lines[0] = lines[0].replace(b"MESSAGE", method.encode())
    lines = [x.replace(b" MESSAGE", f" {method}".encode()) if x.startswith(b"CSeq") else x
             for x in lines if not x.startswith(b"Content-")]
    return b"\r\n".join(lines) + b"\r\nContent-Length: 0\r\n\r\n"


def test_an_invite_and_its_cancel_share_a_branch_and_each_answer_finds_its_own() -> None:
    """The gateway's CANCEL reuses the INVITE's branch: a response names its request by
    branch and a digest of its lines, so the INVITE's 180 decodes against the INVITE even
    when the CANCEL went out meanwhile (lost before the far side), never against it."""
    a, b = _sealing(A, 1), _sealing(B, 2)
    invite = _with_method(_request(20), "INVITE")
    cancel = _with_method(_request(20), "CANCEL")
    assert _deliver(a, A, b, invite, 0.0) == invite
    assert a.seal(B.node_id, SIP, cancel, 0.1) is not None          # lost on the way
    ringing = _ok(invite).replace(b"200 OK", b"180 Ringing")
    assert _deliver(b, B, a, ringing, 0.2) == ringing
    assert _deliver(a, A, b, cancel, 0.3) == cancel               # the retransmission
    ok_cancel = _ok(cancel)
    assert b"CSeq: 20 CANCEL" in ok_cancel
    assert _deliver(b, B, a, ok_cancel, 0.4) == ok_cancel
    terminated = _ok(invite).replace(b"200 OK", b"487 Request Terminated")
    assert _deliver(b, B, a, terminated, 0.5) == terminated
    assert b.counters[E2eCounter.REFERENCED] == 3 and not a.take_outgoing()
