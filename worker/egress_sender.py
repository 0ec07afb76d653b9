"""The egress policy enforced where requests leave: the sender every action's HTTP goes through.

`EgressSender(policy)`

* refuses a request whose URL the policy refuses (`EgressPolicy.check_url`), or whose `Host`
  header names another host than its URL, or that carries a metadata-server header;
* resolves the host once when it opens a connection, checks *every* address it resolves to
  (`EgressPolicy.check_address`), and connects to a checked address: the name is not looked
  up again, so an answer that changes between the check and the connection (DNS rebinding)
  is never used. TLS still verifies the certificate for, and sends SNI of, the URL's host, and
  idle connections stay keyed by that host;
* follows no redirect: a 3xx is an answer like any other, and a caller that follows one sends
  each hop through the same checks;
* connects directly: proxy environment variables are ignored, as a proxy would resolve names
  where they cannot be checked.

Why not httpx, which this was before: a fire's request through httpx cost about 1.2 ms of CPU
on this project's machines against 0.37 ms through `http.client` (the standard library's
HTTP/1.1, which urllib3 builds on too), measured with `bench/bench_egress.py`, and a worker's
CPU per fire decides how many fires one replica starts in a minute. A connection is used by one
request at a time: taken from the idle ones of its origin (or opened), and put back when its
answer was read whole and the server keeps it open, so no request can lose its connection to
another thread's housekeeping (httpcore 1.0.9 could: encode/httpcore#1110).

A request that fails on a reused idle connection before any answer (the server closed it
while idle: reset, broken pipe, or closed with no status line) is sent once more on a new
connection. The target may have received it, which is what every request's `Idempotency-Key`
is for (docs/hub-fire-endpoint.md, "The idempotency rule"); Go's net/http replays such a
request for the same reason only when it has that header (`Request.isReplayable`).

A refusal raises `EgressRefused`, and any other failure to get an answer `SendError`; both say
whether a retry could help.
"""

from __future__ import annotations

import email.message
import http.client
import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import certifi

from scheduler.egress import METADATA_HEADERS, EgressPolicy, normalize_host
from worker.errors import WorkerError

Resolver = Callable[[str, int], list[str]]
"""Resolve a host and port to the addresses to connect to (e.g. `system_resolver`)."""

# Idle connections kept per origin: one for each executor of a worker (64 by default).
DEFAULT_MAX_IDLE = 64
# An idle connection older than this is closed rather than reused: servers close idle
# connections on their own timers, and one closing as the request goes out costs a resend.
IDLE_EXPIRY_S = 5.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
# What a server closing a reused idle connection looks like before any answer arrives.
_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError,
          http.client.RemoteDisconnected)
USER_AGENT = "scion-scheduler"
# What a URL's path and query keep as they are: RFC 3986's reserved characters and `%`.
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"


class SendError(WorkerError):
    """No answer was got. `retryable`: False when the request was not, and cannot be, sent."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class EgressRefused(SendError):
    """The egress policy refused the request; nothing was sent. Not retryable."""

    def __init__(self, message: str) -> None:
        super().__init__(f"refused by the egress policy: {message}", retryable=False)


@dataclass(frozen=True)
class Reply:
    """A target's answer, read whole."""

    status_code: int
    content: bytes
    content_type: str = ""

    @property
    def text(self) -> str:
        """The body decoded with the charset the answer names (UTF-8 if none), leniently."""
        header = email.message.Message()
        header["Content-Type"] = self.content_type
        charset = header.get_content_charset("utf-8")
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.content)


