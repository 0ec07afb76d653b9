"""A Cloud Scheduler emulator: Google ships emulators for Pub/Sub and Firestore but none for
Cloud Scheduler, so this package serves `google.cloud.scheduler.v1.CloudScheduler` over gRPC for
the official client, validates as the real service does, and really fires: every ENABLED job
with a Pub/Sub target publishes to Pub/Sub (normally its emulator) at each cron slot.

Run it with `scion-scheduler emulator`, or in-process with `CloudSchedulerEmulator`.
"""

from scheduler.emulator.server import CloudSchedulerEmulator, EmulatorError

__all__ = ["CloudSchedulerEmulator", "EmulatorError"]
