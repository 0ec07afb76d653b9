"""OIDC verification of the HTTP API: `google_verifier` itself, with ID tokens signed by a locally
generated RSA key and Google's certificate endpoint served by a stub session (no network), and
`OidcPolicy` mapping each kind of failure to 401 or 503 without ever repeating the token."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt
from google.auth import exceptions as auth_exceptions

from scion_scheduler.api.auth import AuthError, OidcPolicy, google_verifier

CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
AUDIENCE = "https://scheduler.example"
HUB = "hub@p.iam.gserviceaccount.com"
KID = "test-key-1"


def _key_and_cert() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-google-certs")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return private, cert.public_bytes(serialization.Encoding.PEM).decode()


PRIVATE_KEY, CERT = _key_and_cert()
OTHER_KEY, _ = _key_and_cert()


def id_token(private_key: bytes = PRIVATE_KEY, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": "https://accounts.google.com", "aud": AUDIENCE, "sub": "1234567890",
               "email": HUB, "email_verified": True, "iat": now, "exp": now + 600, **claims}
    signer = crypt.RSASigner.from_string(private_key, key_id=KID)
    encoded: bytes = jwt.encode(signer, payload)
    return encoded.decode()


class _CertsAdapter(requests.adapters.BaseAdapter):
    """Answers Google's certificate endpoint with this test's certificate, or fails to connect."""

    def __init__(self, *, reachable: bool = True) -> None:
        super().__init__()
        self.reachable = reachable
        self.requests: list[str] = []

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        self.requests.append(str(request.url))
        if not self.reachable:
            raise requests.ConnectionError("connection refused")
        response = requests.Response()
        response.status_code = 200 if request.url == CERTS_URL else 404
        response.raw = io.BytesIO(json.dumps({KID: CERT}).encode())
        response.headers["Content-Type"] = "application/json"
        response.url = str(request.url)
        response.request = request
        return response

    def close(self) -> None:
        pass


def policy_with(adapter: _CertsAdapter) -> OidcPolicy:
    session = requests.Session()
    session.mount("https://www.googleapis.com/", adapter)
    return OidcPolicy((AUDIENCE,), frozenset({HUB}), google_verifier(session))


def test_google_verifier_accepts_a_google_signed_token_and_rejects_every_kind_of_bad_one() -> None:
    adapter = _CertsAdapter()
    policy = policy_with(adapter)
    assert policy.check(id_token()) == HUB
    assert adapter.requests and set(adapter.requests) == {CERTS_URL}

    for token, reason in (
        (id_token(iss="https://evil.example"), "Wrong issuer"),  # a GoogleAuthError, not ValueError
        (id_token(aud="https://elsewhere.example"), "audience"),
        (id_token(OTHER_KEY), "signature"),
        (id_token(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600), "expired"),
    ):
        with pytest.raises(AuthError) as rejected:
            policy.check(token)
        assert rejected.value.status == 401 and rejected.value.invalid_token
        assert reason in rejected.value.message
        assert token not in rejected.value.message

    with pytest.raises(AuthError) as forbidden:
        policy.check(id_token(email="intruder@p.iam.gserviceaccount.com"))
    assert forbidden.value.status == 403


def test_unreachable_certificates_are_a_503_not_a_rejected_token() -> None:
    policy = policy_with(_CertsAdapter(reachable=False))
    with pytest.raises(AuthError) as unavailable:
        policy.check(id_token())
    assert unavailable.value.status == 503 and not unavailable.value.invalid_token
    assert "certificates could not be fetched" in unavailable.value.message


@pytest.mark.parametrize(("error", "status"), [
    (auth_exceptions.GoogleAuthError("Wrong issuer"), 401),
    (auth_exceptions.InvalidValue("Token does not contain a valid 'aud' claim."), 401),
    (ValueError("Could not verify token signature."), 401),
    (auth_exceptions.TransportError("Could not fetch certificates at https://x"), 503),
])
def test_each_verification_error_maps_to_its_status(error: Exception, status: int,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzZWNyZXQiOiJ2YWx1ZSJ9.c2lnbmF0dXJlLXNlZ21lbnQ"

    def verify(got: str, audiences: Sequence[str]) -> Mapping[str, Any]:
        # google-auth quotes token segments in some of its messages.
        raise type(error)(f"{error} (segment {got.split('.')[1]}; token {got})")

    with pytest.raises(AuthError) as caught:
        OidcPolicy((AUDIENCE,), frozenset({HUB}), verify).check(token)
    assert caught.value.status == status
    logged = capsys.readouterr().err
    for secret in (token, *token.split(".")):
        assert secret not in caught.value.message and secret not in caught.value.www_authenticate
        assert secret not in logged
