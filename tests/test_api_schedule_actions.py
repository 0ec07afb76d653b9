"""The HTTP control API's pause, resume, run and delete, and a failed pause or resume that leaves
the job as it was, against the emulators (harness: `api_harness`)."""

from __future__ import annotations

from datetime import datetime

import pytest
from api_harness import Api, doc, jobs_only, path
from emulated_control import KEY

from scheduler.contract import decode_message, execution_id
from scheduler.gcp import publisher_client, subscriber_client
from scheduler.jobs import is_paused

pytestmark = pytest.mark.emulator


def test_pause_resume_run_and_delete(api: Api) -> None:
    publisher, subscriber = publisher_client(api.settings), subscriber_client(api.settings)
    publisher.create_topic(name=api.settings.topic_path)
    subscriber.create_subscription(
        name=api.settings.subscription_path, topic=api.settings.topic_path
    )
    try:
        assert api.client.put(path("job-1"), json=doc()).status_code == 201

        paused = api.client.post(path("job-1", ":pause"))
        assert paused.status_code == 200
        assert paused.json()["schedule"]["job"]["state"] == "PAUSED"
        assert paused.json()["schedule"]["schedule"]["paused"] is True
        assert paused.json()["schedule"]["next_fires"] == []
        assert api.client.post(path("job-1", ":pause")).status_code == 200  # already paused
        resumed = api.client.post(path("job-1", ":resume"))
        assert resumed.json()["schedule"]["job"]["state"] == "ENABLED"

        run = api.client.post(path("job-1", ":run"))
        assert run.status_code == 200, run.text
        fire_time = datetime.fromisoformat(run.json()["fire_time"].replace("Z", "+00:00"))
        assert run.json()["execution_id"] == execution_id("job-1", fire_time, "manual")
        response = subscriber.pull(subscription=api.settings.subscription_path, max_messages=5,
                                   timeout=30)
        [received] = response.received_messages
        fire = decode_message(received.message.data, dict(received.message.attributes),
                              signing_key=KEY)
        assert (fire.schedule_id, fire.trigger, fire.fire_time) == ("job-1", "manual", fire_time)

        deleted = api.client.delete(path("job-1"))
        assert deleted.status_code == 200 and deleted.json()["schedule"] is None
        assert [o["kind"] for o in deleted.json()["outcomes"]] == ["delete"]
        for method, url in (("GET", path("job-1")), ("DELETE", path("job-1")),
                            ("POST", path("job-1", ":pause")), ("POST", path("job-1", ":resume")),
                            ("POST", path("job-1", ":run")), ("GET", path("job-1", "/executions"))):
            gone = api.client.request(method, url)
            assert gone.status_code == 404, (method, url)
            assert gone.json()["code"] == "not_found"
    finally:
        subscriber.delete_subscription(subscription=api.settings.subscription_path)
        publisher.delete_topic(topic=api.settings.topic_path)
        subscriber.close()
        publisher.stop()


def test_a_new_paused_schedule_whose_pause_fails_leaves_no_job(api: Api) -> None:
    jobs_only(api.settings.mode)
    api.emulator.set_faults(1.0, methods=("PauseJob",))
    failed = api.client.put(path("quiet"), json=doc(paused=True))
    api.emulator.clear_faults()
    assert failed.status_code == 503 and failed.json()["code"] == "unavailable"
    assert [(o["kind"], o["status"]) for o in failed.json()["outcomes"]] == [
        ("create", "ok"), ("pause", "failed"), ("delete", "ok")]
    assert api.client.get(path("quiet")).status_code == 404
    again = api.client.put(path("quiet"), json=doc(paused=True))
    assert again.status_code == 201 and again.json()["schedule"]["job"]["state"] == "PAUSED"


def test_a_failed_change_with_pause_or_resume_leaves_the_job_as_it_was(api: Api) -> None:
    jobs_only(api.settings.mode)
    created = api.client.put(path("kept"), json=doc())
    api.emulator.set_faults(1.0, methods=("UpdateJob",))
    failed = api.client.put(path("kept"), json=doc(cron="9 9 * * *", paused=True))
    api.emulator.clear_faults()
    assert failed.status_code == 503
    assert [(o["kind"], o["status"]) for o in failed.json()["outcomes"]] == [
        ("pause", "ok"), ("update", "failed"), ("resume", "ok")]
    same = api.client.get(path("kept"))
    assert same.headers["ETag"] == created.headers["ETag"]
    assert same.json()["job"]["state"] == "ENABLED"

    paused = api.client.put(path("kept"), json=doc(paused=True))
    api.emulator.set_faults(1.0, methods=("ResumeJob",))
    failed = api.client.put(path("kept"), json=doc(cron="9 9 * * *"))
    api.emulator.clear_faults()
    assert failed.status_code == 503
    assert [(o["kind"], o["status"]) for o in failed.json()["outcomes"]] == [
        ("update", "ok"), ("resume", "failed"), ("pause", "ok"), ("update", "ok")]
    still = api.client.get(path("kept"))
    assert still.headers["ETag"] == paused.headers["ETag"]
    job = api.control.syncer.get_job(api.control.spec.job_id("kept"))
    assert job is not None and is_paused(job) and job.schedule == "0 3 * * *"
