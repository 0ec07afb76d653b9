"""How fast does a worker derive a fire time? One command: `.venv/bin/python bench/bench_cron.py`.

A hub schedule's publish is mapped to its slot with robfig's semantics (`scheduler.cron_robfig`:
forward `Next` walks from ever earlier starts), a native one's with unix-cron (croniter's
backward walk). This times `Fire.derive_fire_time` for both dialects on the same expressions and
zones, in the same run, and prints derivations per second and the ratio. Figures depend on the
machine and its load; compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

from scheduler.contract import Fire
from scheduler.cron import CronDialect, next_fires
from scheduler.model import Action

CASES = [
    ("* * * * *", "UTC"), ("*/15 * * * *", "Europe/Berlin"), ("0 9 * * 1-5", "Europe/Berlin"),
    ("30 2 * * *", "America/New_York"), ("0 0 1 * *", "UTC"), ("0 5 * * *", "Australia/Lord_Howe"),
]
START = datetime(2026, 9, 20, tzinfo=UTC)


def _rate(fire: Fire, publishes: list[datetime]) -> float:
    began = time.perf_counter()
    for published in publishes:
        fire.derive_fire_time(published)
    return len(publishes) / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fires", type=int, default=200, help="publishes per case (default 200)")
    args = parser.parse_args()
    print(f"{'cron':<14} {'zone':<20} {'unix /s':>9} {'robfig /s':>10} {'robfig/unix':>12}")
    for cron, zone in CASES:
        rates = []
        for dialect in (CronDialect.UNIX, CronDialect.ROBFIG):
            fire = Fire("bench", "f", cron, zone, Action("http", {}), cron_dialect=dialect)
            slots = next_fires(fire, START, args.fires)
            publishes = [slot + timedelta(seconds=2) for slot in slots]
            rates.append(_rate(fire, publishes))
        ratio = rates[1] / rates[0]
        print(f"{cron:<14} {zone:<20} {rates[0]:>9.0f} {rates[1]:>10.0f} {ratio:>12.2f}")


if __name__ == "__main__":
    main()
