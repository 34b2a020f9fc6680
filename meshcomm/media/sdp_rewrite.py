"""SDP rewriting at a gateway (sans-IO): what the media relay changes in SDP bodies.

Two directions (the gateway's ``SdpDirection``):

* **client -> mesh**: the local client's own addresses are remembered
  (:func:`client_endpoints`) and left in the body; the gateway's node key and its media
  nonce for the call are added at session level (:func:`for_mesh`). The SIP message is
  signed at this node, so the far gateway learns both bound to this node.
* **mesh -> client**: the far gateway's key and nonce are read
  (:func:`peer_media_untrusted`) and removed; every RTP stream's ``c=``/``m=`` is pointed
  at this gateway's local ports for that stream (:func:`for_client`); the far client's
  ``a=rtcp`` (RFC 3605) and ICE attributes (RFC 8839) are removed since they name
  addresses our client cannot reach; ours is added when our RTCP port is not RTP+1.

Direction attributes (hold/resume, RFC 3264 §8.4) pass unchanged; a stream on old-style
hold (``c=0.0.0.0``) keeps that address; rejected streams (port 0) are left alone.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Final

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.media.keys import (
    EPHEMERAL_KEY_BYTES,
    NONCE_SIZE_BYTES,
    parse_ephemeral_untrusted,
    parse_nonce_untrusted,
)
from meshcomm.media.session import ClientEndpoint, LocalPorts, PeerMedia
from meshcomm.sip.sdp import (
    MAX_PORT,
    Attribute,
    Connection,
    MediaDescription,
    SessionDescription,
    parse_sdp_untrusted,
)
from meshcomm.types import PUBLIC_KEY_LEN

#: Session-level attribute: the sending gateway's media nonce for this call (hex).
NONCE_ATTRIBUTE = "x-meshcomm-nonce"
#: Session-level attribute: the sending gateway's Ed25519 node key (hex).
KEY_ATTRIBUTE = "x-meshcomm-key"
#: Session-level attribute: the sending gateway's ephemeral X25519 key for this call (hex).
EPH_ATTRIBUTE = "x-meshcomm-eph"
_OURS = frozenset({NONCE_ATTRIBUTE, KEY_ATTRIBUTE, EPH_ATTRIBUTE})
#: Removed toward the local client: they describe the far client's reachability.
_FAR_ONLY = frozenset({"rtcp", "candidate", "remote-candidates", "ice-ufrag", "ice-pwd",
                       "ice-options", "ice-lite", "ice-mismatch", "end-of-candidates"})
#: SIP status when the far gateway's SDP cannot be used (RFC 3261 §21.4.26).
NOT_ACCEPTABLE_HERE = 488


def parse_body_untrusted(body: bytes, *, from_mesh: bool) -> SessionDescription:
    """Parse an SDP body; raises only DecodeError (status hint 488 for mesh bodies)."""
    try:
        return parse_sdp_untrusted(body)
    except DecodeError as exc:
        if not from_mesh:
            raise
        raise DecodeError(str(exc), status_hint=NOT_ACCEPTABLE_HERE, reason=exc.reason) from exc


def relayable(m: MediaDescription) -> bool:
    """A stream the relay carries: RTP-based (RTP/AVP, RTP/SAVP, ...) and not rejected."""
    return m.port != 0 and m.proto.upper().startswith("RTP/")


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _rtcp_port(m: MediaDescription) -> tuple[int, str | None] | None:
    """RFC 3605 ``a=rtcp:PORT [IN IP4 addr]``; None if absent or unusable."""
    value = m.attribute("rtcp")
    if value is None:
        return None
    parts = value.split()
    if not parts or not parts[0].isdigit() or not 0 < int(parts[0]) <= MAX_PORT:
        return None
    address = parts[3] if len(parts) == 4 else None
    return int(parts[0]), address


def _ip_literal(text: str | None) -> str | None:
    """``text`` if it is an IP address (a name would need a blocking DNS look-up)."""
    if text is None:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return None if address.is_unspecified else text


def client_endpoints(sdp: SessionDescription) -> dict[int, ClientEndpoint]:
    """Where the local client receives each relayable stream, by m-line index.

    A stream on hold (``c=0.0.0.0``) or named by a host name gets no address."""
    found: dict[int, ClientEndpoint] = {}
    for index, m in enumerate(sdp.media):
        if not relayable(m):
            continue
        conn = m.connection or sdp.connection
        mux = m.has_attribute("rtcp-mux")
        host = _ip_literal(conn.address if conn is not None else None)
        if host is None:
            found[index] = ClientEndpoint(None, None, mux)
            continue
        rtcp = _rtcp_port(m)
        if rtcp is None:
            rtcp_addr = (host, m.port + 1) if m.port < MAX_PORT else None
        else:
            rtcp_host = host if rtcp[1] is None else _ip_literal(rtcp[1])
            rtcp_addr = None if rtcp_host is None else (rtcp_host, rtcp[0])
        found[index] = ClientEndpoint((host, m.port), rtcp_addr, mux)
    return found


def _single(attributes: tuple[Attribute, ...], name: str) -> str:
    values = [value for key, value in attributes if key == name]
    if len(values) != 1 or values[0] is None:
        raise DecodeError(f"SDP from the mesh needs exactly one a={name}",
                          status_hint=NOT_ACCEPTABLE_HERE, reason="bad_media_attribute")
    return values[0]


def peer_media_untrusted(sdp: SessionDescription) -> PeerMedia:
    """The far gateway's key and nonce from a mesh SDP. Raises only DecodeError."""
    nonce = parse_nonce_untrusted(_single(sdp.attributes, NONCE_ATTRIBUTE))
    try:
        eph = parse_ephemeral_untrusted(_single(sdp.attributes, EPH_ATTRIBUTE))
    except DecodeError as exc:
        raise DecodeError(str(exc), status_hint=NOT_ACCEPTABLE_HERE,
                          reason="bad_media_attribute") from exc
    key_text = _single(sdp.attributes, KEY_ATTRIBUTE).strip()
    if len(key_text) != PUBLIC_KEY_LEN * 2:
        raise DecodeError("media key has the wrong length", status_hint=NOT_ACCEPTABLE_HERE,
                          reason="bad_media_attribute")
    try:
        key = bytes.fromhex(key_text)
    except ValueError as exc:
        raise DecodeError("media key is not hex", status_hint=NOT_ACCEPTABLE_HERE,
                          reason="bad_media_attribute") from exc
    return PeerMedia(public_key=key, nonce=nonce, eph_key=eph)


