"""The Cloud Scheduler emulator through the official client: its state file and its fault injection
(helpers: `cloud_scheduler_harness`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cloud_scheduler_harness import JobFactory
from google.api_core import exceptions as gexc
from google.cloud import scheduler_v1

from scheduler.config import Settings
from scheduler.emulator import CloudSchedulerEmulator, EmulatorError
from scheduler.gcp import cloud_scheduler_client

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(120)]


# -- state file ---------------------------------------------------------------------------------


def test_state_file_survives_restart(tmp_path: Any, parent: str, make_job: JobFactory,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state" / "jobs.json"
    with CloudSchedulerEmulator(state_file=state) as first:
        monkeypatch.setenv("CLOUD_SCHEDULER_EMULATOR_HOST", first.host)
        client = cloud_scheduler_client(Settings.from_env())
        kept = client.create_job(parent=parent, job=make_job("kept", description="d"))
        paused = client.pause_job(
            name=client.create_job(parent=parent, job=make_job("paused")).name
        )
        gone = client.create_job(parent=parent, job=make_job("gone"))
        client.delete_job(name=gone.name)
    assert json.loads(state.read_text())["jobs"]
    assert [p.name for p in state.parent.iterdir()] == ["jobs.json"]  # no temporary file left

    with CloudSchedulerEmulator(state_file=state) as second:
        monkeypatch.setenv("CLOUD_SCHEDULER_EMULATOR_HOST", second.host)
        client = cloud_scheduler_client(Settings.from_env())
        jobs = {job.name: job for job in client.list_jobs(parent=parent)}
    assert set(jobs) == {kept.name, paused.name}
    assert jobs[kept.name] == kept
    assert jobs[paused.name].state == scheduler_v1.Job.State.PAUSED
    assert jobs[paused.name].user_update_time == paused.user_update_time


def test_unreadable_state_file_is_an_error(tmp_path: Any) -> None:
    state = tmp_path / "jobs.json"
    state.write_text("{not json")
    with pytest.raises(EmulatorError, match="state file"):
        CloudSchedulerEmulator(state_file=state).start()


# -- fault injection ----------------------------------------------------------------------------


def test_faults_fail_a_share_of_calls_with_the_chosen_code(
    cloud_scheduler_emulator: Any, client: Any, parent: str, make_job: JobFactory
) -> None:
    created = client.create_job(parent=parent, job=make_job())
    cloud_scheduler_emulator.set_faults(
        rate=0.5, codes=("RESOURCE_EXHAUSTED",), methods=["GetJob"], seed=7
    )
    before = cloud_scheduler_emulator.call_counts["GetJob"]
    outcomes = []
    for _ in range(40):
        try:
            client.get_job(name=created.name, retry=None)
            outcomes.append("ok")
        except gexc.ResourceExhausted:
            outcomes.append("exhausted")
    assert 5 < outcomes.count("exhausted") < 35
    assert cloud_scheduler_emulator.call_counts["GetJob"] - before == 40
    assert list(client.list_jobs(parent=parent, retry=None))  # other methods are untouched

    cloud_scheduler_emulator.set_faults(rate=1.0, codes=("UNAVAILABLE",))
    writes = cloud_scheduler_emulator.call_counts["CreateJob"]
    with pytest.raises(gexc.ServiceUnavailable):
        client.create_job(parent=parent, job=make_job("other"))
    assert cloud_scheduler_emulator.call_counts["CreateJob"] == writes + 1
    cloud_scheduler_emulator.clear_faults()
    client.create_job(parent=parent, job=make_job("other"))


def test_client_default_retry_rides_over_unavailable(cloud_scheduler_emulator: Any, client: Any,
                                                      parent: str, make_job: JobFactory) -> None:
    created = client.create_job(parent=parent, job=make_job())
    cloud_scheduler_emulator.set_faults(rate=0.5, methods=["GetJob"], seed=3)
    for _ in range(5):
        assert client.get_job(name=created.name).name == created.name
    assert cloud_scheduler_emulator.call_counts["GetJob"] > 5


def test_fault_settings_are_validated(cloud_scheduler_emulator: Any) -> None:
    for bad in (
        {"rate": 1.5},
        {"rate": 0.1, "codes": ("INTERNAL",)},
        {"rate": 0.1, "methods": ["Nope"]},
    ):
        with pytest.raises(ValueError):
            cloud_scheduler_emulator.set_faults(**bad)
