"""The grove routes' test harness: the HTTP API (`/v1/groves/...`) on the Cloud Scheduler and
Pub/Sub emulators in both modes (the `api` fixture), fed the hub's own JSON.

Where each shape comes from (GoogleCloudPlatform/scion at 770980cb):

* one schedule, as `GET /api/v1/groves/{groveId}/schedules/{id}` writes it
  (`pkg/hub/handlers_schedules.go:298`): `store.Schedule`, `pkg/store/models.go:1076-1093`;
* one event, as `GET .../scheduled-events/{id}` writes it (`handlers_scheduled_events.go:281`):
  `store.ScheduledEvent`, `pkg/store/models.go:1041-1053`;
* listings: `ListSchedulesResponse` (`handlers_schedules.go:58`) and
  `ListScheduledEventsResponse` (`handlers_scheduled_events.go:54`), built by
  `tests/scion_hub_data.py`.

Times are written as Go's encoding/json writes a `time.Time` (RFC 3339, nanoseconds with their
trailing zeros trimmed, so `.5Z`, `.000231Z` or none at all): see `hub_item` below and the
documented examples in `scion_scheduler/api/hub_schemas.py`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from emulated_control import count_document_writes, emulated_settings
from fastapi.testclient import TestClient
from scion_hub_data import new_id

from scheduler.control import SchedulerControl, with_registry
from scheduler.sync import WRITE_METHODS
from scion_scheduler.api import ApiContext, Authenticator, create_app
from scion_scheduler.api.hub_schemas import EXAMPLE_HUB_SCHEDULE

TOKEN = "grove-api-token"


AUTH = {"Authorization": f"Bearer {TOKEN}"}


BODY_LIMIT = 128 * 1024  # a 150-item listing is about 84 KB


GROVE = EXAMPLE_HUB_SCHEDULE["groveId"]


OTHER_GROVE = "5d0c9a3e-7b21-4f6e-8c4d-1e2f3a4b5c6d"


class Api:
    """The app on the emulators, an authenticated and an anonymous client."""

    def __init__(self, client: TestClient, anon: TestClient, control: SchedulerControl,
                 emulator: Any) -> None:
        self.client, self.anon, self.control, self.emulator = client, anon, control, emulator
        registry = control.registry
        self.document_writes = count_document_writes(registry) if registry else None

    def writes(self) -> int:
        """Cloud Scheduler writes, plus registry document writes in ticks mode."""
        documents = self.document_writes[0] if self.document_writes else 0
        return sum(self.emulator.call_counts[m] for m in WRITE_METHODS) + documents

    def job(self, item_id: str) -> Any:
        """The item's job (in ticks mode: the job its document stands for)."""
        return self.control.job_of(item_id)

    def job_ids(self) -> set[str]:
        return {j.name.rsplit("/", 1)[1] for j in self.control.schedule_jobs()}


@pytest.fixture(params=["jobs", "ticks"])
def api(request: pytest.FixtureRequest, cloud_scheduler_emulator: Any, pubsub_emulator: str,
        project_id: str) -> Iterator[Api]:
    """The API on the hub's grove routes, in both modes (issue 17)."""
    settings = emulated_settings(cloud_scheduler_emulator, pubsub_emulator, project_id,
                                 api_retry_timeout="2s", api_token=TOKEN)
    if request.param == "ticks":
        settings = settings.with_overrides(
            mode="ticks", firestore_emulator_host=request.getfixturevalue("firestore_emulator"))
    with with_registry(settings) if request.param == "ticks" else SchedulerControl(settings) \
            as control:
        app = create_app(ApiContext(control, None, Authenticator.from_settings(settings)),
                         max_body_bytes=BODY_LIMIT)
        with TestClient(app, headers=AUTH) as client, TestClient(app) as anon:
            yield Api(client, anon, control, cloud_scheduler_emulator)


def item_path(kind: str, item_id: str, grove: str = GROVE) -> str:
    return f"/v1/groves/{quote(grove, safe='')}/{kind}/{quote(item_id, safe='')}"


def sync_path(grove: str = GROVE) -> str:
    return f"/v1/groves/{quote(grove, safe='')}:sync"


def hub_item(example: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A copy of a documented hub item (a fresh ID unless given) with `fields` changed."""
    return {**copy.deepcopy(example), "id": new_id(), **fields}


def put(api: Api, kind: str, item: dict[str, Any], **kwargs: Any) -> Any:
    return api.client.put(item_path(kind, item["id"], item["groveId"]), json=item, **kwargs)


def errors_of(response: Any) -> list[tuple[str, str]]:
    return [(e["schedule_id"], e["field"]) for e in response.json()["errors"]]


def hub_ids(errors: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(hub ID, field) of refusals that name an item as the CLI does: `ID "name"`."""
    return [(label.split(" ", 1)[0], field) for label, field in errors]