def _without(attributes: tuple[Attribute, ...], names: frozenset[str]) -> tuple[Attribute, ...]:
    return tuple((k, v) for k, v in attributes if k not in names)


def for_mesh(sdp: SessionDescription, public_key: bytes, nonce: bytes,
             eph_public: bytes) -> SessionDescription:
    """The client's SDP as it goes over the mesh: plus our key, nonce and ephemeral key
    for the call, nothing else."""
    if (len(nonce) != NONCE_SIZE_BYTES or len(public_key) != PUBLIC_KEY_LEN
            or len(eph_public) != EPHEMERAL_KEY_BYTES):
        raise LocalProtocolError("bad media key, nonce or ephemeral key size")
    attrs = (*_without(sdp.attributes, _OURS), (KEY_ATTRIBUTE, public_key.hex()),
             (NONCE_ATTRIBUTE, nonce.hex()), (EPH_ATTRIBUTE, eph_public.hex()))
    media = tuple(replace(m, attributes=_without(m.attributes, _OURS)) for m in sdp.media)
    return replace(sdp, attributes=attrs, media=media)


#: Bind addresses that name no address a client could send to.
WILDCARD_ADDRESSES: Final = frozenset({"0.0.0.0", "::"})


def advertised_address(bound: str, client_host: str) -> str:
    """The address our local client is to send media to: the ports' own, or, when they
    listen on a wildcard, the gateway's address toward that client (``client_host``, as
    written in a Via: IPv6 in brackets) if the ports' family can receive there (an IPv4
    wildcard cannot take an IPv6 address). Without one the wildcard stays, as before."""
    if bound not in WILDCARD_ADDRESSES or not client_host:
        return bound
    host = client_host.strip("[]")
    if bound == "0.0.0.0" and ":" in host:
        return bound
    return host


def _client_section(sdp: SessionDescription, m: MediaDescription,
                    ports: LocalPorts | None, client_host: str) -> MediaDescription:
    if m.port == 0:
        return m
    if ports is None or not relayable(m):   # nothing we carry: disable (RFC 3264 §5.1, §6)
        return replace(m, port=0, port_count=None, connection=None)
    attrs = _without(m.attributes, _FAR_ONLY | _OURS)
    if ports.rtcp_port != ports.rtp_port + 1:
        attrs = (*attrs, ("rtcp", str(ports.rtcp_port)))
    conn = m.connection or sdp.connection
    held = conn is not None and (conn.is_null or conn.address == "::")
    address = (conn.address if held and conn is not None
               else advertised_address(ports.address, client_host))
    return replace(m, port=ports.rtp_port, port_count=None, attributes=attrs,
                   connection=Connection(address=address, addrtype=_addrtype(address)))


def for_client(sdp: SessionDescription, ports: dict[int, LocalPorts],
               client_host: str = "") -> SessionDescription:
    """The far client's SDP as our local client must see it: our ports, not theirs, at
    the address it reaches us at (:func:`advertised_address`)."""
    media = tuple(_client_section(sdp, m, ports.get(index), client_host)
                  for index, m in enumerate(sdp.media))
    first = next(iter(ports.values()), None)
    conn = sdp.connection
    if first is not None:
        address = advertised_address(first.address, client_host)
        conn = Connection(address=address, addrtype=_addrtype(address))
    return replace(sdp, connection=conn, media=media,
                   attributes=_without(sdp.attributes, _FAR_ONLY | _OURS))
