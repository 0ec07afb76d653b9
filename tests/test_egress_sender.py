"""The worker's egress sender and its connections: reuse, a server that closes them, many
threads at once, TLS to a checked address. Real local servers throughout; the policy's own
refusals are `test_egress_send_time.py`."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import worker.egress_sender as egress_sender
from scheduler.egress import EgressPolicy
from worker.egress_sender import EgressSender, Reply, SendError

LOOPBACK = EgressPolicy.parse("127.0.0.1")


class _Listener(ThreadingHTTPServer):
    # Room for every thread of the concurrency test to connect at once (the default is 5).
    request_queue_size = 128


class Server:
    """A keep-alive HTTP/1.1 server recording (path, client port, Idempotency-Key) per
    request: one client port per connection. `drop_reused`: a request that is not its
    connection's first is read and then answered by closing the connection (what a server
    closing an idle connection as the request arrives looks like). `close_after`: every
    connection is closed right after its first answer, without saying so."""

    def __init__(self, *, drop_reused: bool = False, close_after: bool = False,
                 tls: ssl.SSLContext | None = None) -> None:
        self.seen: list[tuple[str, int, str]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.served = 0

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with server.lock:
                    server.seen.append((self.path, self.client_address[1],
                                        self.headers.get("Idempotency-Key", "")))
                self.served += 1
                if drop_reused and self.served > 1:
                    self.close_connection = True
                    return
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if close_after:
                    self.close_connection = True

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = _Listener(("127.0.0.1", 0), Handler)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def connections(self) -> int:
        with self.lock:
            return len({port for _, port, _ in self.seen})

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(**options: Any) -> Server:
        started.append(Server(**options))
        return started[-1]

    yield start
    for server in started:
        server.close()


def post(sender: EgressSender, url: str, key: str = "k") -> Reply:
    return sender.send("POST", url, headers={"Idempotency-Key": key}, body=b"{}", timeout=5)


def test_a_connection_is_reused_and_the_answer_read_whole(serve: Callable[..., Server]) -> None:
    server = serve()
    sender = EgressSender(LOOPBACK)
    replies = [post(sender, server.url(f"/{i}")) for i in range(5)]
    sender.close()
    assert [r.status_code for r in replies] == [200] * 5
    assert replies[0].json() == {"ok": True} and replies[0].text == '{"ok": true}'
    assert server.connections() == 1


def test_many_threads_each_get_their_answer_once(serve: Callable[..., Server]) -> None:
    """64 threads, 2,000 requests: every one answered and sent exactly once, over no more
    connections than threads (each connection serves one request at a time)."""
    server = serve()
    sender = EgressSender(LOOPBACK)
    with ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(lambda i: post(sender, server.url(f"/{i}"), str(i)).status_code,
                                 range(2000)))
    sender.close()
    assert statuses == [200] * 2000
    keys = [key for _, _, key in server.seen]
    assert sorted(keys) == sorted(str(i) for i in range(2000))
    assert server.connections() <= 64


def test_a_connection_its_server_closed_while_idle_is_not_used(
        serve: Callable[..., Server]) -> None:
    server = serve(close_after=True)
    sender = EgressSender(LOOPBACK)
    for i in range(3):
        assert post(sender, server.url(f"/{i}"), str(i)).status_code == 200
    sender.close()
    # Each request once, each on a new connection: the closed one was seen closed, not tried.
    assert [key for _, _, key in server.seen] == ["0", "1", "2"]
    assert server.connections() == 3


def test_a_request_a_reused_connection_loses_unanswered_is_sent_once_more_on_a_new_one(
        serve: Callable[..., Server]) -> None:
    """The server reads the request and closes without an answer; the sender cannot tell
    that from a close while idle, so it sends again, with the same Idempotency-Key."""
    server = serve(drop_reused=True)
    sender = EgressSender(LOOPBACK)
    assert post(sender, server.url("/first"), "a").status_code == 200
    assert post(sender, server.url("/second"), "b").status_code == 200
    sender.close()
    assert [(path, key) for path, _, key in server.seen] == [
        ("/first", "a"), ("/second", "b"), ("/second", "b")]
    assert server.connections() == 2


def test_an_idle_connection_past_its_expiry_is_closed_not_reused(
        serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve()
    monkeypatch.setattr(egress_sender, "IDLE_EXPIRY_S", 0.0)
    sender = EgressSender(LOOPBACK)
    post(sender, server.url("/a"))
    post(sender, server.url("/b"))
    sender.close()
    assert server.connections() == 2


def test_nothing_listening_is_a_retryable_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SendError, match="ConnectionRefusedError") as failure:
        post(EgressSender(LOOPBACK), f"http://127.0.0.1:{port}/")
    assert failure.value.retryable


@pytest.mark.parametrize(("headers", "body", "reason"), [
    ({"X-Bad": "a\r\nInjected: yes"}, None, "cannot send: Invalid header value"),
    ({"X-Name": "caf\u00e9\u2603"}, None, "cannot send"),
])
def test_a_request_that_cannot_be_written_fails_without_retry(
        serve: Callable[..., Server], headers: dict[str, str], body: bytes | None,
        reason: str) -> None:
    server = serve()
    with pytest.raises(SendError, match=reason) as failure:
        EgressSender(LOOPBACK).send("POST", server.url("/"), headers=headers, body=body,
                                    timeout=5)
    assert not failure.value.retryable and server.seen == []


def test_a_url_beyond_ascii_is_sent_percent_encoded(serve: Callable[..., Server]) -> None:
    server = serve()
    sender = EgressSender(LOOPBACK)
    post(sender, server.url("/caf\u00e9 x/a%2Fb?q=\u00fc&r=1"))
    sender.close()
    assert [path for path, _, _ in server.seen] == ["/caf%C3%A9%20x/a%2Fb?q=%C3%BC&r=1"]


def test_the_answer_text_follows_its_charset() -> None:
    assert Reply(200, "é".encode("latin-1"), "text/plain; charset=ISO-8859-1").text == "é"
    assert Reply(200, "é".encode(), "text/plain").text == "é"
    assert Reply(200, b"\xff", "text/plain; charset=nonsense").text == "\ufffd"


# --------------------------------------------------------------------------- TLS


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for `hub.test` (and its key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hub.test")])
    now = datetime.now(UTC)
    issued = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName("hub.test")]),
                             critical=False)
              .sign(key, hashes.SHA256()))
    cert, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(issued.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert, key_file


def test_tls_verifies_the_urls_host_on_the_checked_address(
        serve: Callable[..., Server], certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    server = serve(tls=tls)
    trusting = ssl.create_default_context(cafile=str(cert))
    lookups: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    sender = EgressSender(EgressPolicy.parse("hub.test"), resolve=resolve, ssl_context=trusting)
    assert post(sender, server.url("/ok", "hub.test", "https")).status_code == 200
    assert post(sender, server.url("/again", "hub.test", "https")).status_code == 200
    sender.close()
    assert lookups == ["hub.test"] and server.connections() == 1
    # The same server under another name: its certificate does not name it.
    other = EgressSender(EgressPolicy.parse("other.test"), resolve=resolve,
                         ssl_context=trusting)
    with pytest.raises(SendError, match=r"CERTIFICATE_VERIFY_FAILED|Hostname mismatch"):
        post(other, server.url("/ok", "other.test", "https"))
