"""Validation of one line of a Mixpanel raw export (JSON lines), with a precise reason for every rejection.

Decisions this module makes (docs/DATA_CONTRACT.md repeats them):
- The three Teamu events ("Post Viewed", "Recommendation Shown", "Recommendation Clicked") get their own
  property checks. Any other event name is accepted into raw_mixpanel.events after the checks every
  event gets (distinct_id, time, $insert_id): raw keeps what Mixpanel sent, and dbt staging picks the
  events it models.
- distinct_id must be a Teamu user id: a JSON integer or a string of ASCII digits without a leading zero,
  within bigint. Anonymous ids ("$device:...") are rejected: they can't be joined to a user.
- properties.time is epoch seconds (int or float). Mixpanel's export with time_in_ms=true gives milliseconds:
  a value of 1e11 or more is read as milliseconds (1e11 seconds is the year 5138, 1e11 ms is 1973).
  The result must fall in [2000-01-01, now + 1 day]: anything else is a broken client clock, and a time far
  in the future would sit above every incremental watermark downstream.
- Post ids are not looked up: an unknown post id is valid here, dbt filters it later. Event order within a
  file doesn't matter either. But a property that something downstream casts must survive the cast: a
  post_id on a recommendation event (teamu_assets/db/features.py casts it to bigint) is an integer id even
  where it is optional, and duration_ms fits the 15 digits stg_mixpanel__events reads.
- A line must be storable in raw_mixpanel.events, or it would fail the whole file's load. Rejected here:
  NaN/Infinity literals, the \\u0000 escape and lone UTF-16 surrogate escapes (valid for Python's json, not
  for jsonb); a number Python reads as infinity (1e400) or Postgres' numeric refuses (0e-20000); an integer
  too long for Python (5,000 digits); an event name or $insert_id too long for the primary key's btree (both
  limited to MAX_KEY_TEXT_BYTES, far above Mixpanel's own limits).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from teamu_assets.contract import POST_VIEWED, RECOMMENDATION_CLICKED, RECOMMENDATION_SHOWN

MIN_EPOCH_SECONDS = 946_684_800  # 2000-01-01T00:00:00Z
FUTURE_TOLERANCE_SECONDS = 86_400  # client clocks run ahead; a day more is a broken clock
MILLISECONDS_FROM = 100_000_000_000  # a time at or above this is in milliseconds
MAX_BIGINT = 2**63 - 1
# Event names and $insert_ids go into raw_mixpanel.events' primary key, whose btree refuses an entry over
# 2,704 bytes and with it the file's transaction. Two fields of 1,024 bytes, a distinct_id of at most 19
# digits and a timestamp stay under that; Mixpanel itself caps event names at 255 characters (1,020 bytes of
# UTF-8 at most) and insert ids at 36, so no real event comes near.
MAX_KEY_TEXT_BYTES = 1024
# Postgres' numeric refuses more than 16,383 digits after the point and 131,072 before it. No JSON encoder
# writes a float longer than ~25 characters or with an exponent past float64's +-324, so a number with a
# fraction or exponent is held to 100 characters and an exponent of at most 1,000 either way. Integers are
# bounded by Python's own 4,300-digit limit, well inside what numeric takes.
MAX_FLOAT_LITERAL_CHARS = 100
MAX_FLOAT_EXPONENT = 1000
# stg_mixpanel__events reads duration_ms with at most 15 integer digits (NULL otherwise).
MAX_DURATION_MS = 10**15
_REASON_VALUE_CHARS = 40


class InvalidLine(Exception):
    """A line that goes to raw_mixpanel.events_quarantine; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ValidEvent(NamedTuple):
    event: str
    distinct_id: str
    insert_id: str
    epoch_seconds: float


def _reject_constant(name: str) -> Any:
    raise InvalidLine(f"malformed JSON: {name} is not valid JSON")


