"""Google Cloud clients, built the same way everywhere: emulators when their variable is set.

The Pub/Sub and Firestore libraries honour `PUBSUB_EMULATOR_HOST` and `FIRESTORE_EMULATOR_HOST`
themselves. Cloud Scheduler has no emulator of Google's, so `CLOUD_SCHEDULER_EMULATOR_HOST`
(this project's `scion-scheduler emulator`) is wired here with an insecure channel.
"""

from __future__ import annotations

import os
from typing import Any

from scheduler.config import Settings


def _apply_emulator_env(settings: Settings) -> None:
    # The client libraries read these from the environment, so a flag must land there too.
    for attr, env in (("pubsub_emulator_host", "PUBSUB_EMULATOR_HOST"),
                      ("firestore_emulator_host", "FIRESTORE_EMULATOR_HOST")):
        value = getattr(settings, attr)
        if value:
            os.environ[env] = value


def require_credentials(settings: Settings) -> None:
    """Fail as the Pub/Sub or Firestore client would at its start without Google credentials
    (`DefaultCredentialsError`), without loading either library: both ask for the application
    default credentials unless their emulator is set."""
    _apply_emulator_env(settings)
    if os.environ.get("PUBSUB_EMULATOR_HOST") and os.environ.get("FIRESTORE_EMULATOR_HOST"):
        return
    import google.auth

    google.auth.default()


def cloud_scheduler_client(settings: Settings) -> Any:
    """A `CloudSchedulerClient`, talking to the emulator when one is configured."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import scheduler_v1
    from google.cloud.scheduler_v1.services.cloud_scheduler.transports import (
        CloudSchedulerGrpcTransport,
    )

    host = settings.cloud_scheduler_emulator_host
    if not host:
        return scheduler_v1.CloudSchedulerClient()
    import grpc

    channel = grpc.insecure_channel(host)
    transport = CloudSchedulerGrpcTransport(channel=channel, credentials=AnonymousCredentials())
    return scheduler_v1.CloudSchedulerClient(
        transport=transport, client_options=ClientOptions(api_endpoint=host)
    )


def publisher_client(settings: Settings, batch_settings: Any = ()) -> Any:
    """A Pub/Sub `PublisherClient` (`batch_settings`: a `pubsub_v1.types.BatchSettings`, for a
    publisher of many messages at once)."""
    import google.cloud.pubsub_v1 as pubsub_v1

    _apply_emulator_env(settings)
    return pubsub_v1.PublisherClient(batch_settings=batch_settings)


def subscriber_client(settings: Settings) -> Any:
    """A Pub/Sub `SubscriberClient`."""
    import google.cloud.pubsub_v1 as pubsub_v1

    _apply_emulator_env(settings)
    return pubsub_v1.SubscriberClient()


def firestore_client(settings: Settings) -> Any:
    """A Firestore `Client` for the configured project and database."""
    from google.cloud import firestore

    _apply_emulator_env(settings)
    return firestore.Client(
        project=settings.value("project"), database=settings.database or "(default)"
    )
