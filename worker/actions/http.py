"""The built-in `http` action: one HTTP request per fire.

The request carries `Idempotency-Key: <execution ID>`, so a target that honours it does the
work once even when a fire is retried or taken over after a worker died mid-request, and the
`X-Scion-*` headers name the schedule, fire time (RFC 3339), trigger and attempt. Header values
are ASCII, so `X-Scion-Schedule-Id` is the schedule ID percent-encoded (RFC 3986): unchanged for
a printable-ASCII ID without `%`, exactly reversible with `urllib.parse.unquote` for any other.

Classification: 2xx succeeds; 429, 5xx, timeouts and connection errors are retryable; any other
status (3xx, which is not followed, and the other 4xx) fails without retry. A connection lost
after the request was sent (a read error, a server that closed the connection before
answering) is a connection error too, though the target may have acted: the retry carries the
same Idempotency-Key, which is what the key is for (docs/hub-fire-endpoint.md, "The
idempotency rule"). On a reused keep-alive connection the sender first sends it once more on a
new one (`worker.egress_sender`); Go's net/http replays a request on a reused connection for
the same reason only when it has that header (`Request.isReplayable`, golang/go#19943).

Every request goes through the egress policy (`SCION_SCHEDULER_ALLOWED_TARGETS`, see
`scheduler.egress` and `worker.egress_sender`): a refused target or a header a schedule may
not set fails the fire without retry, and nothing is sent. What history and logs keep of a
response is a short, redacted excerpt (`scheduler.redaction`).

With `oidc_audience`, a Google-signed ID token for that audience is sent as a bearer token
(what Cloud Run and IAP expect). It comes from the environment's credentials (the metadata
server on GCP), is cached until shortly before it expires, and is never logged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from scheduler.config import Settings
from scheduler.egress import EgressPolicy, header_problem
from scheduler.model import format_instant
from scheduler.redaction import excerpt
from worker.action import ActionContext, ActionError, ActionResult
from worker.egress_sender import EgressSender, Reply, Sender, SendError, json_body

DEFAULT_TIMEOUT_S = 30.0
# Google ID tokens live an hour; one this close to expiry could lapse in flight.
TOKEN_REFRESH_MARGIN = timedelta(minutes=5)
_PRINTABLE_ASCII_BUT_PERCENT = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")

IdTokenFetcher = Callable[[str], tuple[str, datetime]]
"""Fetch an ID token for an audience: the token and its (aware) expiry."""


def fetch_google_id_token(audience: str) -> tuple[str, datetime]:
    """An ID token for `audience` from the environment's Google credentials, and its expiry
    (read from the token's own `exp` claim; the token is ours, so it is not verified)."""
    import google.auth.jwt
    import google.auth.transport.requests
    import google.oauth2.id_token

    token: str = google.oauth2.id_token.fetch_id_token(
        google.auth.transport.requests.Request(), audience)
    claims = google.auth.jwt.decode(token, verify=False)
    return token, datetime.fromtimestamp(int(claims["exp"]), UTC)


class IdTokenCache:
    """ID tokens by audience, fetched when missing or about to expire. Thread-safe."""

    def __init__(
        self, fetch: IdTokenFetcher = fetch_google_id_token,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._tokens: dict[str, tuple[str, datetime]] = {}
        self._lock = threading.Lock()

    def get(self, audience: str) -> str:
        """A token for `audience` valid for at least `TOKEN_REFRESH_MARGIN`."""
        with self._lock:
            cached = self._tokens.get(audience)
            if cached is None or cached[1] - self._clock() < TOKEN_REFRESH_MARGIN:
                cached = self._fetch(audience)
                self._tokens[audience] = cached
            return cached[0]


def _id_token_error(exc: Exception) -> ActionError:
    """Missing credentials are a configuration error; any other failure may pass."""
    import google.auth.exceptions

    if isinstance(exc, google.auth.exceptions.DefaultCredentialsError):
        return ActionError(f"no credentials for an OIDC token: {exc}", retryable=False)
    return ActionError(
        f"could not fetch an OIDC token: {type(exc).__name__}: {exc}", retryable=True
    )


def send(sender: Sender, method: str, url: str, *, headers: Mapping[str, str], timeout: float,
         json: Any = None) -> Reply:
    """Send one request (shared with the `scion` action) with `json`, unless None, as its
    body, through `sender` (an `EgressSender` checks the URL and the addresses it connects to).
    A response of any status is returned; a failure to get one raises `ActionError`: retryable
    for timeouts and connection errors, not for a request that cannot or may not be sent at all
    (bad URL, header or body, refused by the egress policy)."""
    body = None
    if json is not None:
        try:
            body = json_body(json)
        except ValueError as exc:
            raise ActionError(f"{method} {url}: cannot send: {exc}", retryable=False) from exc
        if not any(name.lower() == "content-type" for name in headers):
            headers = {**headers, "Content-Type": "application/json"}
    try:
        return sender.send(method, url, headers=headers, body=body, timeout=timeout)
    except SendError as exc:
        raise ActionError(f"{method} {url}: {exc}", retryable=exc.retryable) from exc


class HttpAction:
    """The `http` action handler; one instance per worker, sharing its idle connections."""

    def __init__(self, sender: Sender | None = None, *, id_tokens: IdTokenCache | None = None,
                 egress: EgressPolicy | None = None) -> None:
        """`egress`: where requests may go (default: `SCION_SCHEDULER_ALLOWED_TARGETS` from the
        environment); `sender` (default: one enforcing `egress`) is for tests."""
        egress = egress if egress is not None else Settings.from_env().allowed_targets
        self._sender = sender if sender is not None else EgressSender(egress)
        self._id_tokens = id_tokens if id_tokens is not None else IdTokenCache()

    def __call__(self, context: ActionContext) -> ActionResult | None:
        """Send the request; see the module docstring for how the response is classified."""
        params = context.params
        url = params.get("url")
        if not isinstance(url, str) or not url:
            raise ActionError("http action: params.url is required", retryable=False)
        method = str(params.get("method", "POST")).upper()
        headers = self._headers(context)
        response = send(self._sender, method, url, headers=headers, json=params.get("body"),
                        timeout=float(params.get("timeout", DEFAULT_TIMEOUT_S)))
        status = response.status_code
        if 200 <= status < 300:
            return ActionResult(detail=f"HTTP {status}")
        retryable = status == 429 or status >= 500
        raise ActionError(f"{method} {url}: HTTP {status}: {excerpt(response.text)}",
                          retryable=retryable)

    def _headers(self, context: ActionContext) -> dict[str, str]:
        configured: Mapping[str, str] = context.params.get("headers") or {}
        audience = context.params.get("oidc_audience")
        for name in configured:
            problem = header_problem(str(name), oidc=bool(audience))
            if problem:
                raise ActionError(f"http action: header {problem}", retryable=False)
        headers = {str(k): str(v) for k, v in configured.items()}
        headers.update({
            "Idempotency-Key": context.execution_id,
            "X-Scion-Schedule-Id": quote(context.schedule_id, safe=_PRINTABLE_ASCII_BUT_PERCENT),
            "X-Scion-Fire-Time": format_instant(context.fire_time),
            "X-Scion-Trigger": context.trigger,
            "X-Scion-Attempt": str(context.attempt),
        })
        if audience:
            try:
                headers["Authorization"] = f"Bearer {self._id_tokens.get(str(audience))}"
            except Exception as exc:
                raise _id_token_error(exc) from exc
        return headers

    def close(self) -> None:
        """Close the idle connections."""
        self._sender.close()
