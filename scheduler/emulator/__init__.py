"""A Cloud Scheduler emulator: Google ships emulators for Pub/Sub and Firestore but none for
Cloud Scheduler, so this package serves `google.cloud.scheduler.v1.CloudScheduler` over gRPC for
the official client and (`rest`) over REST for gcloud and REST clients, both over one store,
validates as the real service does, and really fires: at each cron slot every ENABLED job with
a Pub/Sub target publishes to Pub/Sub (normally its emulator), and every one with an HTTP target
calls its URI (`http_target`), with an ID token signed by the emulator's own key (`oidc`).

Run it with `scion-scheduler emulator`, or in-process with `CloudSchedulerEmulator`.
"""

from scheduler.emulator.server import CloudSchedulerEmulator, EmulatorError

__all__ = ["CloudSchedulerEmulator", "EmulatorError"]
