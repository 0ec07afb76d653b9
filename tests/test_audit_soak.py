"""A short run of the audit soak (`bench/soak_audit.py`): 20 every-minute schedules for two
minutes, a worker SIGKILLed 1.5 s after a slot, every slot recorded exactly once. The full soak
(120 schedules, 10 minutes, a kill every 2 minutes) is one command; see README, The audit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


@pytest.mark.timeout(420)
def test_a_short_soak_records_every_slot_once(pubsub_emulator: str,
                                              firestore_emulator: str) -> None:
    env = {**os.environ, "PUBSUB_EMULATOR_HOST": pubsub_emulator,
           "FIRESTORE_EMULATOR_HOST": firestore_emulator}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak_audit.py"), "--schedules", "20",
         "--minutes", "2", "--kill-every", "60"],
        capture_output=True, text=True, timeout=400, env=env, cwd=ROOT, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS: every slot recorded exactly once" in result.stdout
    assert "kills 1" in result.stdout