def _parse_float(literal: str) -> float:
    """A number with a fraction or exponent, kept only when Python and Postgres both store it: Python reads
    1e400 as infinity, and Postgres' numeric refuses 0e-20000 or a fraction of 20,000 digits (which Python
    reads as plain floats), failing the whole file."""
    value = float(literal)
    exponent = literal.lower().partition("e")[2]
    if (
        len(literal) > MAX_FLOAT_LITERAL_CHARS
        or not math.isfinite(value)
        or (exponent and abs(int(exponent)) > MAX_FLOAT_EXPONENT)
    ):
        raise InvalidLine(f"number out of range: {_shown(literal)}")
    return value


# A decoder built once: json.loads would build one per call when given parse_constant. Integers keep the C
# scanner's fast path (no parse_int hook): they are the common case, and too long ones fail loudly below.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_parse_float)


def decode_line(raw: bytes) -> str:
    """The line as text; export files are UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidLine(f"invalid UTF-8: {exc.reason} at byte {exc.start}") from None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _REASON_VALUE_CHARS else text[: _REASON_VALUE_CHARS - 3] + "..."


def _is_id(value: Any) -> bool:
    # type() rather than isinstance(): bool is an int subclass and True is no id.
    return type(value) is int and 0 <= value <= MAX_BIGINT


def _require_id(properties: dict[str, Any], key: str) -> None:
    value = properties.get(key)
    if value is None:
        raise InvalidLine(f"missing properties.{key}")
    if not _is_id(value):
        raise InvalidLine(f"properties.{key} is not an integer id: {_shown(value)}")


def _optional_id(properties: dict[str, Any], key: str) -> None:
    value = properties.get(key)
    if value is not None and not _is_id(value):
        raise InvalidLine(f"properties.{key} is not an integer id: {_shown(value)}")


def _require_text(properties: dict[str, Any], key: str) -> str:
    value = properties.get(key)
    if value is None:
        raise InvalidLine(f"missing properties.{key}")
    if type(value) is not str or not value:
        raise InvalidLine(f"properties.{key} is not a non-empty string: {_shown(value)}")
    return value


def _check_key_text(name: str, value: str) -> None:
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_TEXT_BYTES:
        raise InvalidLine(f"{name} is longer than {MAX_KEY_TEXT_BYTES} bytes ({size} bytes): {_shown(value)}")


def _check_post_viewed(properties: dict[str, Any]) -> None:
    _require_id(properties, "post_id")
    duration = properties.get("duration_ms")
    if duration is None:
        raise InvalidLine("missing properties.duration_ms")
    if type(duration) not in (int, float) or not math.isfinite(duration):
        raise InvalidLine(f"properties.duration_ms is not a number: {_shown(duration)}")
    if duration < 0:
        raise InvalidLine(f"properties.duration_ms is negative: {_shown(duration)}")
    if duration >= MAX_DURATION_MS:
        raise InvalidLine(f"properties.duration_ms is out of range (below 1e15): {_shown(duration)}")


def _check_recommendation_shown(properties: dict[str, Any]) -> None:
    post_ids = properties.get("post_ids")
    if post_ids is None:
        raise InvalidLine("missing properties.post_ids")
    # map(type) and min/max run in C: this list is the longest thing the validator walks.
    if type(post_ids) is not list or (
        post_ids and ({*map(type, post_ids)} != {int} or min(post_ids) < 0 or max(post_ids) > MAX_BIGINT)
    ):
        raise InvalidLine(f"properties.post_ids is not a list of integer ids: {_shown(post_ids)}")
    # Not part of the event, but read with the clicks' post_id column, which is cast to bigint.
    _optional_id(properties, "post_id")
    _require_text(properties, "request_id")


def _check_recommendation_clicked(properties: dict[str, Any]) -> None:
    _require_id(properties, "post_id")
    _require_text(properties, "request_id")


_EVENT_CHECKS = {
    POST_VIEWED: _check_post_viewed,
    RECOMMENDATION_SHOWN: _check_recommendation_shown,
    RECOMMENDATION_CLICKED: _check_recommendation_clicked,
}


def _user_id(value: Any) -> str:
    if type(value) is str:
        # Canonical digits only, so "42" and "042" can't become two users that dbt's cast merges.
        canonical = value.isascii() and value.isdigit() and (value[0] != "0" or value == "0")
        if canonical and int(value) <= MAX_BIGINT:
            return value
    elif _is_id(value):
        return str(value)
    raise InvalidLine(f"properties.distinct_id is not a Teamu user id (digits): {_shown(value)}")


def _epoch_seconds(value: Any, latest: float) -> float:
    value_type = type(value)
    if value_type is not int and (value_type is not float or not math.isfinite(value)):
        raise InvalidLine(f"properties.time is not a number: {_shown(value)}")
    seconds = value / 1000 if value >= MILLISECONDS_FROM else value
    if not MIN_EPOCH_SECONDS <= seconds <= latest:
        raise InvalidLine(f"properties.time is out of range (2000-01-01 to 1 day from now): {_shown(value)}")
    return seconds


def _strings(value: Any) -> Iterator[str]:
    """Every string in a parsed JSON value, object keys included."""
    if type(value) is str:
        yield value
    elif type(value) is dict:
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif type(value) is list:
        for item in value:
            yield from _strings(item)


def _check_storable_as_jsonb(parsed: Any) -> None:
    # Escapes that decode to what jsonb refuses: U+0000, and lone surrogates (which utf-8 can't encode).
    for text in _strings(parsed):
        if "\x00" in text:
            raise InvalidLine("JSON contains \\u0000, which Postgres jsonb cannot store")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidLine("JSON contains a lone surrogate escape, which jsonb cannot store") from None


def _parse_json(text: str) -> Any:
    """json.loads' verdict, faster: raw_decode skips decode()'s two whitespace regex matches, and only a line
    it can't take whole (surrounding whitespace, an error) goes through decode()."""
    try:
        parsed, end = _DECODER.raw_decode(text)
    except json.JSONDecodeError:
        return _DECODER.decode(text)
    return parsed if end == len(text) else _DECODER.decode(text)


