"""The Cloud Scheduler emulator's two faces, side by side: the official client's GetJob and
ListJobs over the REST transport against the same calls over gRPC, on one emulator, in
interleaved rounds. Prints milliseconds per call and the REST/gRPC ratio (the baseline is the
gRPC face, measured in the same run).

    .venv/bin/python bench/bench_emulator_rest.py [--calls 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.auth.credentials import AnonymousCredentials
from google.cloud import scheduler_v1
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import (
    CloudSchedulerGrpcTransport,
)

from scheduler.emulator import CloudSchedulerEmulator
from scheduler.logs import configure

PARENT = "projects/bench/locations/us-central1"


def per_call_ms(call: Callable[[], Any], calls: int) -> float:
    """Milliseconds per call over `calls` calls."""
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1000


def main() -> None:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per face per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    args = parser.parse_args()
    configure("console", "WARNING")
    with CloudSchedulerEmulator(rest_port=0) as emulator:
        clients = {
            "grpc": scheduler_v1.CloudSchedulerClient(transport=CloudSchedulerGrpcTransport(
                channel=grpc.insecure_channel(emulator.host))),
            "rest": scheduler_v1.CloudSchedulerClient(
                transport="rest", credentials=AnonymousCredentials(),
                client_options={"api_endpoint": f"http://127.0.0.1:{emulator.rest_port}"}),
        }
        for index in range(20):
            clients["grpc"].create_job(parent=PARENT, job={
                "name": f"{PARENT}/jobs/j{index}", "schedule": "0 9 * * *",
                "http_target": {"uri": "http://127.0.0.1:9/"}})
        name = f"{PARENT}/jobs/j0"
        calls: dict[str, Callable[[Any], Any]] = {
            "GetJob": lambda c: c.get_job(name=name),
            "ListJobs (20)": lambda c: list(c.list_jobs(parent=PARENT)),
        }
        results: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for call, fn in calls.items():
                for face, client in clients.items():
                    results.setdefault((call, face), []).append(
                        per_call_ms(lambda fn=fn, client=client: fn(client), args.calls))
    print(f"emulator faces, official client, median of {args.rounds} rounds x {args.calls} calls")
    print(f"{'call':<14}  {'grpc ms':>8}  {'rest ms':>8}  {'rest/grpc':>9}")
    print(f"{'-' * 14}  {'-' * 8}  {'-' * 8}  {'-' * 9}")
    for call in calls:
        g = statistics.median(results[(call, "grpc")])
        r = statistics.median(results[(call, "rest")])
        print(f"{call:<14}  {g:>8.2f}  {r:>8.2f}  {r / g:>9.1f}")


if __name__ == "__main__":
    main()
