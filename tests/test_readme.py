"""The README's promises that code can check: the configuration table and the two commands."""

from __future__ import annotations

import re
from pathlib import Path

from scheduler.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _table_rows() -> dict[str, str]:
    rows = {}
    for line in README.splitlines():
        match = re.match(r"^\| `([A-Z_]+)` \| `(--[a-z-]+)` \|", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_configuration_table_matches_the_code() -> None:
    rows = _table_rows()
    expected = {s.env: s.flag for s in SETTINGS}
    missing = {env: flag for env, flag in expected.items() if rows.get(env) != flag}
    stale = sorted(set(rows) - set(expected))
    assert not missing, f"README configuration table lacks or misnames: {missing}"
    assert not stale, f"README configuration table lists settings the code does not read: {stale}"


def test_the_two_setup_commands_exist_in_the_makefile() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for command in ("make run", "make test"):
        assert command in README
        target = command.split()[1]
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"Makefile has no {target} target"


def test_make_run_and_make_test_run_what_the_tests_drive() -> None:
    # tests/test_local_stack.py drives `scion-scheduler up` on examples/schedules.yaml (its
    # default file) and .ci/run runs `make test`: the commands the README's two targets run.
    import subprocess

    for target, command in (("run", "scion-scheduler up --file examples/schedules.yaml"),
                            ("test", "pytest")):
        dry = subprocess.run(["make", "-n", target, "VENV=.venv"], cwd=ROOT, capture_output=True,
                             text=True, check=True, timeout=60)
        assert command in dry.stdout, f"make {target} no longer runs {command!r}:\n{dry.stdout}"


def _make_run_sample() -> list[str]:
    """The lines of the sample output in the README's `make run` section."""
    section = README.split("### Run it locally: `make run`", 1)[1].split("\n### ", 1)[0]
    match = re.search(r"```text\n(.*?)```", section, re.DOTALL)
    assert match, "the make run section has no ```text sample"
    return match.group(1).splitlines()


def _shape(line: str) -> str:
    """A narrated line without what changes from run to run: the clock stamp, and every word
    with a digit in it (times, IDs, ports, counts, replica numbers)."""
    line = re.sub(r"^(\^C)?\d\d:\d\d:\d\d  ", "", line)
    return " ".join("<x>" if re.search(r"\d", word) else word for word in line.split())


def test_the_make_run_sample_shows_what_the_stack_prints_now() -> None:
    """Every kind of line `up` narrates in an ordinary run, and every summary line, appears in
    the README's sample (up to times, IDs and counts), so the sample cannot drift from the code."""
    import io

    from worker_lines import one_fire

    from scion_scheduler import narration
    from scion_scheduler.reference_hub import FireCall

    out = io.StringIO()
    account = narration.Account(out)
    subscription = "projects/scion-local/subscriptions/scion-fires-workers"
    fire = {
        "schedule_id": "every-minute-ping",
        "fire_time": "2026-11-23T02:49:00Z",
        "execution_id": "e90b5f667fb06167f89c295b60f82c18",
        "trigger": "scheduled",
        "attempt": 1,
    }
    manual = {**fire, "fire_time": "2026-11-23T02:48:24.967575Z", "trigger": "manual"}
    for replica, line in one_fire("vm-1-ab12", subscription, fire, "2026-11-23T02:49:00.010Z",
                                  "2026-11-23T02:49:00.014Z", manual):
        account.worker_line(replica, line)
    account.target_call(
        FireCall(
            "http",
            "",
            "/ping",
            {"idempotency-key": str(fire["execution_id"])},
            None,
            200,
            "2026-11-23T02:49:00.012Z",
        )
    )
    sample = {_shape(line) for line in _make_run_sample()}
    narrated = out.getvalue().splitlines() + account.summary().splitlines()
    missing = [line for line in narrated if _shape(line) not in sample]
    assert not missing, f"the README's make run sample lacks lines like: {missing}"