def validate_line(text: str, latest_epoch_seconds: float | None = None) -> ValidEvent:
    """The event a line holds, or InvalidLine with the reason it can't be loaded. Times after
    latest_epoch_seconds are refused (default: now + FUTURE_TOLERANCE_SECONDS; a loader passes one value for
    a whole file, so the verdict doesn't depend on when in the file a line sits)."""
    if latest_epoch_seconds is None:
        latest_epoch_seconds = time.time() + FUTURE_TOLERANCE_SECONDS
    try:
        parsed = _parse_json(text)
    except json.JSONDecodeError as exc:
        raise InvalidLine(f"malformed JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise InvalidLine("malformed JSON: nested too deeply") from None
    except ValueError:
        # The scanner's only other ValueError: an integer longer than Python converts (int_max_str_digits).
        limit = sys.get_int_max_str_digits()
        raise InvalidLine(f"number out of range: an integer of more than {limit} digits") from None
    if type(parsed) is not dict:
        raise InvalidLine(f"line is not a JSON object but {type(parsed).__name__}")
    event = parsed.get("event")
    if event is None:
        raise InvalidLine("missing event")
    if type(event) is not str or not event:
        raise InvalidLine(f"event is not a non-empty string: {_shown(event)}")
    _check_key_text("event", event)
    properties = parsed.get("properties")
    if properties is None:
        raise InvalidLine("missing properties")
    if type(properties) is not dict:
        raise InvalidLine(f"properties is not an object: {_shown(properties)}")
    distinct_id = properties.get("distinct_id")
    if distinct_id is None:
        raise InvalidLine("missing properties.distinct_id")
    user_id = _user_id(distinct_id)
    event_time = properties.get("time")
    if event_time is None:
        raise InvalidLine("missing properties.time")
    seconds = _epoch_seconds(event_time, latest_epoch_seconds)
    insert_id = _require_text(properties, "$insert_id")
    _check_key_text("properties.$insert_id", insert_id)
    check = _EVENT_CHECKS.get(event)
    if check is not None:
        check(properties)
    if "\\u" in text:
        _check_storable_as_jsonb(parsed)
    return ValidEvent(event, user_id, insert_id, seconds)
