"""Schemathesis against the API's own OpenAPI document: generated requests for every operation
(valid and invalid ones) never get a server error, and responses match the documented schemas.

The app runs in process over ASGI, against the Cloud Scheduler and Pub/Sub emulators, with one
schedule (the documented example ID) so that the examples reach existing-schedule paths too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from scheduler.config import Settings
from scheduler.control import SchedulerControl
from scheduler.gcp import publisher_client
from scheduler.validation import parse_schedule
from scion_scheduler.api import ApiContext, Authenticator, create_app
from scion_scheduler.api.schemas import EXAMPLE_SCHEDULE
from worker.sqlite_ledger import SqliteLedger

TOKEN = "schemathesis-token"
EXAMPLE_ID = "daily-report"

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(240)]


class _CurrentApp:
    """The ASGI app under test: a shell (enough to serve the OpenAPI document, which does not
    depend on the backends) until a test installs one wired to the emulators."""

    def __init__(self) -> None:
        shell = Settings.from_env({}, project="p", location="l", topic="t", api_token=TOKEN,
                                  cloud_scheduler_emulator_host="127.0.0.1:9")
        # gRPC channels connect lazily: the shell never reaches the address above.
        self.shell = create_app(ApiContext(SchedulerControl(shell), None,
                                           Authenticator.from_settings(shell)))
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await (self.app or self.shell)(scope, receive, send)


CURRENT = _CurrentApp()
schema = schemathesis.openapi.from_asgi("/openapi.json", CURRENT)


@pytest.fixture
def live_app(cloud_scheduler_emulator: Any, pubsub_emulator: str, project_id: str,
             tmp_path: Path) -> Iterator[None]:
    config = Settings.from_env(
        {}, project=project_id, location="us-central1", topic="fires",
        cloud_scheduler_emulator_host=cloud_scheduler_emulator.host,
        pubsub_emulator_host=pubsub_emulator, api_token=TOKEN, write_rate="1000",
        api_retry_initial="0.01s", api_retry_maximum="0.05s", api_retry_timeout="2s",
    )
    publisher = publisher_client(config)
    publisher.create_topic(name=config.topic_path)
    with SchedulerControl(config, publisher=publisher) as control:
        assert control.upsert(parse_schedule({"id": EXAMPLE_ID, **EXAMPLE_SCHEDULE})).ok
        ledger = SqliteLedger(tmp_path / "ledger.db")
        CURRENT.app = create_app(ApiContext(control, ledger, Authenticator.from_settings(config)),
                                 max_body_bytes=256 * 1024)
        try:
            yield
        finally:
            CURRENT.app = None
    publisher.delete_topic(topic=config.topic_path)
    publisher.stop()


@schema.parametrize()
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_no_server_errors_and_responses_match_the_document(case: Any, live_app: None) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"},
        checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                response_schema_conformance],
    )
