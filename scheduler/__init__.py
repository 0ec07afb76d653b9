"""What should fire and when: the schedule model, cron semantics, job naming, the fire contract,
reconciliation into Cloud Scheduler, the Cloud Scheduler emulator and the local clock.

Nothing in this package imports `worker`; the worker depends on this package, never the reverse.
"""
