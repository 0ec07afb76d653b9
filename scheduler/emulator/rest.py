"""The REST face of the emulator: Cloud Scheduler v1's HTTP/JSON API, as gcloud, the client
libraries' REST transports and Terraform speak it, over the same `CloudSchedulerService` (and so
the same store, validation, codes and messages) as the gRPC face.

Each route names the RPC it stands for and where the request's fields come from (the URL path,
the query string, the body), as the `google.api.http` annotations of
google/cloud/scheduler/v1/cloudscheduler.proto do. Requests are parsed into the RPC's protobuf
request and responses written with `google.protobuf.json_format`, so the JSON is the service's
own: camelCase, durations as "5s", RFC 3339 timestamps, enums by name (by number when the
client asks with `$alt=json;enum-encoding=int`, as the Python REST transport does). Errors are
Google's JSON error body, `{"error": {"code", "message", "status", "details"}}`.

The same port publishes the emulator's OIDC signing key (`scheduler.emulator.oidc`).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from google.api_core import exceptions as gexc
from google.protobuf import json_format
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from scheduler.emulator.oidc import JWKS_PATH, PEM_CERTS_PATH, TokenIssuer
from scheduler.emulator.service import CloudSchedulerService
from scheduler.emulator.validation import ApiError

# Query parameters every Google API accepts and that are no field of the request
# (https://cloud.google.com/apis/docs/system-parameters).
SYSTEM_PARAMETERS = frozenset({"alt", "$alt", "fields", "$fields", "prettyPrint", "key",
                               "$.xgafv", "quotaUser", "access_token", "callback",
                               "upload_protocol", "uploadType", "oauth_token"})

STARTUP_TIMEOUT = 10.0

_LOCATION = r"projects/[^/]+/locations/[^/]+"
_JOB = rf"{_LOCATION}/jobs/[^/]+?"


@dataclass(frozen=True)
class Route:
    """One `google.api.http` binding: `verb` on `pattern` (whose one group is the request
    field `field`) calls `rpc`; the body is the request field `body` ("*": the whole request,
    None: no body)."""

    verb: str
    pattern: re.Pattern[str]
    rpc: str
    field: str
    body: str | None = None


def _route(verb: str, pattern: str, suffix: str, rpc: str, field: str,
           body: str | None = None) -> Route:
    pattern_re = re.compile(rf"^/v1/(?P<path>{pattern}){re.escape(suffix)}$")
    return Route(verb, pattern_re, rpc, field, body)


ROUTES = (
    _route("GET", r"projects/[^/]+", "/locations", "ListLocations", "name"),
    _route("GET", _LOCATION, "", "GetLocation", "name"),
    _route("GET", _LOCATION, "/jobs", "ListJobs", "parent"),
    _route("POST", _LOCATION, "/jobs", "CreateJob", "parent", "job"),
    _route("POST", _JOB, ":pause", "PauseJob", "name", "*"),
    _route("POST", _JOB, ":resume", "ResumeJob", "name", "*"),
    _route("POST", _JOB, ":run", "RunJob", "name", "*"),
    _route("GET", _JOB, "", "GetJob", "name"),
    _route("PATCH", _JOB, "", "UpdateJob", "job.name", "job"),
    _route("DELETE", _JOB, "", "DeleteJob", "name"),
)


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status Google's APIs answer for a gRPC code (google/rpc/code.proto)."""
    status: int = gexc.from_grpc_status(code, "").code or 500
    return status


def error_response(code: grpc.StatusCode, message: str) -> JSONResponse:
    """Google's JSON error body."""
    status = http_status(code)
    return JSONResponse({"error": {"code": status, "message": message, "status": code.name,
                                   "details": []}}, status_code=status)


def _dotted(fields: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        fields = fields.setdefault(part, {})
        if not isinstance(fields, dict):
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"Invalid JSON payload received. {path!r}: {part!r} is no message")
    fields[last] = value