class Sender(Protocol):
    """What actions send their requests through (`EgressSender`; tests use fakes)."""

    def send(self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None,
             timeout: float) -> Reply:
        """Send one request and return the answer, whatever its status; `SendError` if none."""

    def close(self) -> None:
        """Close what the sender keeps open."""


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (getaddrinfo, the system's resolver), each once, in
    the order the system prefers them."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def json_body(value: Any) -> bytes:
    """`value` as a request's JSON body: compact UTF-8, no NaN (ValueError)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode()


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int


@dataclass(frozen=True)
class _Target:
    origin: _Origin
    path: str
    headers: dict[str, str]


class EgressSender:
    """Sends requests that `policy` allows (see the module docstring); safe for many threads."""

    def __init__(self, policy: EgressPolicy, *, resolve: Resolver = system_resolver,
                 max_idle: int = DEFAULT_MAX_IDLE, ssl_context: ssl.SSLContext | None = None
                 ) -> None:
        self._policy = policy
        self._resolve = resolve
        self._max_idle = max_idle
        self._ssl = ssl_context or ssl.create_default_context(cafile=certifi.where())
        self._idle: dict[_Origin, list[tuple[http.client.HTTPConnection, float]]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def send(self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None,
             timeout: float) -> Reply:
        """Send one request if the policy allows it; the answer of any status, or
        `SendError` (`EgressRefused` for a refusal) when there is none."""
        target = self._target(url, headers)
        connection, reused = self._take(target.origin, timeout)
        try:
            try:
                answer = self._exchange(connection, method, target, body)
            except _STALE:
                if not reused:
                    raise
                connection.close()
                connection, reused = self._open(target.origin, timeout), False
                answer = self._exchange(connection, method, target, body)
            reply = Reply(answer.status, answer.read(), answer.getheader("Content-Type") or "")
        except SendError:
            connection.close()
            raise
        except TimeoutError as exc:
            connection.close()
            raise SendError(f"timed out ({type(exc).__name__})", retryable=True) from exc
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise SendError(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        except (ValueError, UnicodeError) as exc:
            connection.close()
            raise SendError(f"cannot send: {exc}", retryable=False) from exc
        self._put_back(target.origin, connection, keep=not answer.will_close)
        return reply

    def _target(self, url: str, headers: Mapping[str, str]) -> _Target:
        problem = self._policy.check_url(url)
        if problem:
            raise EgressRefused(f"the URL {problem}")
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            raise SendError("cannot send: the URL carries credentials", retryable=False)
        try:
            host = (parts.hostname or "").encode("idna").decode("ascii")
            port = parts.port or _DEFAULT_PORTS[parts.scheme]
        except (UnicodeError, ValueError, KeyError) as exc:
            raise SendError(f"cannot send: {exc}", retryable=False) from exc
        lowered = {name.lower(): value for name, value in headers.items()}
        host_header = lowered.get("host")
        if host_header is not None:
            try:
                header_host = urlsplit(f"//{host_header}").hostname or ""
            except ValueError:
                header_host = ""
            if normalize_host(header_host) != normalize_host(host):
                raise EgressRefused(f"{url}: its Host header ({host_header!r}) names another "
                                    "host than its URL")
        # Headers only a caller of a metadata server sends; no action has a reason to.
        carried = METADATA_HEADERS & lowered.keys()
        if carried:
            raise EgressRefused(f"{url}: it carries the metadata-server header {min(carried)}")
        sent = dict(headers)
        if "user-agent" not in lowered:
            sent["User-Agent"] = USER_AGENT
        # A request line is ASCII: other characters are percent-encoded as UTF-8 (what httpx and
        # browsers do), and escapes already there are kept.
        path = quote(parts.path or "/", safe=_URL_SAFE)
        query = quote(parts.query, safe=_URL_SAFE)
        return _Target(_Origin(parts.scheme, host, port), f"{path}?{query}" if query else path,
                       sent)

    @staticmethod
    def _exchange(connection: http.client.HTTPConnection, method: str, target: _Target,
                  body: bytes | None) -> http.client.HTTPResponse:
        connection.request(method, target.path, body=body, headers=target.headers)
        return connection.getresponse()

    def _take(self, origin: _Origin, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection to `origin` that is still open and fresh, or a new one; and
        whether it was reused."""
        now = time.monotonic()
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                taken = idle.pop() if idle else None
            if taken is None:
                return self._open(origin, timeout), False
            connection, since = taken
            if now - since < IDLE_EXPIRY_S and not _dropped(connection):
                assert connection.sock is not None
                connection.sock.settimeout(timeout)
                connection.timeout = timeout
                return connection, True
            connection.close()

    def _open(self, origin: _Origin, timeout: float) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection
        if origin.scheme == "https":
            connection = http.client.HTTPSConnection(origin.host, origin.port, timeout=timeout,
                                                     context=self._ssl)
        else:
            connection = http.client.HTTPConnection(origin.host, origin.port, timeout=timeout)
        # http.client opens its socket through this attribute; ours resolves and checks first.
        connection._create_connection = self._connect  # type: ignore[attr-defined]
        return connection

    def _connect(self, address: tuple[str, int], timeout: Any = None,
                 source_address: Any = None) -> socket.socket:
        """Resolve the host once, refuse it if any address is refused, connect to a checked
        address (the first that answers)."""
        host, port = address
        try:
            addresses = self._resolve(host, port)
        except OSError as exc:
            raise SendError(f"cannot resolve {host}: {exc}", retryable=True) from exc
        if not addresses:
            raise SendError(f"{host} resolves to no address", retryable=True)
        for checked in addresses:
            problem = self._policy.check_address(host, checked)
            if problem:
                raise EgressRefused(problem)
        failure: OSError | None = None
        for checked in addresses:
            try:
                return socket.create_connection((checked, port), timeout, source_address)
            except OSError as exc:
                failure = exc
        assert failure is not None
        raise failure

    def _put_back(self, origin: _Origin, connection: http.client.HTTPConnection, *,
                  keep: bool) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if keep and not self._closed and len(idle) < self._max_idle:
                idle.append((connection, time.monotonic()))
                return
        connection.close()

    def close(self) -> None:
        """Close every idle connection; connections in use close when their request ends."""
        with self._lock:
            self._closed = True
            idle = [c for connections in self._idle.values() for c, _ in connections]
            self._idle.clear()
        for connection in idle:
            connection.close()


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle connection was closed by its server (or sent something unasked): an
    idle keep-alive socket has nothing to read."""
    if connection.sock is None:
        return True
    poller = select.poll()
    poller.register(connection.sock, select.POLLIN)
    return bool(poller.poll(0))
