"""Moved to `scion_scheduler.google_emulators`; kept only for `scion_scheduler.stack`, which is
being changed elsewhere right now. Delete once stack.py imports google_emulators."""

from scion_scheduler.google_emulators import Emulator, check_prerequisites, free_port

__all__ = ["Emulator", "check_prerequisites", "free_port"]
