"""The HTTP control API refuses targets the workers would refuse (the egress policy), against the
emulators (harness: `api_harness`)."""

from __future__ import annotations

from typing import Any

import pytest
from api_harness import Api, doc, errors_of, make_settings, open_api, path

from worker.sqlite_ledger import SqliteLedger

pytestmark = pytest.mark.emulator


# -- egress policy -------------------------------------------------------------------------------

METADATA_TOKEN_URL = (
    "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token")


def test_put_and_sync_refuse_targets_the_workers_would_refuse(api: Api) -> None:
    """The attack of issue 19: a schedule that makes every replica call the metadata server."""
    before = api.writes()
    attack = doc(action={"type": "http", "method": "GET", "url": METADATA_TOKEN_URL,
                         "headers": {"Metadata-Flavor": "Google"}})
    refused = api.client.put(path("ssrf"), json=attack)
    assert refused.status_code == 422
    assert errors_of(refused) == [
        ("ssrf", "action.url"),
        ("ssrf", "action.headers.Metadata-Flavor"),
    ]
    assert "link-local or metadata" in refused.json()["errors"][0]["reason"]
    loopback = doc(action={"type": "http", "url": "http://127.0.0.1:9/"})
    synced = api.client.post("/v1/schedules:sync", json={"schedules": [{"id": "lo", **loopback}]})
    assert synced.status_code == 422 and errors_of(synced) == [("lo", "action.url")]
    assert api.writes() == before and api.client.get(path("ssrf")).status_code == 404


def test_a_deployment_may_name_a_private_target_but_not_the_metadata_server(
        cloud_scheduler_emulator: Any, pubsub_emulator: str, project_id: str,
        ledger: SqliteLedger) -> None:
    settings = make_settings(cloud_scheduler_emulator, pubsub_emulator, project_id,
                             allowed_targets="https://hub.example/,10.8.0.0/16")
    with open_api(settings, cloud_scheduler_emulator, ledger) as api:
        internal = doc(action={"type": "http", "url": "http://10.8.1.2/run"})
        assert api.client.put(path("internal"), json=internal).status_code == 201
        meta = doc(action={"type": "http", "url": METADATA_TOKEN_URL})
        assert api.client.put(path("meta"), json=meta).status_code == 422
