"""The benchmarks still run: a tiny run of each in a subprocess, exit 0 and its table printed.
No timing is asserted; the benchmarks themselves report speed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench(script: str, *args: str, timeout: float,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`bench/<script> args` run from the project root as the README runs it; not checked."""
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
                          check=False)


@pytest.mark.emulator
@pytest.mark.timeout(300)
def test_bench_sync_in_tick_mode_writes_each_schedule_once_and_nothing_when_in_line(
        pubsub_emulator: str, firestore_emulator: str) -> None:
    env = {**os.environ, "PUBSUB_EMULATOR_HOST": pubsub_emulator,
           "FIRESTORE_EMULATOR_HOST": firestore_emulator}
    result = _bench("bench_sync.py", "--mode", "ticks", "--schedules", "20", timeout=240, env=env)
    assert result.returncode == 0, result.stderr
    title, _header, *rows = result.stdout.splitlines()
    assert title.startswith("tick-mode sync of 20 schedules")
    steps = {line[:36].strip(): int(line.split()[-2] if line.endswith("x") else line.split()[-1])
             for line in rows}
    # The first sync: 20 documents and the tick job; then nothing; then the one change; then
    # nothing again when every document is read (`--verify`).
    assert (steps["first"], steps["no-op"], steps["one change"], steps["no-op --verify"]) == (
        21, 0, 1, 0)


@pytest.mark.emulator
@pytest.mark.timeout(300)
def test_bench_sync_runs_and_prints_its_table(pubsub_emulator: str) -> None:
    env = {**os.environ, "PUBSUB_EMULATOR_HOST": pubsub_emulator}
    result = _bench("bench_sync.py", "--schedules", "20", timeout=240, env=env)
    assert result.returncode == 0, result.stderr
    title, header, rule, *rows = result.stdout.splitlines()
    assert title.startswith("sync of 20 schedules")
    # Columns are separated by two spaces; the rule of dashes gives their spans.
    spans, start = [], 0
    for dashes in rule.split("  "):
        spans.append((start, start + len(dashes)))
        start += len(dashes) + 2
    table = [[line[a:b].strip() for a, b in spans] for line in (header, *rows)]
    columns = table[0]
    assert columns[:4] == ["sync", "wall s", "plan s", "steps"] and "ListJobs" in columns
    steps = {row[0]: int(row[3]) for row in table[1:]}
    assert steps == {"first": 21, "no-op": 0, "one change": 1}  # 20 creates and one pause


