"""Who may call the API: a shared bearer token, or Google-signed OIDC ID tokens of allowed
service accounts (the hub's identity on GCP), or, bound to loopback only, nobody checked.

Google ID tokens are verified with google-auth (`verify_oauth2_token`: signature against
Google's certificates, expiry, issuer `accounts.google.com`, audience). google-auth does not
cache the certificates itself; its documentation's answer is a `CacheControl` session, which
honours the certificate response's `Cache-Control` max-age, so a verification needs no request
of its own most of the time.

A token google-auth rejects (a `ValueError` or a `GoogleAuthError`: bad signature, wrong issuer
or audience, expired) is a 401; certificates that cannot be fetched (`TransportError`) are a 503,
since the caller's token may well be valid. Neither message nor log ever carries the token.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.auth import exceptions as auth_exceptions

from scheduler.config import ConfigError, Settings
from scheduler.logs import get_logger
from scion_scheduler.errors import ScionSchedulerError

log = get_logger(__name__)

REALM = "scion-scheduler"

# verify(token, audiences) -> the token's claims; raises ValueError or GoogleAuthError for a
# rejected token, google.auth.exceptions.TransportError when the certificates cannot be fetched.
IdTokenVerifier = Callable[[str, Sequence[str]], Mapping[str, Any]]


class AuthError(ScionSchedulerError):
    """The request is not authenticated (401), not allowed (403), or cannot be checked now
    (503: Google's certificates are out of reach)."""

    def __init__(self, message: str, *, status: int = 401, invalid_token: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.invalid_token = invalid_token

    @property
    def www_authenticate(self) -> str:
        """The `WWW-Authenticate` challenge (RFC 6750 section 3)."""
        challenge = f'Bearer realm="{REALM}"'
        if self.invalid_token:
            reason = self.message.replace('"', "'")
            challenge += f', error="invalid_token", error_description="{reason}"'
        elif self.status == 403:
            challenge += ', error="insufficient_scope"'
        return challenge


def google_verifier(session: Any = None) -> IdTokenVerifier:
    """The production verifier: google-auth over a certificate-caching session (a new
    `requests.Session` unless `session` is given, as tests do to serve their own certificates)."""
    import cachecontrol
    import requests
    from google.auth.transport.requests import Request
    from google.oauth2 import id_token

    request = Request(session=cachecontrol.CacheControl(session or requests.Session()))

    def verify(token: str, audiences: Sequence[str]) -> Mapping[str, Any]:
        claims: Mapping[str, Any] = id_token.verify_oauth2_token(
            token, request, audience=list(audiences)
        )
        return claims

    return verify


@dataclass(frozen=True)
class OidcPolicy:
    """Accept Google ID tokens for one of `audiences`, of one of `allowed_emails`."""

    audiences: tuple[str, ...]
    allowed_emails: frozenset[str]
    verify: IdTokenVerifier = field(default_factory=google_verifier, compare=False, repr=False)

    def check(self, token: str) -> str:
        """The caller's service-account email, or `AuthError`."""
        try:
            claims = self.verify(token, self.audiences)
        except auth_exceptions.TransportError as exc:
            reason = _redact(str(exc), token)
            log.warning("cannot verify ID tokens: Google's certificates are out of reach",
                        error=reason)
            raise AuthError("cannot verify the ID token now: Google's signing certificates could "
                            "not be fetched; retry later", status=503) from exc
        except (ValueError, auth_exceptions.GoogleAuthError) as exc:
            reason = _redact(str(exc), token) or type(exc).__name__
            log.info("ID token rejected", reason=reason)
            raise AuthError(f"the ID token is not valid: {reason}", invalid_token=True) from exc
        email = claims.get("email")
        if not isinstance(email, str) or claims.get("email_verified") is not True:
            raise AuthError("the ID token carries no verified email", invalid_token=True)
        if email not in self.allowed_emails:
            raise AuthError(f"{email} is not an allowed caller", status=403)
        return email


@dataclass(frozen=True)
class Authenticator:
    """Checks the `Authorization` header. With neither a token nor an OIDC policy, every caller
    is accepted; `serve` allows that only on a loopback address."""

    token: str | None = None
    oidc: OidcPolicy | None = None

    @property
    def enabled(self) -> bool:
        """Whether callers must authenticate."""
        return bool(self.token) or self.oidc is not None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, verify: IdTokenVerifier | None = None
    ) -> Authenticator:
        """From `SCION_SCHEDULER_API_TOKEN`, `_API_AUDIENCE` and `_API_ALLOWED_SA`. An audience
        without allowed service accounts (or the reverse) is refused: anyone can obtain a Google
        ID token for any audience, so the audience alone proves nothing."""
        audiences = settings.api_audience
        emails = frozenset(settings.api_allowed_sa)
        oidc: OidcPolicy | None = None
        if audiences or emails:
            if not audiences or not emails:
                raise ConfigError(
                    "SCION_SCHEDULER_API_AUDIENCE and SCION_SCHEDULER_API_ALLOWED_SA must be set "
                    "together: an ID token is only proof of identity for an expected audience "
                    "from an allowed service account")
            oidc = (OidcPolicy(audiences, emails, verify) if verify is not None
                    else OidcPolicy(audiences, emails))
        return cls(token=settings.api_token, oidc=oidc)

    def authenticate(self, authorization: str | None) -> str:
        """The caller's identity (`token`, a service-account email, or `anonymous`)."""
        if not self.enabled:
            return "anonymous"
        if not authorization:
            raise AuthError("missing Authorization header (expected: Bearer <token>)")
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise AuthError("the Authorization header must be `Bearer <token>`", invalid_token=True)
        if self.token and hmac.compare_digest(credential.encode(), self.token.encode()):
            return "token"
        if self.oidc is not None and credential.count(".") == 2:
            return self.oidc.check(credential)
        raise AuthError("the bearer token is not valid", invalid_token=True)


def _redact(message: str, token: str) -> str:
    """`message` without the token or any of its segments (google-auth quotes them in some
    errors), on one line and cut to a length fit for a header."""
    for secret in sorted({token, *token.split(".")}, key=len, reverse=True):
        if len(secret) >= 8:
            message = message.replace(secret, "[redacted]")
    return " ".join(message.split())[:300]


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the API on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(authenticator: Authenticator, host: str) -> None:
    """Refuse to serve without authentication anywhere but loopback."""
    if not authenticator.enabled and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host} without authentication: set SCION_SCHEDULER_API_TOKEN, "
            "or SCION_SCHEDULER_API_AUDIENCE with SCION_SCHEDULER_API_ALLOWED_SA, or bind to "
            "127.0.0.1")
