"""One-off recorder used to capture the vectors in this folder (kept for reproducibility).

Binds a UDP socket on loopback, prints its port, answers every request with a minimal
response (200 OK; 180 then 200 for INVITE) and writes each received request to
``<out_dir>/<prefix>-<n>-<METHOD>.sip`` exactly as received. Not a test; run by hand:

    python tests/sip/vectors/recorded/record.py OUT_DIR PREFIX SECONDS
"""

from __future__ import annotations

import re
import socket
import sys
import time
from pathlib import Path


def _response(request: bytes, status: str, port: int, to_tag: str = "rec1") -> bytes:
    text = request.decode("utf-8", "replace")
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    keep = []
    for line in head[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name in ("via", "v", "from", "f", "call-id", "i", "cseq"):
            keep.append(line)
        elif name in ("to", "t"):
            keep.append(line if ";tag=" in line else line + f";tag={to_tag}")
    contact = f"Contact: <sip:rec@127.0.0.1:{port}>"
    method = head[0].split(" ", 1)[0]
    if method == "REGISTER":
        match = re.search(r"^(?:Contact|m):\s*(.*)$", text, re.MULTILINE | re.IGNORECASE)
        if match:
            contact = "Contact: " + match.group(1).strip() + ";expires=60"
    return ("\r\n".join([f"SIP/2.0 {status}", *keep, contact, "Content-Length: 0", "", ""])
            .encode())


def main() -> None:
    out_dir, prefix, seconds = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    out_dir.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", int(sys.argv[4]) if len(sys.argv) > 4 else 0))
    port = sock.getsockname()[1]
    print(port, flush=True)
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        try:
            data, src = sock.recvfrom(65535)
        except TimeoutError:
            continue
        if data.startswith(b"SIP/2.0"):
            continue
        method = data.split(b" ", 1)[0].decode("ascii", "replace")
        count += 1
        (out_dir / f"{prefix}-{count:02d}-{method}.sip").write_bytes(data)
        if method == "ACK":
            continue
        if method == "INVITE":
            sock.sendto(_response(data, "180 Ringing", port), src)
        sock.sendto(_response(data, "200 OK", port), src)


if __name__ == "__main__":
    main()
