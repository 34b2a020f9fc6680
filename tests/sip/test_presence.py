"""PIDF (RFC 3863) build and untrusted parse."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.sip.presence import (
    MAX_PIDF_SIZE_BYTES,
    BasicStatus,
    PresenceDocument,
    PresenceTuple,
    build_pidf,
    parse_pidf_untrusted,
    simple_presence,
)

RFC3863_EXAMPLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
     xmlns:im="urn:ietf:params:xml:ns:pidf:im"
     xmlns:myex="http://id.example.com/presence/"
     entity="pres:someone@example.com">
  <tuple id="bs35r9">
    <status>
      <basic>open</basic>
      <im:im>busy</im:im>
      <myex:location>home</myex:location>
    </status>
    <contact priority="0.8">im:someone@mobilecarrier.net</contact>
    <note xml:lang="en">Don't Disturb Please!</note>
    <note xml:lang="fr">Ne derangez pas, s'il vous plait</note>
    <timestamp>2001-10-27T16:49:29Z</timestamp>
  </tuple>
  <note>I'll be in Tokyo next week</note>
</presence>
"""


def test_parses_rfc3863_example() -> None:
    doc = parse_pidf_untrusted(RFC3863_EXAMPLE)
    assert doc.entity == "pres:someone@example.com"
    assert doc.is_open
    (item,) = doc.tuples
    assert item.tuple_id == "bs35r9"
    assert item.contact == "im:someone@mobilecarrier.net"
    assert item.contact_priority == 0.8
    assert item.notes[0] == "Don't Disturb Please!"
    assert item.timestamp == "2001-10-27T16:49:29Z"
    assert doc.notes == ("I'll be in Tokyo next week",)


def test_round_trip() -> None:
    doc = PresenceDocument(
        entity="pres:medic-7@fire.example",
        tuples=(PresenceTuple("a", BasicStatus.CLOSED, "sip:medic-7@10.0.0.1", 0.5,
                              ("on scene",), "2026-01-01T00:00:00Z"),
                PresenceTuple("b", BasicStatus.OPEN)),
        notes=("sector 4",))
    assert parse_pidf_untrusted(build_pidf(doc)) == doc
    simple = simple_presence("pres:a@b", False, note="off duty")
    assert parse_pidf_untrusted(build_pidf(simple)) == simple
    assert not simple.is_open


@pytest.mark.parametrize("data", [
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><presence/>',
    b'<!doctype x SYSTEM "file:///etc/passwd"><presence/>',
    b"<presence xmlns='urn:ietf:params:xml:ns:pidf'/>",            # no entity
    b"<other xmlns='urn:ietf:params:xml:ns:pidf' entity='x'/>",    # wrong root
    b"<presence entity='x'/>",                                     # wrong namespace
    b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='x'><tuple id='a'>"
    b"<status><basic>maybe</basic></status></tuple></presence>",
    b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='x'><tuple>"
    b"<status/></tuple></presence>",
    b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='x'><tuple id='a'/></presence>",
    b"<presence",
    b"\xff\xfe\x00",
    b"<a>" * 40 + b"</a>" * 40,
    b" " * (MAX_PIDF_SIZE_BYTES + 1),
])
def test_rejects_bad_documents(data: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_pidf_untrusted(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_give_document_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        parse_pidf_untrusted(data)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
               min_size=1, max_size=30),
       st.booleans())
def test_round_trip_property(note: str, is_open: bool) -> None:
    note = note.strip() or "x"
    doc = simple_presence("pres:x@y", is_open, note=note)
    assert parse_pidf_untrusted(build_pidf(doc)) == doc