@pytest.mark.emulator
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_worker_runs_every_phase_and_checks_its_goals() -> None:
    # It starts its own emulators, like the command in bench/README.md.
    env = {key: value for key, value in os.environ.items()
           if key not in ("PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST")}
    result = _bench("bench_worker.py", "--fires", "60", "--warmup", "0", "--rounds", "1",
                    "--latency-fires", "20", "--latency-rate", "50", timeout=280, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for phase in ("a. raw pull and ack", "b. naive", "c. this worker", "c0. transport + pipeline"):
        assert any(line.startswith(phase) for line in lines), result.stdout
    assert any(line.startswith("fire-to-start latency at 50 fires/s (20 fires)") for line in lines)
    assert lines[-1].startswith("goal: worker >= 3x naive:")


@pytest.mark.emulator
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_claim_runs_and_prints_its_table() -> None:
    env = {key: value for key, value in os.environ.items() if key != "FIRESTORE_EMULATOR_HOST"}
    result = _bench("bench_claim.py", "--ops", "20", "--rounds", "1", timeout=280, env=env)
    assert result.returncode == 0, result.stderr
    for row in ("plain create() of the execution", "FirestoreLedger.claim, new fire, overlap skip",
                "FirestoreLedger.claim, duplicate at another replica (BUSY), overlap skip",
                "SqliteLedger.claim, new fire, overlap skip"):
        assert row in result.stdout, result.stdout


@pytest.mark.emulator
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_bench_chaos_runs_and_prints_its_figures() -> None:
    """A tiny chaos run (100 registered every-minute schedules, one slot each, every fault at a
    tenth of its length): it prints its figures, and the hub never runs a fire twice nor hears
    two calls for one fire at once. Whether every fire ran is the benchmark's own verdict (a
    fire the emulator lost waits for the next audit, which this short run may not wait for)."""
    result = _bench("bench_chaos.py", "--fires", "100", "--minutes", "1", "--publish-seconds",
                    "2", "--scale", "0.1", "--timeout", "40", timeout=380)
    figures = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    assert result.returncode in (0, 1), result.stderr[-3000:]
    assert figures["fires"] == "100" and figures["deliveries"] == "130", result.stdout
    assert figures["duplicate_executions"] == "0", result.stdout
    assert figures["concurrent_calls"] == "0", result.stdout
    assert int(figures["executions"]) + int(figures["lost_fires"]) == 100
    assert "repeated_calls_409" in figures and "recovered_by_audit" in figures
    assert "last_fault_to_drained_s" in figures


def test_bench_cron_runs_and_prints_its_table() -> None:
    result = _bench("bench_cron.py", "--fires", "3", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "robfig/unix" in result.stdout and "Australia/Lord_Howe" in result.stdout


@pytest.mark.emulator
@pytest.mark.timeout(300)
def test_bench_audit_runs_and_finds_what_the_per_schedule_baseline_finds(
        firestore_emulator: str) -> None:
    env = {**os.environ, "FIRESTORE_EMULATOR_HOST": firestore_emulator}
    result = _bench("bench_audit.py", "--schedules", "20", timeout=240, env=env)
    # Exit 0: the audit and the baseline found exactly the slots left unrecorded.
    assert result.returncode == 0, result.stdout + result.stderr
    assert "audit of 20 every-minute schedules" in result.stdout
    assert "1 slots unrecorded" in result.stdout


@pytest.mark.emulator
@pytest.mark.timeout(300)
def test_bench_ticks_sync_and_memory_phases_run(pubsub_emulator: str,
                                               firestore_emulator: str) -> None:
    env = {**os.environ, "PUBSUB_EMULATOR_HOST": pubsub_emulator,
           "FIRESTORE_EMULATOR_HOST": firestore_emulator}
    result = _bench("bench_ticks.py", "--schedules", "30", "--only", "sync", "--only", "memory",
                    timeout=240, env=env)
    assert result.returncode == 0, result.stderr
    assert "no-op sync" in result.stdout and "tick: 30 fires" in result.stdout


def test_bench_egress_runs_both_clients_and_checks_its_goal() -> None:
    result = _bench("bench_egress.py", "--threads", "8", "--seconds", "0.5", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith("httpx (baseline): ") and lines[2].startswith("egress sender: ")
    assert lines[-1].endswith(": met")


def test_proc_cpu_accounts_each_process_and_the_floor() -> None:
    code = (
        "from proc_cpu import CpuAccount, process_cpu_seconds\n"
        "account = CpuAccount({'bench': process_cpu_seconds, 'emulator': None})\n"
        "account.start()\n"
        "sum(i * i for i in range(3_000_000))\n"
        "account.stop()\n"
        "print('\\n'.join(account.lines(1000, 'a test')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=ROOT / "bench", check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("  CPU over a test, ")
    bench = lines[1].split()
    assert bench[0] == "bench" and float(bench[1]) > 0 and bench[4] == "ms/fire"
    assert lines[2].split()[1:] == ["shared,", "not", "counted"]
    assert lines[-1].startswith("  floor on this machine: ")


@pytest.mark.emulator
@pytest.mark.timeout(300)
def test_bench_tick_missed_writes_a_documents_records_once(firestore_emulator: str) -> None:
    env = {**os.environ, "FIRESTORE_EMULATOR_HOST": firestore_emulator}
    result = _bench("bench_tick_missed.py", "--documents", "2", timeout=240, env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "(1000 missed)" in out and "record_all of 1000 records" in out
    assert "all exist (0)" in out and "record one by one (1000)" in out


@pytest.mark.emulator
@pytest.mark.timeout(300)
def test_bench_registry_scan_reads_every_document_with_both_readers(
        firestore_emulator: str) -> None:
    env = {**os.environ, "FIRESTORE_EMULATOR_HOST": firestore_emulator}
    result = _bench("bench_registry_scan.py", "--schedules", "30", "--rounds", "1", timeout=240,
                    env=env)
    assert result.returncode == 0, result.stderr
    title, _header, scan, baseline, ratio = result.stdout.splitlines()
    assert title.startswith("a read of all 30 registry documents")
    assert scan.startswith("registry scan") and baseline.startswith("client snapshots")
    assert ratio.startswith("CPU per document, scan / baseline: ")
