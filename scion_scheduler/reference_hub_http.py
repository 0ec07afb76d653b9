"""The reference hub's HTTP adapter: requests in, `ReferenceHub` decisions out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from scion_scheduler.reference_hub import ReferenceHub

MAX_BODY_BYTES = 1_000_000


class ReferenceHubHandler(BaseHTTPRequestHandler):
    """Serves one request of a `ReferenceHub` (set as `reference_hub` on a subclass)."""

    reference_hub: ReferenceHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Calls are logged by the hub itself, as structured lines."""

    def _read_body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
            return None
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), {})

    def _send(self, status: int, data: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The caller gave up or died (a killed worker); the call is recorded all the same.
            self.close_connection = True

    def _grove(self) -> bool:
        """Serve a request under `/api/v1/groves/`; False for any other path."""
        if not self.path.startswith("/api/v1/groves/"):
            return False
        raw = self._read_body()
        if raw is not None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            self._send(*self.reference_hub.handle_grove(self.command, self.path, headers, raw))
        return True

    def _plain(self) -> None:
        if self._grove():
            return
        raw = self._read_body()
        if raw is None:
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        self._reply(self.reference_hub.handle_plain(unquote(self.path), headers, raw, self.command),
                    {"status": "recorded"})

    def do_GET(self) -> None:
        """`GET /_reference/calls`: every call recorded, as JSON; the grove routes; any other
        path is a plain call."""
        if self.path == "/_reference/calls":
            self._reply(HTTPStatus.OK, [c.to_dict() for c in self.reference_hub.calls])
        elif not self.path.startswith("/_reference/"):
            self._plain()
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": "not found"})

    # An `http` action may use any method; the plain calls record them all.
    do_PUT = do_PATCH = do_DELETE = _plain

    def do_POST(self) -> None:
        """The grove routes (fire endpoints included), and the control endpoints under
        `/_reference/`."""
        if self._grove():
            return
        raw = self._read_body()
        if raw is None:
            return
        if not self.path.startswith("/_reference/"):
            headers = {k.lower(): v for k, v in self.headers.items()}
            self._reply(self.reference_hub.handle_plain(unquote(self.path), headers, raw, "POST"),
                        {"status": "recorded"})
            return
        try:
            control = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "body is not JSON"})
            return
        hub = self.reference_hub
        if self.path == "/_reference/behaviour" and isinstance(control, dict):
            hub.set_behaviour(control.get("status"), delay=float(control.get("delay", 0.0)),
                              item_id=control.get("item_id"), times=control.get("times"))
        elif (
            self.path == "/_reference/gone" and isinstance(control, dict) and control.get("item_id")
        ):
            hub.mark_gone(str(control["item_id"]))
        elif (
            self.path == "/_reference/hold" and isinstance(control, dict) and control.get("item_id")
        ):
            hub.hold(str(control["item_id"]))
        elif (
            self.path == "/_reference/release"
            and isinstance(control, dict)
            and control.get("item_id")
        ):
            hub.release(str(control["item_id"]))
        elif self.path == "/_reference/reset":
            hub.reset()
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        self._reply(HTTPStatus.OK, {"ok": True})
