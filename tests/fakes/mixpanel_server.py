"""A fake Mixpanel raw export API on 127.0.0.1, answering like data.mixpanel.com/api/2.0/export.

Served by the stdlib http.server in a thread, on a random free port. What it checks, as Mixpanel does:
HTTP Basic auth with the service account (401 otherwise), project_id matching (required with a service
account), from_date/to_date as yyyy-mm-dd (400 otherwise), an optional `event` JSON array filter.
The response is JSON lines, one event a line; the day of an event is its `properties.time` in UTC.
Lines given as strings are served verbatim (for malformed input) on every request, unfiltered. With
`cut_short_bytes`, the answer's Content-Length promises that many bytes more than are sent before the connection
closes (a transfer cut short).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

EXPORT_PATH = "/api/2.0/export"


@dataclass
class FakeMixpanel:
    username: str
    secret: str
    project_id: str
    events: Sequence[dict[str, Any] | str]
    requests: list[dict[str, list[str]]] = field(default_factory=list)
    base_url: str = ""
    cut_short_bytes: int = 0


def _event_day(event: dict[str, Any]) -> date:
    return datetime.fromtimestamp(event["properties"]["time"], tz=UTC).date()


def _handler_for(fake: FakeMixpanel) -> type[BaseHTTPRequestHandler]:
    expected_auth = "Basic " + base64.b64encode(f"{fake.username}:{fake.secret}".encode()).decode()

    class ExportHandler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def _reply(self, status: int, body: bytes, content_type: str, missing_bytes: int = 0) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body) + missing_bytes))
            self.end_headers()
            self.wfile.write(body)
            if missing_bytes:
                self.close_connection = True

        def _error(self, status: int, message: str) -> None:
            body = json.dumps({"error": message, "status": "error"}).encode()
            self._reply(status, body, "application/json")

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path != EXPORT_PATH:
                self._error(404, f"no such endpoint {url.path}")
                return
            query = parse_qs(url.query)
            fake.requests.append(query)
            if self.headers.get("Authorization") != expected_auth:
                self._error(401, "Invalid service account credentials")
                return
            if query.get("project_id") != [fake.project_id]:
                self._error(400, "project_id is required and must match the service account's project")
                return
            try:
                from_date = date.fromisoformat(query["from_date"][0])
                to_date = date.fromisoformat(query["to_date"][0])
                wanted = set(json.loads(query["event"][0])) if "event" in query else None
            except (KeyError, ValueError) as exc:
                self._error(400, f"bad request: {exc}")
                return

            def is_served(event: dict[str, Any] | str) -> bool:
                if isinstance(event, str):
                    return True
                in_range = from_date <= _event_day(event) <= to_date
                return in_range and (wanted is None or event["event"] in wanted)

            served = [event for event in fake.events if is_served(event)]
            lines = [event if isinstance(event, str) else json.dumps(event) for event in served]
            body = "".join(line + "\n" for line in lines).encode()
            self._reply(200, body, "text/plain; charset=utf-8", fake.cut_short_bytes)

    return ExportHandler


@contextmanager
def fake_mixpanel(
    username: str, secret: str, project_id: str, events: Sequence[dict[str, Any] | str]
) -> Iterator[FakeMixpanel]:
    """Serve the export API for the block; `base_url` is what export_live takes as api_base."""
    fake = FakeMixpanel(username, secret, project_id, events)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(fake))
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-mixpanel", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
