"""PIDF presence documents (RFC 3863) for the SIP presence event package (RFC 3856).

:func:`build_pidf` makes ``application/pidf+xml`` bodies; :func:`parse_pidf_untrusted`
reads them from the network and raises only ``DecodeError``. Parsing uses the standard
library's expat-based ``xml.etree`` after a pre-check that rejects any document type
declaration or entity declaration (so no entity expansion, "billion laughs" or external
entity can happen) and enforces size and element-count limits.
"""

from __future__ import annotations

import enum
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from meshcomm.errors import DecodeError

PIDF_CONTENT_TYPE = "application/pidf+xml"
PIDF_NAMESPACE = "urn:ietf:params:xml:ns:pidf"
MAX_PIDF_SIZE_BYTES = 16 * 1024
MAX_PIDF_ELEMENTS = 256
MAX_PIDF_TUPLES = 32
MAX_PIDF_DEPTH = 16
MAX_TEXT_CHARS = 1024

_FORBIDDEN_MARKUP = re.compile(rb"<!\s*(DOCTYPE|ENTITY|ELEMENT|ATTLIST)", re.IGNORECASE)
_NS = "{" + PIDF_NAMESPACE + "}"


class BasicStatus(enum.Enum):
    """RFC 3863 §4.1.4 ``<basic>`` values."""

    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class PresenceTuple:
    """One ``<tuple>`` (RFC 3863 §4.1.2)."""

    tuple_id: str
    basic: BasicStatus | None = None
    contact: str | None = None
    contact_priority: float | None = None
    notes: tuple[str, ...] = ()
    timestamp: str | None = None


@dataclass(frozen=True, slots=True)
class PresenceDocument:
    """A ``<presence>`` document (RFC 3863 §4.1.1)."""

    entity: str
    tuples: tuple[PresenceTuple, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def is_open(self) -> bool:
        """True when any tuple says ``open``."""
        return any(t.basic is BasicStatus.OPEN for t in self.tuples)


def simple_presence(entity: str, is_open: bool, *, note: str | None = None,
                    contact: str | None = None, tuple_id: str = "t1") -> PresenceDocument:
    """The common one-tuple document."""
    status = BasicStatus.OPEN if is_open else BasicStatus.CLOSED
    notes = (note,) if note else ()
    return PresenceDocument(entity=entity, tuples=(
        PresenceTuple(tuple_id=tuple_id, basic=status, contact=contact, notes=notes),))


def build_pidf(doc: PresenceDocument) -> bytes:
    """Serialize ``doc`` as UTF-8 PIDF XML."""
    ET.register_namespace("", PIDF_NAMESPACE)
    root = ET.Element(_NS + "presence", {"entity": doc.entity})
    for item in doc.tuples:
        elem = ET.SubElement(root, _NS + "tuple", {"id": item.tuple_id})
        status = ET.SubElement(elem, _NS + "status")
        if item.basic is not None:
            ET.SubElement(status, _NS + "basic").text = item.basic.value
        if item.contact is not None:
            attrs = ({} if item.contact_priority is None
                     else {"priority": f"{item.contact_priority:g}"})
            ET.SubElement(elem, _NS + "contact", attrs).text = item.contact
        for note in item.notes:
            ET.SubElement(elem, _NS + "note").text = note
        if item.timestamp is not None:
            ET.SubElement(elem, _NS + "timestamp").text = item.timestamp
    for note in doc.notes:
        ET.SubElement(root, _NS + "note").text = note
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


def _text(elem: ET.Element) -> str:
    text = (elem.text or "").strip()
    if len(text) > MAX_TEXT_CHARS:
        raise DecodeError("PIDF text too long", reason="pidf_limit")
    return text


def _check_shape(root: ET.Element) -> None:
    count = 0
    stack: list[tuple[ET.Element, int]] = [(root, 1)]
    while stack:
        elem, depth = stack.pop()
        count += 1
        if count > MAX_PIDF_ELEMENTS or depth > MAX_PIDF_DEPTH:
            raise DecodeError("PIDF document too large or too deep", reason="pidf_limit")
        stack.extend((child, depth + 1) for child in elem)


def _parse_priority(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise DecodeError("PIDF: bad contact priority", reason="bad_pidf") from exc
    if not 0.0 <= value <= 1.0:
        raise DecodeError("PIDF: contact priority out of range", reason="bad_pidf")
    return value


def _parse_tuple(elem: ET.Element) -> PresenceTuple:
    tuple_id = elem.get("id")
    if not tuple_id:
        raise DecodeError("PIDF: tuple without id", reason="bad_pidf")
    status = elem.find(_NS + "status")
    if status is None:
        raise DecodeError("PIDF: tuple without status", reason="bad_pidf")
    basic: BasicStatus | None = None
    basic_elem = status.find(_NS + "basic")
    if basic_elem is not None:
        try:
            basic = BasicStatus(_text(basic_elem))
        except ValueError as exc:
            raise DecodeError("PIDF: basic must be open or closed", reason="bad_pidf") from exc
    contact_elem = elem.find(_NS + "contact")
    timestamp_elem = elem.find(_NS + "timestamp")
    return PresenceTuple(
        tuple_id=tuple_id, basic=basic,
        contact=None if contact_elem is None else _text(contact_elem),
        contact_priority=(None if contact_elem is None
                          else _parse_priority(contact_elem.get("priority"))),
        notes=tuple(_text(n) for n in elem.findall(_NS + "note")),
        timestamp=None if timestamp_elem is None else _text(timestamp_elem))


def parse_pidf_untrusted(data: bytes) -> PresenceDocument:
    """Parse a PIDF body. Raises only ``DecodeError``."""
    if len(data) > MAX_PIDF_SIZE_BYTES:
        raise DecodeError("PIDF document too large", reason="pidf_limit")
    if _FORBIDDEN_MARKUP.search(data):
        raise DecodeError("PIDF: DTD and entity declarations are refused", reason="bad_pidf")
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, ValueError, LookupError) as exc:
        raise DecodeError(f"PIDF: not well-formed XML: {exc}", reason="bad_pidf") from exc
    _check_shape(root)
    if root.tag != _NS + "presence":
        raise DecodeError("PIDF: root must be pidf:presence", reason="bad_pidf")
    entity = root.get("entity")
    if not entity:
        raise DecodeError("PIDF: presence without entity", reason="bad_pidf")
    tuples = root.findall(_NS + "tuple")
    if len(tuples) > MAX_PIDF_TUPLES:
        raise DecodeError("PIDF: too many tuples", reason="pidf_limit")
    return PresenceDocument(
        entity=entity, tuples=tuple(_parse_tuple(t) for t in tuples),
        notes=tuple(_text(n) for n in root.findall(_NS + "note")))