def build_request(route: Route, path: str, query: dict[str, str], body: bytes,
                  request_type: Any) -> Any:
    """The RPC's protobuf request from a matched path, the query string and the body; raises
    `ApiError(INVALID_ARGUMENT)` for a body that is no JSON object or an unknown field, in
    the words Google's JSON transcoding uses."""
    fields: dict[str, Any] = {}
    if route.body is not None and body.strip():
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"Invalid JSON payload received. {exc}") from exc
        if not isinstance(payload, dict):
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT,
                           "Invalid JSON payload received. The body must be a JSON object.")
        if route.body == "*":
            fields.update(payload)
        else:
            fields[route.body] = payload
    for key, value in query.items():
        if key not in SYSTEM_PARAMETERS:
            _dotted(fields, key, value)
    _dotted(fields, route.field, path)
    try:
        return json_format.ParseDict(fields, request_type())
    except json_format.ParseError as exc:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"Invalid JSON payload received. {exc}") from exc


def _to_json(message: Any, query: dict[str, str]) -> dict[str, Any]:
    integers = "enum-encoding=int" in query.get("$alt", "")
    result: dict[str, Any] = json_format.MessageToDict(message, use_integers_for_enums=integers)
    return result


def match(verb: str, url_path: str) -> tuple[Route, str] | None:
    """The route for a request, and the value of its path field."""
    for route in ROUTES:
        found = route.pattern.match(url_path) if route.verb == verb else None
        if found:
            return route, found.group("path")
    return None


def _no_such_method(request: Request) -> JSONResponse:
    return error_response(grpc.StatusCode.NOT_FOUND,
                          f"{request.method} {request.url.path}: no such method")


def rest_app(service: CloudSchedulerService, issuer: TokenIssuer) -> FastAPI:
    """The ASGI app: the v1 API over `service`, and `issuer`'s public key."""
    app = FastAPI(title="Cloud Scheduler emulator", openapi_url=None, docs_url=None,
                  redoc_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def unrouted(request: Request, _: StarletteHTTPException) -> JSONResponse:
        # Google answers any URL or verb it does not serve with a 404 in its error format.
        return _no_such_method(request)

    @app.get(JWKS_PATH)
    def jwks() -> dict[str, Any]:
        return issuer.jwks()

    @app.get(PEM_CERTS_PATH)
    def pem_certificates() -> dict[str, str]:
        return issuer.pem_certificates()

    @app.get("/v1/apps/{project}")
    def app_engine_application(project: str) -> dict[str, Any]:
        # gcloud scheduler without --location (SDK 528, googlecloudsdk/command_lib/scheduler/
        # util.py AppLocationResolver) asks App Engine whether the project has an app, and if
        # so takes the first location ListLocations returns. With api_endpoint_overrides/
        # appengine pointed here, every project has one, in the emulator's default location.
        return {"name": f"apps/{project}", "id": project,
                "locationId": service.default_location()}

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PATCH", "DELETE"])
    async def v1(request: Request) -> JSONResponse:
        found = match(request.method, request.url.path)
        if found is None:
            return _no_such_method(request)
        route, path = found
        query = dict(request.query_params)
        body = await request.body()
        try:
            message = build_request(route, path, query, body, service.methods[route.rpc][0])
            response = await run_in_threadpool(service.call, route.rpc, message)
        except ApiError as exc:
            return error_response(exc.code, exc.message)
        return JSONResponse(_to_json(response, query))

    return app


class RestServer:
    """uvicorn serving `app` from a thread, on a socket bound at construction (so a taken port
    fails there, with OSError, and port 0 is resolved before anything starts)."""

    def __init__(self, app: FastAPI, port: int) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # Accepted connections inherit these: without TCP_NODELAY every small answer waits
            # for the client's delayed ACK (about 40 ms a call); SO_REUSEADDR lets a restarted
            # emulator take its port back at once, while a live listener still refuses it.
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind(("127.0.0.1", port))
            self._socket.listen(128)
        except OSError:
            self._socket.close()
            raise
        self.port: int = self._socket.getsockname()[1]
        # Our structlog setup stays in charge: no uvicorn logging config, no access log.
        config = uvicorn.Config(app, log_config=None, access_log=False, log_level="warning",
                                lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._socket]},
                                        name="cs-emulator-rest", daemon=True)

    def start(self) -> None:
        """Serve, and return once uvicorn accepts requests."""
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving (requests in flight get a moment to finish) and close the socket."""
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._socket.close()
