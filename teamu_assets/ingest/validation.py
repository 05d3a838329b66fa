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
  The result must fall in [2000-01-01, 2100-01-01) UTC.
- Post ids are not looked up: an unknown post id is valid here, dbt filters it later. Event order within a
  file doesn't matter either.
- A line must be storable as Postgres jsonb: NaN/Infinity literals, the \\u0000 escape and lone UTF-16
  surrogate escapes are valid for Python's json but not for jsonb, so they are rejected here rather than
  failing the whole file's load.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any, NamedTuple

POST_VIEWED = "Post Viewed"
RECOMMENDATION_SHOWN = "Recommendation Shown"
RECOMMENDATION_CLICKED = "Recommendation Clicked"
TEAMU_EVENTS = (POST_VIEWED, RECOMMENDATION_SHOWN, RECOMMENDATION_CLICKED)

MIN_EPOCH_SECONDS = 946_684_800  # 2000-01-01T00:00:00Z
MAX_EPOCH_SECONDS = 4_102_444_800  # 2100-01-01T00:00:00Z, exclusive
MILLISECONDS_FROM = 100_000_000_000  # a time at or above this is in milliseconds
MAX_BIGINT = 2**63 - 1
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


# A decoder built once: json.loads would build one per call when given parse_constant.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


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


def _require_text(properties: dict[str, Any], key: str) -> str:
    value = properties.get(key)
    if value is None:
        raise InvalidLine(f"missing properties.{key}")
    if type(value) is not str or not value:
        raise InvalidLine(f"properties.{key} is not a non-empty string: {_shown(value)}")
    return value


def _check_post_viewed(properties: dict[str, Any]) -> None:
    _require_id(properties, "post_id")
    duration = properties.get("duration_ms")
    if duration is None:
        raise InvalidLine("missing properties.duration_ms")
    if type(duration) not in (int, float) or not math.isfinite(duration):
        raise InvalidLine(f"properties.duration_ms is not a number: {_shown(duration)}")
    if duration < 0:
        raise InvalidLine(f"properties.duration_ms is negative: {_shown(duration)}")


def _check_recommendation_shown(properties: dict[str, Any]) -> None:
    post_ids = properties.get("post_ids")
    if post_ids is None:
        raise InvalidLine("missing properties.post_ids")
    # map(type) and min/max run in C: this list is the longest thing the validator walks.
    if type(post_ids) is not list or (
        post_ids and ({*map(type, post_ids)} != {int} or min(post_ids) < 0 or max(post_ids) > MAX_BIGINT)
    ):
        raise InvalidLine(f"properties.post_ids is not a list of integer ids: {_shown(post_ids)}")
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


def _epoch_seconds(value: Any) -> float:
    value_type = type(value)
    if value_type is not int and (value_type is not float or not math.isfinite(value)):
        raise InvalidLine(f"properties.time is not a number: {_shown(value)}")
    seconds = value / 1000 if value >= MILLISECONDS_FROM else value
    if not MIN_EPOCH_SECONDS <= seconds < MAX_EPOCH_SECONDS:
        raise InvalidLine(f"properties.time is out of range (years 2000-2099): {_shown(value)}")
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


def validate_line(text: str) -> ValidEvent:
    """The event a line holds, or InvalidLine with the reason it can't be loaded."""
    try:
        parsed = _parse_json(text)
    except json.JSONDecodeError as exc:
        raise InvalidLine(f"malformed JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise InvalidLine("malformed JSON: nested too deeply") from None
    if type(parsed) is not dict:
        raise InvalidLine(f"line is not a JSON object but {type(parsed).__name__}")
    event = parsed.get("event")
    if event is None:
        raise InvalidLine("missing event")
    if type(event) is not str or not event:
        raise InvalidLine(f"event is not a non-empty string: {_shown(event)}")
    properties = parsed.get("properties")
    if properties is None:
        raise InvalidLine("missing properties")
    if type(properties) is not dict:
        raise InvalidLine(f"properties is not an object: {_shown(properties)}")
    distinct_id = properties.get("distinct_id")
    if distinct_id is None:
        raise InvalidLine("missing properties.distinct_id")
    user_id = _user_id(distinct_id)
    time = properties.get("time")
    if time is None:
        raise InvalidLine("missing properties.time")
    seconds = _epoch_seconds(time)
    insert_id = _require_text(properties, "$insert_id")
    check = _EVENT_CHECKS.get(event)
    if check is not None:
        check(properties)
    if "\\u" in text:
        _check_storable_as_jsonb(parsed)
    return ValidEvent(event, user_id, insert_id, seconds)
