"""The online updater's HTTP endpoint: Mixpanel-shaped events in real time, and Supabase Database Webhooks.

POST /v1/events            one event (a JSON object), a JSON array of them (Mixpanel's import API), or JSON lines.
                           The batch is kept as a file and loaded by the Mixpanel file loader itself
                           (teamu_assets.ingest.loader.load_export_file): the same validation, deduplication,
                           quarantine and ledger row (raw_mixpanel.loaded_files) as an export file. The events'
                           trigger queues their users for the updater. Answers the load's counts.
POST /v1/supabase-webhook  a Database Webhook payload ({"type": "INSERT", "table": "votes", "record": {...}}) for a
                           vote or comment: queues the record's user (ml.online_queue) and wakes the updater. Where
                           the updater's triggers are installed on those tables this is a second, harmless wake-up;
                           where they can't be, it is the way in.
GET  /healthz              the queue's depth and the updater's progress (ml.online_cursor): updater.progress().

With a token (TEAMU_REALTIME_TOKEN), every request must carry `Authorization: Bearer <token>`; without one, the
endpoint only listens on a loopback address.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from teamu_assets.db.connection import connect
from teamu_assets.ingest.loader import IngestError, load_export_file
from teamu_assets.realtime.updater import CHANNEL, progress

log = logging.getLogger("teamu.realtime.http")

# Mixpanel's import API takes at most 2,000 events or 10 MB a request.
MAX_BODY_BYTES = 10 * 1024 * 1024
# Under the landing folder: load_landing_folder reads only the folder's own files, so it never loads these too.
HTTP_BATCH_FOLDER = "http"
WEBHOOK_TABLES = frozenset({"votes", "comments"})
MAX_USER_ID = 2**63 - 1


@dataclass(frozen=True)
class EndpointConfig:
    url: str  # the app database
    landing_dir: Path  # the Mixpanel landing folder; HTTP batches are kept in its http/ folder
    token: str | None


class RequestError(ValueError):
    """A request the endpoint refuses, with the HTTP status and the reason it answers."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def event_lines(body: bytes) -> bytes:
    """The body as JSON lines for the loader: a JSON array's elements one a line, a JSON object as one line, any
    other body as sent (the loader then validates, and quarantines, each of its lines as a file's)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    if isinstance(parsed, list):
        return b"".join(json.dumps(event, ensure_ascii=False).encode() + b"\n" for event in parsed)
    if isinstance(parsed, dict):
        return json.dumps(parsed, ensure_ascii=False).encode() + b"\n"
    return body


def load_events(config: EndpointConfig, body: bytes) -> dict[str, Any]:
    """Keep the batch as a file, load it as an export file is loaded, answer the counts."""
    folder = config.landing_dir / HTTP_BATCH_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    name = f"http-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:12]}.jsonl"
    staged = folder / f".{name}.tmp"
    staged.write_bytes(event_lines(body))
    os.replace(staged, folder / name)  # a file under its name is complete
    result = load_export_file(config.url, folder / name)
    counts = ("lines_read", "loaded", "duplicates", "quarantined")
    return {"source_file": result.source_file, **{key: value for key, value in asdict(result).items() if key in counts}}


def _user_id(record: Any) -> int:
    value = record.get("user_id") if isinstance(record, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_USER_ID:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"record.user_id is not a Teamu user id: {value!r}"[:120])
    return value


def queue_webhook(config: EndpointConfig, payload: Any) -> dict[str, Any]:
    """Queue the user of a vote or comment insert; other events and tables are acknowledged and ignored."""
    if not isinstance(payload, dict):
        raise RequestError(HTTPStatus.BAD_REQUEST, "the payload is not a JSON object")
    event, table = payload.get("type"), payload.get("table")
    if event != "INSERT" or table not in WEBHOOK_TABLES:
        return {"queued": 0, "ignored": f"{event} on {table}: only inserts into votes and comments are queued"}
    user_id = _user_id(payload.get("record"))
    with connect(config.url) as conn:
        conn.execute("insert into ml.online_queue (user_id, source) values (%s, %s)", (user_id, f"webhook:{table}"))
        conn.execute("select pg_notify(%s, '')", (CHANNEL,))
    return {"queued": 1, "user_id": user_id}


def health(config: EndpointConfig) -> dict[str, Any]:
    state = progress(config.url)
    if state is None:
        raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, "the online updater is not installed in this database")
    answer = asdict(state)
    if state.last_applied_at is not None:
        answer["last_applied_at"] = state.last_applied_at.isoformat()
    return answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], config: EndpointConfig) -> None:
        super().__init__(address, _Handler)
        self.config = config


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Seconds a client may take to send its request line, headers or body (they are read before the token is
    # checked): a client that trickles them holds a thread no longer than this.
    timeout = 30

    def _answer(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorize(self) -> None:
        token = self.server.config.token
        if token is None:
            return
        offered = self.headers.get("Authorization", "")
        if not hmac.compare_digest(offered.encode(), f"Bearer {token}".encode()):
            raise RequestError(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token")

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not (length.isascii() and length.isdigit()):
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        if int(length) > MAX_BODY_BYTES:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY_BYTES} bytes")
        return self.rfile.read(int(length))

    def _handle(self, route: dict[str, Any]) -> None:
        try:
            self._authorize()
            handler = route.get(self.path.split("?", 1)[0])
            if handler is None:
                raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint: {self.path[:80]}")
            status, body = handler()
        except RequestError as refused:
            status, body = refused.status, {"error": str(refused)}
            # The body may be unread (a refused token, endpoint or length): what is left of it must not be read
            # as the connection's next request.
            self.close_connection = True
        except IngestError as failed:
            status, body = HTTPStatus.UNPROCESSABLE_ENTITY, {"error": str(failed)}
        except Exception:
            log.exception("%s %s failed", self.command, self.path)
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error (see the updater's log)"}
        self._answer(status, body)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        config = self.server.config

        def events() -> tuple[HTTPStatus, dict[str, Any]]:
            return HTTPStatus.OK, load_events(config, self._body())

        def webhook() -> tuple[HTTPStatus, dict[str, Any]]:
            try:
                payload = json.loads(self._body())
            except (ValueError, RecursionError):
                raise RequestError(HTTPStatus.BAD_REQUEST, "the payload is not JSON (or nested too deeply)") from None
            return HTTPStatus.ACCEPTED, queue_webhook(config, payload)

        self._handle({"/v1/events": events, "/v1/supabase-webhook": webhook})

    def do_GET(self) -> None:  # noqa: N802
        self._handle({"/healthz": lambda: (HTTPStatus.OK, health(self.server.config))})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        log.debug(format, *args)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return host == "localhost"


def serve(config: EndpointConfig, host: str, port: int) -> ThreadingHTTPServer:
    """Start the endpoint in a thread; the caller calls shutdown(). Refuses a non-loopback address without a
    token: anyone who can reach it could write events."""
    if config.token is None and not _is_loopback(host):
        raise ValueError(f"listening on {host} needs a token (TEAMU_REALTIME_TOKEN): only loopback may go without")
    server = _Server((host, port), config)
    threading.Thread(target=server.serve_forever, name="teamu-realtime-http", daemon=True).start()
    log.info("HTTP endpoint on http://%s:%d (POST /v1/events, POST /v1/supabase-webhook, GET /healthz)", host, port)
    return server
