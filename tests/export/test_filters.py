"""What the export writes (meshcomm/export/filters.py): times as ISO 8601 or Unix seconds,
AoRs compared as addresses-of-record, Call-IDs exactly, event types; bodies removed
unless asked for; option values bounded."""

from __future__ import annotations

import pytest

from meshcomm.export.filters import (
    MAX_FILTER_VALUES,
    EventFilter,
    FilterError,
    aor_key,
    parse_time,
    without_body,
)

SIP = {"dir": "to-mesh", "call_id": "abc@x", "from": "sip:Alice@Example.ORG",
       "to": "sip:bob@example.org", "body": b"hi", "body_sha256": "00", "body_len": 2}


def test_times_are_iso_8601_or_unix_seconds() -> None:
    assert parse_time("1800000000.5") == 1800000000.5
    assert parse_time("2027-01-15T08:00:00Z") == 1800000000.0
    assert parse_time("2027-01-15T08:00:00") == 1800000000.0            # UTC by default
    assert parse_time("2027-01-15T10:00:00+02:00") == 1800000000.0
    assert parse_time("2027-01-15 08:00:00.25+00:00") == 1800000000.25
    for bad in ("yesterday", "nan", "inf", "-5", "1e300", "2027-13-01T00:00:00"):
        with pytest.raises(FilterError):
            parse_time(bad)


def test_aors_compare_as_addresses_of_record() -> None:
    assert aor_key("sip:Alice@Example.ORG") == aor_key("SIP:Alice@example.org") == (
        "sip:Alice@example.org")
    assert aor_key("Alice@example.org") == "sip:Alice@example.org"
    assert aor_key("<sips:bob@X>") == "sips:bob@x"
    assert aor_key("sip:alice@example.org") != aor_key("sip:Alice@example.org")  # user part


def test_every_given_filter_must_hold() -> None:
    assert EventFilter().everything and EventFilter().keeps("x", 0.0, {})
    by_time = EventFilter.of(from_s=10.0, to_s=20.0)
    assert [by_time.keeps("x", t, {}) for t in (9.9, 10.0, 20.0, 20.1)] == [
        False, True, True, False]
    alice = EventFilter.of(aors=["alice@example.org"])
    assert not alice.keeps("sip.message", 0.0, SIP)
    alice = EventFilter.of(aors=["Alice@example.org", "carol@x"])
    assert alice.keeps("sip.message", 0.0, SIP)
    assert alice.keeps("binding.learned", 0.0, {"aor": "sip:Alice@EXAMPLE.org"})
    assert not alice.keeps("route.changed", 0.0, {"dst": "Alice@example.org"})
    calls = EventFilter.of(call_ids=["abc@x"])
    assert calls.keeps("sip.message", 0.0, SIP)
    assert not calls.keeps("sip.message", 0.0, {**SIP, "call_id": "ABC@x"})
    assert not calls.keeps("sip.message", 0.0, {**SIP, "call_id": ["abc@x"]})   # unhashable
    both = EventFilter.of(call_ids=["abc@x"], types=["sip.message", "sf.held"],
                          from_s=0.0)
    assert both.keeps("sip.message", 1.0, SIP)
    assert not both.keeps("sip.message", -1.0, SIP)
    assert not both.keeps("route.changed", 1.0, SIP)
    assert both.as_json()["type"] == ["sf.held", "sip.message"]


def test_option_values_are_bounded() -> None:
    with pytest.raises(FilterError):
        EventFilter.of(from_s=20.0, to_s=10.0)
    with pytest.raises(FilterError):
        EventFilter.of(types=[""])
    with pytest.raises(FilterError):
        EventFilter.of(call_ids=["x" * 2000])
    with pytest.raises(FilterError):
        EventFilter.of(aors=[f"a{i}@x" for i in range(MAX_FILTER_VALUES + 1)])


def test_bodies_go_unless_asked_for() -> None:
    stripped = without_body(SIP)
    assert "body" not in stripped and stripped["body_sha256"] == "00"
    assert stripped["body_len"] == 2 and "body" in SIP
    plain = {"dir": "x"}
    assert without_body(plain) is plain
