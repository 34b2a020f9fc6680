"""Benchmark: parse + serialize a typical INVITE with an SDP body on one core.

Prints one JSON object: ``{"bench": "sip_parse_serialize", "ops_per_s": ..., ...}``.
Target (issue 3): at least 20,000 parse+serialize per second.

The headline figure (``ops_per_s``, best round; ``median_ops_per_s``) parses and serializes
one 877-byte INVITE over and over. Two side figures show it is not flattered by repetition:

* ``varied_*``: the same work over ``VARIED_MESSAGES`` distinct INVITEs, cycled: every
  Call-ID, tag, branch, CSeq, SDP origin, caller host name and caller IPv6 address (Via,
  Contact) differs, so nothing keyed by header text helps, and the caller's hosts are too
  many for the parser's host-validation cache (``HOST_CACHE_ENTRIES``) to hold;
* ``proxy_*``: parse, then a proxy-like step (push a Via, decrement Max-Forwards, RFC 3261
  §16.6), then serialize the modified message.

    python -m tools.bench.sip [--seconds 5] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from meshcomm.sip import SipRequest, SipResponse, parse_message_untrusted

TARGET_OPS_PER_S = 20_000
VARIED_MESSAGES = 5000
"""Distinct INVITEs cycled by the ``varied`` figure (two new hosts each: more than the
parser's host-validation cache holds)."""
_BATCH = 500

_SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP6 fe80::1\r\n"
    b"s=meshcomm\r\n"
    b"c=IN IP6 fe80::1\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 111 0 8 101\r\n"
    b"a=rtpmap:111 opus/48000/2\r\n"
    b"a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:bob@medic-7.incident.mesh SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP [fe80::1]:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob (EMS)" <sip:bob@medic-7.incident.mesh>\r\n'
    b'From: "Alice (Fire)" <sip:alice@engine-3.incident.mesh>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@engine-3.incident.mesh\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@[fe80::1]:5060;transport=udp>;expires=3600\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: meshcomm/0.1\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(_SDP)).encode() + b"\r\n"
    b"\r\n" + _SDP
)


def varied_invites(count: int) -> list[bytes]:
    """``count`` INVITEs like INVITE (about the same size), each with its own Call-ID, tag,
    branch, CSeq, SDP origin and caller hosts."""
    out = []
    old_length = f"Content-Length: {len(_SDP)}".encode()
    for i in range(count):
        sdp = _SDP.replace(
            b"2890844526 2890844526", f"{2890844526 + i} {2890844526 + 2 * i}".encode()
        )
        msg = (
            INVITE.split(b"\r\n\r\n", 1)[0]
            .replace(b"z9hG4bK776asdhds", f"z9hG4bK{i:09x}".encode())
            .replace(b"1928301774", str(1928301774 + 7 * i).encode())
            .replace(b"a84b4c76e66710", f"a84b{i:010x}".encode())
            .replace(b"314159", str(314159 + i).encode())
            .replace(b"[fe80::1]", f"[fe80::{i + 2:x}]".encode())
            .replace(b"engine-3", f"engine-{i}".encode())
            .replace(old_length, f"Content-Length: {len(sdp)}".encode())
        )
        out.append(msg + b"\r\n\r\n" + sdp)
    assert len(set(out)) == count
    return out


def proxy_step(msg: SipRequest | SipResponse, branch: str) -> SipRequest | SipResponse:
    """What a stateless proxy does before forwarding (RFC 3261 §16.6 steps 3 and 8)."""
    max_forwards = msg.max_forwards
    vias = [f"SIP/2.0/UDP [fe80::7]:5060;branch={branch}", *msg.header_values("Via")]
    msg = msg.with_headers_replaced("Via", vias)
    if max_forwards is not None:
        msg = msg.with_headers_replaced("Max-Forwards", [str(max_forwards - 1)])
    return msg


def _timed(seconds: float, batch: Callable[[], None]) -> float:
    ops = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline:
        batch()
        ops += _BATCH
        now = time.perf_counter()
    return ops / (now - start)


def _plain_batch() -> None:
    parse = parse_message_untrusted
    for _ in range(_BATCH):
        parse(INVITE).serialize()


def _make_varied_batch() -> Callable[[], None]:
    messages = varied_invites(VARIED_MESSAGES)
    parse = parse_message_untrusted
    position = 0

    def batch() -> None:
        nonlocal position
        chunk = messages[position : position + _BATCH]
        position = (position + _BATCH) % len(messages)
        for data in chunk:
            parse(data).serialize()

    return batch


def _make_proxy_batch() -> Callable[[], None]:
    branches = [f"z9hG4bKpx{i:06d}" for i in range(_BATCH)]
    parse = parse_message_untrusted

    def batch() -> None:
        for branch in branches:
            proxy_step(parse(INVITE), branch).serialize()

    return batch


def _figures(prefix: str, rates: list[float]) -> dict[str, object]:
    rates = sorted(rates)
    return {
        f"{prefix}ops_per_s": round(rates[-1]),
        f"{prefix}median_ops_per_s": round(rates[len(rates) // 2]),
        f"{prefix}all_rounds_ops_per_s": [round(r) for r in rates],
    }


def run(seconds: float, rounds: int) -> dict[str, object]:
    """``rounds`` timed rounds of each figure, interleaved; best and median are reported
    (the CPU may be shared)."""
    batches = {"": _plain_batch, "varied_": _make_varied_batch(), "proxy_": _make_proxy_batch()}
    rates: dict[str, list[float]] = {key: [] for key in batches}
    for _ in range(rounds):
        for key, batch in batches.items():
            rates[key].append(_timed(seconds / rounds, batch))
    best = max(rates[""])
    result: dict[str, object] = {
        "bench": "sip_parse_serialize",
        "message_bytes": len(INVITE),
        "seconds_per_figure": seconds,
        "rounds": rounds,
    }
    for key in batches:
        result.update(_figures(key, rates[key]))
    result.update(
        target_ops_per_s=TARGET_OPS_PER_S,
        meets_target=best >= TARGET_OPS_PER_S,
        varied_messages=VARIED_MESSAGES,
        python=sys.version.split()[0],
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per figure")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    # stdout is this tool's interface: one machine-readable JSON line.
    sys.stdout.write(json.dumps(run(args.seconds, args.rounds)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
