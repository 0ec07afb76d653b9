"""The egress policy enforced where requests leave: an httpx client that checks before it sends.

`egress_client(policy)` is what every action's HTTP goes through. Its transport

* refuses a request whose URL the policy refuses (`EgressPolicy.check_url`), or whose `Host`
  header names another host than its URL, or that carries a metadata-server header;
* resolves the host once when it opens a connection, checks *every* address it resolves to
  (`EgressPolicy.check_address`), and connects to a checked address: the name is not looked
  up again, so an answer that changes between the check and the connection (DNS rebinding)
  is never used. TLS still verifies the certificate for, and sends SNI of, the URL's host,
  and pooled connections stay keyed by that host;
* follows no redirect (the client is built with `follow_redirects=False`, and a 3xx is an
  answer like any other); a caller that follows one anyway sends each hop through the same
  checks.

It connects directly: proxy environment variables are ignored, as a proxy would resolve names
where they cannot be checked.

A refusal raises `EgressRefused`, which actions record as a failure that is not retried.
"""

from __future__ import annotations

import socket
import typing
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import httpcore
import httpx

from scheduler.egress import EgressPolicy, normalize_host
from worker.errors import WorkerError

Resolver = Callable[[str, int], list[str]]
"""Resolve a host and port to the addresses to connect to (e.g. `system_resolver`)."""

# httpx's own default limits: room for every executor of a worker (64 by default).
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
# Headers only a caller of a metadata server sends; no action has a reason to.
_METADATA_HEADERS = ("metadata-flavor", "x-google-metadata-request")


class EgressRefused(httpx.RequestError, WorkerError):
    """The egress policy refused the request; nothing was sent. Not retryable."""


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (getaddrinfo, the system's resolver), each once, in
    the order the system prefers them."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _VettingBackend(httpcore.SyncBackend):
    """Connects only to addresses the policy allows, resolving each host once per connection."""

    def __init__(self, policy: EgressPolicy, resolve: Resolver) -> None:
        self._policy = policy
        self._resolve = resolve

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = self._resolve(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            problem = self._policy.check_address(host, address)
            if problem:
                raise EgressRefused(f"refused by the egress policy: {problem}")
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                failure = exc
        assert failure is not None
        raise failure


class _HeldConnectionPool(httpcore.ConnectionPool):
    """httpcore's pool, except that a connection a request holds is never closed by a pass.

    httpcore 1.0.9 hands an idle connection to a queued request, but the connection stays
    IDLE until that request's thread starts on it. A pass of another thread (a request starting
    or ending) in between still takes it for idle and may close it: as surplus keep-alive (it
    counts *all* connections against `max_keepalive_connections`, so under load every idle one
    goes), as expired, or to make room. It closes outside the pool's lock, so the close can
    land after the holder has sent its request: the read then fails with `[Errno 9] Bad file
    descriptor` (or hangs in poll() until the read timeout), and the fire is retried although
    the target got it (encode/httpcore#1110; the fix proposed there, #1111, is unreleased).

    Each pass here runs without the held connections, with `max_connections` less by as many
    (they still count against it), then puts them back; so the keep-alive limit also counts
    only the connections no request holds. This overrides a private method and uses private
    fields of httpcore 1.0.9's pool; `tests/test_egress_pool.py` shows whether a later httpcore
    still needs it (it passes with the stock pool once #1110 is fixed).
    """

    def _assign_requests_to_connections(self) -> list[httpcore.ConnectionInterface]:
        # Every caller in httpcore holds the pool's lock around this.
        held = {id(r.connection) for r in self._requests if r.connection is not None}
        every = self._connections
        self._connections = [c for c in every if id(c) not in held]
        limit = self._max_connections
        self._max_connections = limit - (len(every) - len(self._connections))
        try:
            return super()._assign_requests_to_connections()
        finally:
            self._max_connections = limit
            self._connections = [c for c in every if id(c) in held] + self._connections


class EgressTransport(httpx.HTTPTransport):
    """An `httpx.HTTPTransport` that enforces `policy` (see the module docstring)."""

    def __init__(self, policy: EgressPolicy, *, resolve: Resolver = system_resolver,
                 limits: httpx.Limits = DEFAULT_LIMITS) -> None:
        super().__init__()
        self._policy = policy
        # httpx takes no network backend, so its pool is replaced by one that has ours; the
        # tests of a name resolving to a refused address fail if this stops taking effect.
        self._pool = _HeldConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_VettingBackend(policy, resolve),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Check the request's URL and headers, then send it through the vetting pool."""
        problem = request_problem(self._policy, request)
        if problem:
            raise EgressRefused(f"refused by the egress policy: {problem}", request=request)
        return super().handle_request(request)


def request_problem(policy: EgressPolicy, request: httpx.Request) -> str | None:
    """Why `request` may not be sent, as far as its URL and headers tell; None if it may."""
    problem = policy.check_url(str(request.url))
    if problem:
        return f"{request.url} {problem}"
    host_header = request.headers.get("host", "")
    try:
        header_host = urlsplit(f"//{host_header}").hostname or ""
    except ValueError:
        header_host = ""
    if normalize_host(header_host) != normalize_host(request.url.host):
        return f"its Host header ({host_header!r}) names another host than its URL"
    for name in _METADATA_HEADERS:
        if name in request.headers:
            return f"it carries the metadata-server header {name}"
    return None


def egress_client(policy: EgressPolicy, *, resolve: Resolver = system_resolver,
                  limits: httpx.Limits = DEFAULT_LIMITS, **options: typing.Any) -> httpx.Client:
    """An httpx client whose every request goes through `policy`, following no redirect, with
    a pool of `limits`. `options` are further `httpx.Client` arguments (e.g. a default
    `timeout`)."""
    return httpx.Client(transport=EgressTransport(policy, resolve=resolve, limits=limits),
                        follow_redirects=False, trust_env=False, **options)
