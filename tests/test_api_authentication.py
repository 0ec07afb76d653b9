"""The HTTP control API's credentials: the bearer token, OIDC tokens of allowed service accounts,
and loopback-only serving without them, against the emulators (harness: `api_harness`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from api_harness import TOKEN, Api, open_api, path
from google.auth import exceptions as auth_exceptions

from scheduler.config import ConfigError, Settings
from scion_scheduler.api import Authenticator
from scion_scheduler.api.auth import check_exposure, is_loopback
from scion_scheduler.cli import build_parser
from worker.sqlite_ledger import SqliteLedger

pytestmark = pytest.mark.emulator


# -- authentication ------------------------------------------------------------------------------


# Every route that needs credentials; "a" never exists, which must not matter to the checks.
ROUTES = [
    ("GET", "/v1/schedules"), ("GET", path("a")), ("PUT", path("a")), ("DELETE", path("a")),
    ("POST", path("a", ":pause")), ("POST", path("a", ":resume")), ("POST", path("a", ":run")),
    ("POST", "/v1/schedules:sync"), ("GET", path("a", "/executions")), ("GET", "/metrics"),
]
ROUTE_IDS = [f"{m} {u}" for m, u in ROUTES]
HUB_SA = "hub@p.iam.gserviceaccount.com"


def test_healthz_needs_no_credentials(api: Api) -> None:
    assert api.anon.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize(("method", "url"), ROUTES, ids=ROUTE_IDS)
def test_every_route_needs_the_token(api: Api, method: str, url: str) -> None:
    missing = api.anon.request(method, url)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="scion-scheduler"'
    assert missing.json()["code"] == "unauthenticated"
    wrong = api.anon.request(method, url, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    basic = api.anon.request(method, url, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    assert api.writes() == 0


@contextmanager
def oidc_api(settings: Settings, emulator: Any, ledger: SqliteLedger,
             verify: Callable[[str, Sequence[str]], Mapping[str, Any]]) -> Iterator[Api]:
    oidc = settings.with_overrides(api_token="", api_audience="https://scheduler.example, other",
                                   api_allowed_sa=HUB_SA)
    authenticator = Authenticator.from_settings(oidc, verify=verify)
    with open_api(oidc, emulator, ledger, authenticator=authenticator) as api:
        yield api


def test_oidc_tokens_are_verified_for_audience_and_allowed_service_accounts(
    settings: Settings, cloud_scheduler_emulator: Any, ledger: SqliteLedger
) -> None:
    seen: list[tuple[str, list[str]]] = []
    claims: dict[str, Mapping[str, Any]] = {"hub.a.b": {"email": HUB_SA, "email_verified": True},
              "unverified.a.b": {"email": HUB_SA}}

    def verify(token: str, audiences: Sequence[str]) -> Mapping[str, Any]:
        seen.append((token, list(audiences)))
        if token not in claims:
            raise ValueError("Token has wrong audience")
        return claims[token]

    with oidc_api(settings, cloud_scheduler_emulator, ledger, verify) as api:
        assert api.context.authenticator.token is None and api.context.authenticator.enabled

        def get(token: str) -> Any:
            return api.anon.get("/v1/schedules", headers={"Authorization": f"Bearer {token}"})

        assert get("hub.a.b").status_code == 200
        assert seen[-1] == ("hub.a.b", ["https://scheduler.example", "other"])
        assert get("unverified.a.b").status_code == 401
        bad = get("forged.a.b")
        assert bad.status_code == 401 and "wrong audience" in bad.headers["WWW-Authenticate"]
        assert get(TOKEN).status_code == 401  # the shared token is not configured here

    with pytest.raises(ConfigError, match="must be set together"):
        Authenticator.from_settings(settings.with_overrides(api_audience="aud"), verify=verify)


def test_every_route_refuses_a_service_account_not_allowed(
    settings: Settings, cloud_scheduler_emulator: Any, ledger: SqliteLedger
) -> None:
    def verify(token: str, audiences: Sequence[str]) -> Mapping[str, Any]:
        return {"email": "intruder@p.iam.gserviceaccount.com", "email_verified": True}

    with oidc_api(settings, cloud_scheduler_emulator, ledger, verify) as api:
        for method, url in ROUTES:
            forbidden = api.anon.request(method, url, headers={"Authorization": "Bearer x.y.z"})
            assert forbidden.status_code == 403, (method, url)
            assert forbidden.json()["code"] == "permission_denied"
            assert 'error="insufficient_scope"' in forbidden.headers["WWW-Authenticate"]
        assert api.writes() == 0


@pytest.mark.parametrize(("error", "status", "code"), [
    (auth_exceptions.GoogleAuthError("Wrong issuer. 'iss' should be one of ..."), 401,
     "unauthenticated"),
    (auth_exceptions.InvalidValue("Token does not contain a valid 'aud' claim."), 401,
     "unauthenticated"),
    (auth_exceptions.TransportError("Could not fetch certificates at https://www.googleapis.com"),
     503, "unavailable"),
], ids=["rejected", "invalid-value", "certificates-unreachable"])
def test_oidc_verification_errors_are_401_or_503_never_500(
    settings: Settings, cloud_scheduler_emulator: Any, ledger: SqliteLedger,
    capsys: pytest.CaptureFixture[str], error: Exception, status: int, code: str,
) -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJlbWFpbCI6Imh1YiJ9.c2lnbmF0dXJlLWJ5dGVz"

    def verify(got: str, audiences: Sequence[str]) -> Mapping[str, Any]:
        raise type(error)(f"{error} [{got}]")

    with oidc_api(settings, cloud_scheduler_emulator, ledger, verify) as api:
        for method, url in ROUTES:
            refused = api.anon.request(method, url, headers={"Authorization": f"Bearer {token}"})
            assert refused.status_code == status, (method, url, refused.text)
            assert refused.json()["code"] == code
            assert token not in refused.text and token not in str(refused.headers)
            if status == 503:
                assert "certificates could not be fetched" in refused.json()["message"]
                assert "WWW-Authenticate" not in refused.headers
        assert api.writes() == 0
    assert token not in capsys.readouterr().err


def test_serve_refuses_to_listen_beyond_loopback_without_authentication() -> None:
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "18080"])
    with pytest.raises(
        ConfigError, match=r"refusing to serve on 0\.0\.0\.0 without authentication"
    ):
        args.handler(args, Settings.from_env({}))
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    check_exposure(Authenticator(), "127.0.0.1")
    check_exposure(Authenticator(token="t"), "0.0.0.0")
