"""The worker's health server, `scion-worker run`'s flags, and the outcomes' strings (helpers:
`transport_harness`)."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any

import pytest

from scheduler.config import Settings
from worker import cli
from worker.health import HealthServer
from worker.ledger import FINAL_STATES
from worker.metrics import WorkerMetrics
from worker.transport import Outcome

# The health server.


def test_health_server_endpoints() -> None:
    metrics = WorkerMetrics()
    metrics.executions.labels("succeeded").inc()
    ready = [False]
    server = HealthServer(
        0, ready=lambda: ready[0], registry=metrics.registry, host="127.0.0.1"
    ).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with urllib.request.urlopen(f"{base}/livez", timeout=5) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/readyz", timeout=5)
        assert info.value.code == 503
        ready[0] = True
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
            assert response.status == 200
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=")
            body = response.read().decode()
        assert 'scion_worker_executions_total{outcome="succeeded"} 1.0' in body
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/nope", timeout=5)
        assert info.value.code == 404
    finally:
        server.stop()


# `scion-worker run` flags.


def _parsed_run(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> tuple[Any, Settings]:
    for name in ("PORT", "SCION_SCHEDULER_SUBSCRIPTION", "SCION_SCHEDULER_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    seen: dict[str, Any] = {}

    def fake_run_worker(settings: Settings, options: Any) -> int:
        seen["settings"], seen["options"] = settings, options
        return 0

    monkeypatch.setattr("worker.runner.run_worker", fake_run_worker)
    assert cli.main(argv) == 0
    return seen["options"], seen["settings"]


def test_run_flags_after_the_command_and_port_default(monkeypatch: pytest.MonkeyPatch) -> None:
    options, settings = _parsed_run(
        [
            "--project",
            "p1",
            "run",
            "--subscription",
            "subs",
            "--executors",
            "3",
            "--max-messages",
            "7",
            "--grace-period",
            "2.5",
            "--lease",
            "3",
        ],
        monkeypatch,
        {"PORT": "9191"},
    )
    assert settings.project == "p1" and settings.subscription == "subs"
    assert options.health_port == 9191 and options.executors == 3 and options.max_messages == 7
    assert options.grace_period == timedelta(seconds=2.5) and options.lease == timedelta(seconds=3)

    options, settings = _parsed_run(["run", "--health-port", "0"], monkeypatch,
                                    {"SCION_SCHEDULER_SUBSCRIPTION": "from-env"})
    assert options.health_port == 0 and settings.subscription == "from-env"
    options, _ = _parsed_run(["run"], monkeypatch, {})
    assert options.health_port == 8080 and options.grace_period == timedelta(seconds=30)


@pytest.mark.parametrize(("argv", "env", "named"), [
    (["run", "--executors", "0"], {}, "--executors"),
    (["run", "--lease", "soon"], {}, "--lease"),
    (["run", "--health-port", "70000"], {}, "--health-port"),
    (["run", "--max-lease-extension", "601"], {}, "--max-lease-extension"),
    (["run"], {"PORT": "http"}, "PORT"),
])
def test_run_rejects_bad_flags_naming_them(
    argv: list[str], env: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("PORT", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse exits 2 on a bad flag value
        code = int(exc.code or 0)
    assert code == 2
    assert named in capsys.readouterr().err


def test_run_requires_project_and_subscription(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SCION_SCHEDULER_PROJECT", raising=False)
    monkeypatch.setenv("SCION_SCHEDULER_SUBSCRIPTION", "")
    assert cli.main(["run", "--health-port", "0"]) == 2
    err = capsys.readouterr().err
    assert "SCION_SCHEDULER_PROJECT" in err


def test_outcomes_keep_their_strings_and_name_every_final_state() -> None:
    # The strings are the `outcome` label of `scion_worker_executions` and the log field:
    # dashboards and alerts match them, so they never change.
    assert [str(outcome) for outcome in Outcome] == [
        "succeeded", "failed", "cancelled", "skipped", "missed", "duplicate", "busy", "not_due",
        "retry", "rejected", "interrupted", "lost", "error"]
    assert all(Outcome(state.value) == state for state in FINAL_STATES)
    metrics = WorkerMetrics()
    metrics.executions.labels(Outcome.NOT_DUE).inc()
    assert metrics.registry.get_sample_value(
        "scion_worker_executions_total", {"outcome": "not_due"}) == 1.0
