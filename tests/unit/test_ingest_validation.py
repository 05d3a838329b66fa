"""The export-line validator: what it accepts, and the exact reason for each kind of line it rejects."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from teamu_assets.ingest.validation import (
    FUTURE_TOLERANCE_SECONDS,
    MAX_KEY_TEXT_BYTES,
    InvalidLine,
    ValidEvent,
    decode_line,
    validate_line,
)

TIME = 1_717_200_000  # 2024-06-01T00:00:00Z


def event_line(event: str = "Post Viewed", **properties: Any) -> str:
    base: dict[str, Any] = {"time": TIME, "distinct_id": "42", "$insert_id": "ins-1"}
    if event == "Post Viewed":
        base |= {"post_id": 7, "duration_ms": 1500}
    elif event == "Recommendation Shown":
        base |= {"post_ids": [7, 8, 9], "request_id": "req-1", "model_version": "m1"}
    elif event == "Recommendation Clicked":
        base |= {"post_id": 7, "request_id": "req-1"}
    base |= properties
    return json.dumps({"event": event, "properties": {k: v for k, v in base.items() if v is not ...}})


def reason_for(line: str, latest: float | None = None) -> str:
    with pytest.raises(InvalidLine) as rejected:
        validate_line(line, latest)
    return rejected.value.reason


@pytest.mark.parametrize("event", ["Post Viewed", "Recommendation Shown", "Recommendation Clicked"])
def test_each_teamu_event_is_accepted(event: str) -> None:
    assert validate_line(event_line(event)) == ValidEvent(event, "42", "ins-1", TIME)


def test_an_unknown_event_is_accepted_with_the_common_checks() -> None:
    assert validate_line(event_line("Signed Up")) == ValidEvent("Signed Up", "42", "ins-1", TIME)
    assert reason_for(event_line("Signed Up", distinct_id="$device:abc")).startswith(
        "properties.distinct_id is not a Teamu user id"
    )


def test_an_unknown_post_id_and_an_integer_distinct_id_are_fine() -> None:
    assert validate_line(event_line(post_id=987_654_321, distinct_id=42)).distinct_id == "42"


def test_surrounding_whitespace_is_fine_and_trailing_data_is_not() -> None:
    assert validate_line(" \t" + event_line() + "  ").insert_id == "ins-1"
    assert reason_for(event_line() + " {}").startswith("malformed JSON: Extra data")


def test_time_in_milliseconds_and_fractional_seconds() -> None:
    assert validate_line(event_line(time=TIME * 1000 + 250)).epoch_seconds == pytest.approx(TIME + 0.25)
    assert validate_line(event_line(time=TIME + 0.5)).epoch_seconds == TIME + 0.5


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"event": "Post Viewed" "properties": {}}', "malformed JSON: Expecting ',' delimiter (column 25)"),
        ('{"event": "Post Viewed", "properties": {"time": NaN}}', "malformed JSON: NaN is not valid JSON"),
        ('["Post Viewed"]', "line is not a JSON object but list"),
        ('{"properties": {}}', "missing event"),
        ('{"event": "", "properties": {}}', "event is not a non-empty string: ''"),
        ('{"event": "Post Viewed"}', "missing properties"),
        ('{"event": "Post Viewed", "properties": [1]}', "properties is not an object: [1]"),
    ],
)
def test_envelope_reasons(line: str, reason: str) -> None:
    assert reason_for(line) == reason


@pytest.mark.parametrize(
    ("properties", "reason"),
    [
        ({"distinct_id": ...}, "missing properties.distinct_id"),
        ({"distinct_id": "$device:a"}, "properties.distinct_id is not a Teamu user id (digits): '$device:a'"),
        ({"distinct_id": "042"}, "properties.distinct_id is not a Teamu user id (digits): '042'"),
        ({"distinct_id": "٤٢"}, "properties.distinct_id is not a Teamu user id (digits): '٤٢'"),
        ({"distinct_id": True}, "properties.distinct_id is not a Teamu user id (digits): True"),
        ({"time": ...}, "missing properties.time"),
        ({"time": "2024-06-01"}, "properties.time is not a number: '2024-06-01'"),
        ({"time": 86_400}, "properties.time is out of range (2000-01-01 to 1 day from now): 86400"),
        ({"time": 5_000_000_000}, "properties.time is out of range (2000-01-01 to 1 day from now): 5000000000"),
        ({"$insert_id": ...}, "missing properties.$insert_id"),
        ({"$insert_id": ""}, "properties.$insert_id is not a non-empty string: ''"),
        ({"$insert_id": 12}, "properties.$insert_id is not a non-empty string: 12"),
        ({"post_id": ...}, "missing properties.post_id"),
        ({"post_id": "7"}, "properties.post_id is not an integer id: '7'"),
        ({"post_id": 7.0}, "properties.post_id is not an integer id: 7.0"),
        ({"duration_ms": ...}, "missing properties.duration_ms"),
        ({"duration_ms": -1}, "properties.duration_ms is negative: -1"),
        ({"duration_ms": "long"}, "properties.duration_ms is not a number: 'long'"),
        ({"duration_ms": 10**15}, "properties.duration_ms is out of range (below 1e15): 1000000000000000"),
    ],
)
def test_post_viewed_reasons(properties: dict[str, Any], reason: str) -> None:
    assert reason_for(event_line("Post Viewed", **properties)) == reason


SHOWN = "Recommendation Shown"


@pytest.mark.parametrize(
    ("event", "properties", "reason"),
    [
        (SHOWN, {"post_ids": ...}, "missing properties.post_ids"),
        (SHOWN, {"post_ids": [1, "2"]}, "properties.post_ids is not a list of integer ids: [1, '2']"),
        (SHOWN, {"post_ids": 3}, "properties.post_ids is not a list of integer ids: 3"),
        (SHOWN, {"request_id": ...}, "missing properties.request_id"),
        # Optional on a shown event, but read with the clicks' post_id, which evaluation casts to bigint.
        (SHOWN, {"post_id": "x"}, "properties.post_id is not an integer id: 'x'"),
        (SHOWN, {"post_id": 7.0}, "properties.post_id is not an integer id: 7.0"),
        ("Recommendation Clicked", {"request_id": 5}, "properties.request_id is not a non-empty string: 5"),
        ("Recommendation Clicked", {"post_id": ...}, "missing properties.post_id"),
    ],
)
def test_recommendation_reasons(event: str, properties: dict[str, Any], reason: str) -> None:
    assert reason_for(event_line(event, **properties)) == reason


def test_nesting_too_deep_for_the_parser_is_a_reason_not_a_crash() -> None:
    assert reason_for("[" * 100_000 + "]" * 100_000) == "malformed JSON: nested too deeply"


def test_values_in_reasons_are_shortened() -> None:
    reason = reason_for(event_line(distinct_id="x" * 500))
    assert reason.endswith("...") and len(reason) < 120


def test_escapes_postgres_jsonb_refuses_are_rejected() -> None:
    assert reason_for(event_line(note="a\x00b")) == "JSON contains \\u0000, which Postgres jsonb cannot store"
    lone_surrogate = event_line(note="x").replace('"x"', '"\\ud800"')
    assert reason_for(lone_surrogate) == "JSON contains a lone surrogate escape, which jsonb cannot store"
    # A proper surrogate pair (an emoji escaped) is fine.
    assert validate_line(event_line(note="\U0001f600")).insert_id == "ins-1"


def test_decode_line_names_the_bad_byte() -> None:
    assert decode_line("é".encode()) == "é"
    with pytest.raises(InvalidLine) as rejected:
        decode_line(b'{"event": "\xff"}')
    assert rejected.value.reason == "invalid UTF-8: invalid start byte at byte 11"


def test_a_shown_event_with_an_integer_post_id_or_none_is_fine() -> None:
    assert validate_line(event_line(SHOWN, post_id=7)).event == SHOWN
    assert validate_line(event_line(SHOWN, post_id=None)).event == SHOWN


def test_times_before_2000_or_more_than_a_day_ahead_are_refused() -> None:
    now = time.time()
    assert validate_line(event_line(time=int(now) + 3600)).epoch_seconds == int(now) + 3600
    ahead = int(now + FUTURE_TOLERANCE_SECONDS + 3600)
    assert reason_for(event_line(time=ahead)).startswith("properties.time is out of range (2000-01-01 to 1 day")
    assert reason_for(event_line(time=ahead * 1000)).startswith("properties.time is out of range")
    assert reason_for(event_line(time=946_684_799)).startswith("properties.time is out of range")
    # The loader passes one bound for a whole file.
    assert reason_for(event_line(), latest=TIME - 1).startswith("properties.time is out of range")


@pytest.mark.parametrize(
    ("literal", "reason"),
    [
        ("1e200000", "number out of range: '1e200000'"),  # infinity to Python
        ("-1e400", "number out of range: '-1e400'"),
        ("0e-20000", "number out of range: '0e-20000'"),  # Postgres' numeric refuses it
        ("1." + "0" * 20_000, "number out of range: '1.0000000000000000000000000000000000..."),
        ("9" * 5000, "number out of range: an integer of more than 4300 digits"),
    ],
)
def test_numbers_python_or_postgres_cannot_hold_are_refused(literal: str, reason: str) -> None:
    line = event_line(note="N").replace('"N"', literal)
    assert reason_for(line) == reason


@pytest.mark.parametrize("literal", ["1e-400", "1.5e3", "-0.0", "0e999", "9" * 4000])
def test_numbers_both_can_hold_are_fine(literal: str) -> None:
    assert validate_line(event_line(note="N").replace('"N"', literal)).insert_id == "ins-1"


def test_key_texts_too_long_for_the_primary_key_are_refused() -> None:
    assert reason_for(event_line(**{"$insert_id": "i" * 3000})).startswith(
        f"properties.$insert_id is longer than {MAX_KEY_TEXT_BYTES} bytes (3000 bytes): 'iii"
    )
    assert reason_for(event_line("é" * 600)).startswith(f"event is longer than {MAX_KEY_TEXT_BYTES} bytes (1200 bytes)")
    # Mixpanel's own caps (255 characters for a name, 36 for an insert id) fit, in any script.
    assert validate_line(event_line("😀" * 255, **{"$insert_id": "i" * 36})).event == "😀" * 255
