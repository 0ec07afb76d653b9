"""Settings (environment, flags, required settings, formats) and structured logs."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from scheduler import logs
from scheduler.cli_base import new_parser, settings_from_args
from scheduler.config import SETTINGS, SETTINGS_BY_ATTR, ConfigError, Settings

# --- settings -------------------------------------------------------------------------------------

def test_every_setting_has_one_field_one_variable_and_one_flag() -> None:
    attrs = [s.attr for s in SETTINGS]
    envs = [s.env for s in SETTINGS]
    flags = [s.flag for s in SETTINGS]
    assert len(set(attrs)) == len(set(envs)) == len(set(flags)) == len(SETTINGS)
    assert set(attrs) == set(Settings.__dataclass_fields__)
    assert all(f.startswith("--") for f in flags)
    assert SETTINGS_BY_ATTR["signing_key"].env == "SCION_SCHEDULER_SIGNING_KEY"
    assert SETTINGS_BY_ATTR["signing_key"].secret


def test_environment_variables_are_read() -> None:
    settings = Settings.from_env({
        "SCION_SCHEDULER_PROJECT": "my-project",
        "SCION_SCHEDULER_LOCATION": "europe-west1",
        "SCION_SCHEDULER_JOB_PREFIX": "hub-prod-",
        "SCION_SCHEDULER_SIGNING_KEY": "k",
        "PUBSUB_EMULATOR_HOST": "localhost:8085",
    })
    assert settings.project == "my-project"
    assert settings.location == "europe-west1"
    assert settings.job_prefix == "hub-prod-"
    assert settings.signing_key == "k"
    assert settings.pubsub_emulator_host == "localhost:8085"
    assert settings.location_path == "projects/my-project/locations/europe-west1"
    assert settings.topic_path == "projects/my-project/topics/scion-fires"
    assert settings.subscription_path == "projects/my-project/subscriptions/scion-fires-workers"


def test_defaults_fill_unset_and_empty_variables() -> None:
    settings = Settings.from_env({"SCION_SCHEDULER_LOCATION": ""})
    for setting in SETTINGS:
        default = None if setting.default is None else setting.parse(setting.default)
        assert getattr(settings, setting.attr) == default, setting.attr
    assert settings == Settings()
    assert settings.project is None and settings.signing_key is None
    assert settings.location == "us-central1" and settings.job_retry_count == 3
    assert settings.one_shot_grace == timedelta(minutes=10) and settings.write_rate == 5.0


def test_settings_are_parsed_once_into_typed_values() -> None:
    settings = Settings.from_env({
        "SCION_SCHEDULER_JOB_RETRY_COUNT": "5", "SCION_SCHEDULER_JOB_MIN_BACKOFF": "1m30s",
        "SCION_SCHEDULER_WRITE_RATE": "2.5", "SCION_SCHEDULER_LOG_FORMAT": "json",
        "SCION_SCHEDULER_API_AUDIENCE": "a, b,", "SCION_SCHEDULER_ALLOWED_TARGETS": "*.run.app",
    }, job_max_retry_duration="0s", api_token="")
    assert settings.job_retry_count == 5 and settings.write_rate == 2.5
    assert settings.job_min_backoff == timedelta(seconds=90)
    assert settings.job_max_retry_duration == timedelta(0)
    assert settings.log_format == "json" and settings.api_audience == ("a", "b")
    assert settings.allowed_targets.check_url("https://x.run.app/") is None
    assert settings.api_token is None  # an empty flag is no value


@pytest.mark.parametrize(("env", "value", "reason"), [
    ("SCION_SCHEDULER_JOB_RETRY_COUNT", "6", "must be a whole number from 0 to 5 (got '6')"),
    ("SCION_SCHEDULER_SYNC_CONCURRENCY", "many", "must be a whole number from 1 to 64"),
    ("SCION_SCHEDULER_WRITE_RATE", "inf", "must be a positive number (got 'inf')"),
    ("SCION_SCHEDULER_AUDIT_GRACE", "0s", "must be longer than zero (got '0s')"),
    ("SCION_SCHEDULER_ONE_SHOT_GRACE", "soon", "must be a duration such as"),
    ("SCION_SCHEDULER_LOG_FORMAT", "xml", "must be auto, json or console (got 'xml')"),
    ("SCION_SCHEDULER_ALLOWED_TARGETS", "http://", ""),
])
def test_a_bad_value_names_the_setting_the_value_and_the_reason(
        env: str, value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({env: value})
    message = str(info.value)
    assert message.startswith(f"{env}: ") and reason in message and "\n" not in message
    attr = next(s.attr for s in SETTINGS if s.env == env)
    with pytest.raises(ConfigError, match=env):
        Settings.from_env({}, **{attr: value})  # the same as a flag
    Settings.from_env({env: value}, **{attr: SETTINGS_BY_ATTR[attr].default})  # a flag wins


def test_flags_override_environment_variables() -> None:
    env = {"SCION_SCHEDULER_PROJECT": "from-env", "SCION_SCHEDULER_TOPIC": "env-topic"}
    settings = Settings.from_env(env, project="from-flag", topic=None)
    assert settings.project == "from-flag"
    assert settings.topic == "env-topic"  # a flag not given leaves the variable's value


def test_command_line_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCION_SCHEDULER_PROJECT", "from-env")
    monkeypatch.setenv("SCION_SCHEDULER_JOB_PREFIX", "env-")
    parser = new_parser("prog", "test")
    args = parser.parse_args(["--project", "from-flag", "--location", "asia-east1"])
    settings = settings_from_args(args)
    assert (settings.project, settings.location, settings.job_prefix) == (
        "from-flag",
        "asia-east1",
        "env-",
    )
    with pytest.raises(ConfigError, match="JOB_PREFIX"):
        settings_from_args(parser.parse_args(["--job-prefix", "bad prefix"]))


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.from_env({}, projekt="x")


def test_require_names_every_missing_setting_with_variable_and_flag() -> None:
    settings = Settings.from_env({})
    with pytest.raises(ConfigError) as info:
        settings.require("project", "location", "signing_key")
    message = str(info.value)
    assert "SCION_SCHEDULER_PROJECT (or --project)" in message
    assert "SCION_SCHEDULER_SIGNING_KEY (or --signing-key)" in message
    assert "LOCATION" not in message  # it has a default
    Settings.from_env({"SCION_SCHEDULER_PROJECT": "p"}).require("project", "location")
    with pytest.raises(ConfigError, match="SCION_SCHEDULER_PROJECT"):
        _ = settings.location_path


@pytest.mark.parametrize("prefix", [
    "", "scion/", "scion ", "a b", "é-", "scion.", "x" * 101, "scion-\n", "\nscion-", "scion-\x00",
])
def test_bad_job_prefix_is_rejected(prefix: str) -> None:
    with pytest.raises(ConfigError, match="SCION_SCHEDULER_JOB_PREFIX"):
        Settings.from_env({}, job_prefix=prefix)


@pytest.mark.parametrize("prefix", ["scion-", "a", "Hub_Prod-1_", "x" * 100])
def test_good_job_prefixes(prefix: str) -> None:
    assert Settings.from_env({"SCION_SCHEDULER_JOB_PREFIX": prefix}).job_prefix == prefix


def test_bad_formats_of_other_settings_are_rejected() -> None:
    with pytest.raises(ConfigError, match="COLLECTION_PREFIX"):
        Settings.from_env({"SCION_SCHEDULER_COLLECTION_PREFIX": "a/b"})
    with pytest.raises(ConfigError, match="COLLECTION_PREFIX"):
        Settings.from_env({"SCION_SCHEDULER_COLLECTION_PREFIX": "scion_\n"})
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        Settings.from_env({"SCION_SCHEDULER_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError,
                       match=r"SCION_SCHEDULER_MODE: must be jobs or ticks \(got 'tick'\)"):
        Settings.from_env({"SCION_SCHEDULER_MODE": "tick"})
    assert Settings.from_env({}).mode == "jobs"
    assert Settings.from_env({}, mode="ticks").mode == "ticks"


@pytest.mark.parametrize(
    "url", ["hub.example.com", "ftp://hub.example.com", "http://[::1", "https://"]
)
def test_bad_hub_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="SCION_HUB_URL"):
        Settings.from_env({"SCION_HUB_URL": url})


# --- logs -----------------------------------------------------------------------------------------

@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    logs.flush()
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    text = buf.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_are_one_object_per_line_for_cloud_logging() -> None:
    buf = io.StringIO()
    logs.configure("json", stream=buf)
    log = logs.get_logger("scheduler.test")
    before = datetime.now(UTC)
    log.info("fire claimed", schedule_id="daily-report", execution_id="e1",
             fire_time="2026-06-01T12:00:00Z")
    log.warning("late")
    log.error("failed", attempt=2)
    first, second, third = lines(buf)
    assert first["severity"] == "INFO" and first["message"] == "fire claimed"
    assert first["schedule_id"] == "daily-report" and first["execution_id"] == "e1"
    assert first["fire_time"] == "2026-06-01T12:00:00Z"
    stamp = datetime.fromisoformat(str(first["timestamp"]).replace("Z", "+00:00"))
    assert stamp.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=5) <= stamp <= datetime.now(UTC) + timedelta(seconds=5)
    assert "event" not in first and "logging.googleapis.com/trace" not in first
    assert (second["severity"], third["severity"], third["attempt"]) == ("WARNING", "ERROR", 2)


@pytest.mark.usefixtures("restore_logging")
def test_bound_trace_becomes_the_cloud_logging_trace_field() -> None:
    buf = io.StringIO()
    logs.configure("json", stream=buf)
    trace = "projects/my-project/traces/0123456789abcdef0123456789abcdef"
    with structlog.contextvars.bound_contextvars(trace=trace, schedule_id="s1"):
        logs.get_logger("t").info("inside")
    logs.get_logger("t").info("outside")
    inside, outside = lines(buf)
    assert inside["logging.googleapis.com/trace"] == trace and "trace" not in inside
    assert inside["schedule_id"] == "s1"
    assert "logging.googleapis.com/trace" not in outside and "schedule_id" not in outside


@pytest.mark.usefixtures("restore_logging")
def test_exceptions_and_unusual_values_still_give_one_json_line() -> None:
    buf = io.StringIO()
    logs.configure("json", stream=buf)
    log = logs.get_logger("t")
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        log.exception("action failed", when=datetime(2026, 1, 1, tzinfo=UTC), data={"k": b"x"})
    (entry,) = lines(buf)
    assert entry["severity"] == "ERROR" and entry["message"] == "action failed"
    assert "RuntimeError" in str(entry["exception"]) and "boom" in str(entry["exception"])


@pytest.mark.usefixtures("restore_logging")
def test_level_filters_lower_severities() -> None:
    buf = io.StringIO()
    logs.configure("json", level="warning", stream=buf)
    log = logs.get_logger("t")
    log.debug("no")
    log.info("no")
    log.warning("yes")
    assert [e["message"] for e in lines(buf)] == ["yes"]


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.usefixtures("restore_logging")
def test_auto_is_json_when_not_a_terminal() -> None:
    buf = io.StringIO()
    logs.configure("auto", stream=buf)
    logs.get_logger("t").info("hello", k=1)
    [entry] = lines(buf)
    assert (entry["message"], entry["severity"], entry["k"]) == ("hello", "INFO", 1)
    assert datetime.fromisoformat(
        str(entry["timestamp"]).replace("Z", "+00:00")
    ).utcoffset() == timedelta(0)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", ["auto", None])
def test_auto_is_key_value_on_a_terminal(fmt: str | None) -> None:
    tty = Terminal()
    logs.configure(fmt, stream=tty)
    logs.get_logger("t").info("fire claimed", schedule_id="daily-report", attempt=2)
    text = ANSI.sub("", tty.getvalue())
    assert "fire claimed" in text and "schedule_id=daily-report" in text and "attempt=2" in text
    assert not text.lstrip().startswith("{")


@pytest.mark.usefixtures("restore_logging")
def test_json_is_json_even_on_a_terminal() -> None:
    tty = Terminal()
    logs.configure("json", stream=tty)
    logs.get_logger("t").info("hello")
    [entry] = lines(tty)
    assert entry["message"] == "hello" and entry["severity"] == "INFO" and "timestamp" in entry


@pytest.mark.usefixtures("restore_logging")
def test_console_format_is_key_value() -> None:
    buf = io.StringIO()
    logs.configure("console", stream=buf)
    logs.get_logger("t").info("fire claimed", schedule_id="daily-report", attempt=2)
    text = buf.getvalue()
    assert "fire claimed" in text
    assert "schedule_id=daily-report" in text and "attempt=2" in text
    assert not text.lstrip().startswith("{")
    assert "\x1b[" not in text  # no colours when the stream is not a terminal


@pytest.mark.usefixtures("restore_logging")
def test_without_a_stream_lines_go_to_the_current_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logs.configure("json")
    logs.get_logger("t").info("one")
    assert json.loads(first.getvalue())["message"] == "one"
    # stderr replaced (and the old one closed), as pytest's capture does between tests.
    monkeypatch.setattr(sys, "stderr", second)
    first.close()
    logs.get_logger("t").info("two")
    assert lines(second)[0]["message"] == "two"


def test_severity_names_cover_every_level() -> None:
    for method, level in [("debug", "DEBUG"), ("info", "INFO"), ("warning", "WARNING"),
                          ("error", "ERROR"), ("critical", "CRITICAL"), ("exception", "ERROR")]:
        assert logs.add_severity(None, method, {})["severity"] == level
        assert logging.getLevelName(level) != f"Level {level}"


@pytest.mark.usefixtures("restore_logging")
def test_background_lines_from_many_threads_are_whole_in_order_and_flushed() -> None:
    """A worker's lines, written by one thread: each thread's lines whole and in its order,
    and all of them out once `flush` returns."""
    buf = io.StringIO()
    logs.configure("json", stream=buf, background=True)
    log = logs.get_logger("worker.test")

    def fire(thread: int) -> None:
        for n in range(200):
            with logs.bound(execution_id=f"{thread}-{n}"):
                log.info("action starting", n=n, thread=thread)

    threads = [threading.Thread(target=fire, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logs.flush()
    written = lines(buf)
    assert len(written) == 16 * 200
    for thread in range(16):
        mine = [line["n"] for line in written if line["thread"] == thread]
        assert mine == list(range(200))
    assert all(line["execution_id"] == f"{line['thread']}-{line['n']}" for line in written)


@pytest.mark.usefixtures("restore_logging")
def test_configuring_again_writes_what_the_background_writer_still_held() -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.configure("json", stream=first, background=True)
    for n in range(100):
        logs.get_logger("t").info("queued", n=n)
    logs.configure("json", stream=second)
    logs.get_logger("t").info("after")
    assert [line["n"] for line in lines(first)] == list(range(100))
    assert [line["message"] for line in lines(second)] == ["after"]


@pytest.mark.usefixtures("restore_logging")
def test_a_closed_stream_does_not_stop_the_background_writer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logs.configure("json", background=True)
    first.close()
    logs.get_logger("t").info("lost")
    logs.flush()
    monkeypatch.setattr(sys, "stderr", second)
    logs.get_logger("t").info("kept")
    logs.flush()
    assert [line["message"] for line in lines(second)] == ["kept"]


def test_a_process_logging_in_the_background_writes_every_line_before_it_leaves() -> None:
    """`scion-worker run` writes its lines from one thread; even the last ones are out when
    the process exits (here: a process that logs 500 lines and ends at once)."""
    result = subprocess.run([sys.executable, "-c", (
        "import sys; from scheduler import logs\n"
        "logs.configure('json', background=True)\n"
        "[logs.get_logger('t').info('line', n=n) for n in range(500)]\n")],
        capture_output=True, text=True, timeout=60, check=True)
    assert [json.loads(line)["n"] for line in result.stderr.splitlines()] == list(range(500))
