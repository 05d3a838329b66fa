"""A fake OpenAI-compatible chat-completions server on 127.0.0.1, answering like POST /v1/chat/completions.

Served by the stdlib http.server in a thread, on a random free port. What it checks, as the OpenAI API does:
`Authorization: Bearer <key>` (401 with an OpenAI-shaped error otherwise), a JSON body with `model` (a string) and
`messages` (a non-empty list of {role, content}) (400 otherwise), the path (404 otherwise). Each request is recorded
(path, headers, body). Replies come from `script` in order, then `default`:
  Reply.answer(content)     a chat completion whose message content is `content`
  Reply.raw(body)           status 200 with this body as is (a malformed response)
  Reply.error(status, msg)  an OpenAI-shaped error {"error": {"message", "type", "code"}}
and any of them with `delay_seconds`, slept before answering (a slow server), or `drip_seconds`, slept before each
byte of the body (a server that answers but never finishes).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

COMPLETIONS_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    delay_seconds: float = 0.0
    # Bytes promised in Content-Length beyond the body sent (then the connection closes): a body cut short.
    missing_bytes: int = 0
    drip_seconds: float = 0.0

    @classmethod
    def answer(cls, content: str, *, model: str = "fake-model", delay_seconds: float = 0.0) -> Reply:
        completion = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1_780_000_000,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        return cls(200, json.dumps(completion).encode(), delay_seconds)

    @classmethod
    def ideas(cls, ideas: list[dict[str, str]], *, delay_seconds: float = 0.0) -> Reply:
        return cls.answer(json.dumps({"ideas": ideas}), delay_seconds=delay_seconds)

    @classmethod
    def raw(cls, body: bytes, *, delay_seconds: float = 0.0) -> Reply:
        return cls(200, body, delay_seconds)

    @classmethod
    def cut_short(cls, body: bytes) -> Reply:
        return cls(200, body, missing_bytes=100)

    @classmethod
    def dripping(cls, body: bytes, drip_seconds: float) -> Reply:
        return cls(200, body, drip_seconds=drip_seconds)

    @classmethod
    def error(cls, status: int, message: str, *, delay_seconds: float = 0.0) -> Reply:
        payload = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
        return cls(status, json.dumps(payload).encode(), delay_seconds)


@dataclass
class FakeChatCompletions:
    api_key: str
    script: list[Reply]
    default: Reply
    requests: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""

    @property
    def prompts(self) -> list[str]:
        """Every message content sent, in order."""
        return [m["content"] for request in self.requests for m in request["body"].get("messages", [])]


def _handler_for(fake: FakeChatCompletions) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class CompletionsHandler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def _send(self, reply: Reply) -> None:
            if reply.delay_seconds:
                time.sleep(reply.delay_seconds)
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply.body) + reply.missing_bytes))
                self.end_headers()
                if reply.drip_seconds:
                    for byte in range(len(reply.body)):
                        self.wfile.write(reply.body[byte : byte + 1])
                        self.wfile.flush()
                        time.sleep(reply.drip_seconds)
                else:
                    self.wfile.write(reply.body)
                if reply.missing_bytes:
                    self.close_connection = True
            except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting
                pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body or {}})
            if self.path != COMPLETIONS_PATH:
                self._send(Reply.error(404, f"Unknown request URL: POST {self.path}"))
                return
            if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                self._send(Reply.error(401, "Incorrect API key provided."))
                return
            messages = body.get("messages") if isinstance(body, dict) else None
            valid_messages = (
                isinstance(messages, list)
                and messages
                and all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in messages
                )
            )
            if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not valid_messages:
                self._send(Reply.error(400, "'model' and a non-empty 'messages' list are required."))
                return
            with lock:
                reply = fake.script.pop(0) if fake.script else fake.default
            self._send(reply)

    return CompletionsHandler


@contextmanager
def fake_chat_completions(api_key: str, script: list[Reply], default: Reply) -> Iterator[FakeChatCompletions]:
    """Serve the endpoint for the block; `base_url` (ending in /v1) is what TEAMU_LLM_URL takes."""
    fake = FakeChatCompletions(api_key, list(script), default)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(fake))
    server.daemon_threads = True
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, name="fake-chat-completions", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
