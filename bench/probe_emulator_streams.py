"""Where does the Pub/Sub emulator put messages outstanding on a stream whose connection was
reset? One command: `.venv/bin/python bench/probe_emulator_streams.py`.

Starts its own Pub/Sub emulator and a fault proxy (`scion_scheduler.faultproxy`), a subscription
with a 10 s ack deadline, and subscriber A through the proxy with flow control of `--hold`
messages, which holds (does not ack) what it receives. Then:

1. publishes 2 x `--hold` messages ("old"): A receives `--hold` of them and holds them;
2. resets every connection through the proxy (`--fault rst`; `fin` closes them, `freeze` stops
   forwarding for 30 s and resumes), A's client reconnects (same client ID), and from now on A
   acks everything, the messages it held first; publishes `--hold` x 2 more ("new"); waits
   `--wait` seconds;
   (`--fresh`: A is replaced at once by a fresh subscriber A2 through the proxy);
3. stops A; a fresh subscriber B (new client ID, straight to the emulator) acks everything for
   `--wait` seconds; then a unary Pull for `--wait` seconds.

Prints what each got, old and new. On real Pub/Sub every message comes back within the ack
deadline (10 s) of the reset.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from collections import Counter
from typing import Any

from google.api_core import exceptions

from scion_scheduler.faultproxy import FaultProxy
from scion_scheduler.google_emulators import Emulator


class Subscriber:
    """A streaming-pull subscriber that holds messages until told to ack."""

    def __init__(self, host: str, path: str, max_messages: int, name: str) -> None:
        from google.cloud import pubsub_v1

        os.environ["PUBSUB_EMULATOR_HOST"] = host
        self.client = pubsub_v1.SubscriberClient()
        self.name = name
        self.acking = threading.Event()
        self.got: Counter[str] = Counter()
        self.held: list[Any] = []
        self.lock = threading.Lock()
        self.future = self.client.subscribe(
            path, self._callback,
            flow_control=pubsub_v1.types.FlowControl(max_messages=max_messages,
                                                     max_lease_duration=3600))

    def _callback(self, message: Any) -> None:
        with self.lock:
            self.got[message.attributes["phase"]] += 1
            if self.acking.is_set():
                message.ack()
            else:
                self.held.append(message)

    def ack_all(self) -> None:
        """From now on ack everything, and ack what is held (which frees the flow control)."""
        with self.lock:
            self.acking.set()
            for message in self.held:
                message.ack()
            self.held.clear()

    def stop(self) -> None:
        self.future.cancel()
        self.client.close()


class Topic:
    """A fresh project's topic and its subscription with a 10 s ack deadline, on the emulator
    that `PUBSUB_EMULATOR_HOST` names."""

    def __init__(self) -> None:
        from google.cloud import pubsub_v1

        self.publisher = pubsub_v1.PublisherClient()
        self.admin = pubsub_v1.SubscriberClient()
        project = f"probe-{uuid.uuid4().hex[:8]}"
        self.topic = self.publisher.topic_path(project, "fires")
        self.path = self.admin.subscription_path(project, "workers")
        self.publisher.create_topic(name=self.topic)
        self.admin.create_subscription(request={"name": self.path, "topic": self.topic,
                                                "ack_deadline_seconds": 10})

    def publish(self, phase: str, count: int) -> None:
        """`count` messages marked with their `phase`."""
        for future in [self.publisher.publish(self.topic, b"x", phase=phase)
                       for _ in range(count)]:
            future.result(timeout=30)

    def unary_pull(self, seconds: float) -> Counter[str]:
        """What unary Pulls get (and ack) in `seconds`, by phase."""
        got: Counter[str] = Counter()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                response = self.admin.pull(subscription=self.path, max_messages=100, timeout=5)
            except exceptions.DeadlineExceeded:
                continue
            for received in response.received_messages:
                got[received.message.attributes["phase"]] += 1
            if response.received_messages:
                self.admin.acknowledge(subscription=self.path, ack_ids=[
                    m.ack_id for m in response.received_messages])
        return got


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command's flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", type=int, default=20)
    parser.add_argument("--wait", type=float, default=40.0)
    parser.add_argument("--fault", choices=("rst", "fin", "freeze"), default="rst",
                        help="reset the connections (rst), close them (fin), or stop forwarding "
                             "on them for 30 s and resume (freeze: a partition, no close)")
    parser.add_argument("--fresh", action="store_true",
                        help="after the reset, replace A by a fresh subscriber (new client ID)")
    return parser.parse_args(argv)


def probe(args: argparse.Namespace, emulator: Emulator, proxy: FaultProxy) -> None:
    """Steps 1-3 of the module's description, printing what each subscriber got."""
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
    topic = Topic()
    a = Subscriber(proxy.address, topic.path, args.hold, "A")
    topic.publish("old", 2 * args.hold)
    time.sleep(5)
    print(f"A before the reset: {dict(a.got)} (holding {len(a.held)})")
    if args.fault == "freeze":
        proxy.freeze()
        time.sleep(30)
        proxy.thaw()
    else:
        proxy.cut(reset=args.fault == "rst")
    a.ack_all()
    if args.fresh:
        a.stop()
        a = Subscriber(proxy.address, topic.path, args.hold, "A2")
        a.ack_all()
    topic.publish("new", 2 * args.hold)
    time.sleep(args.wait)
    print(f"A after the reset and {args.wait:.0f} s: {dict(a.got)}")
    a.stop()
    b = Subscriber(emulator.host, topic.path, 1000, "B")
    b.ack_all()
    time.sleep(args.wait)
    print(f"B (fresh client) in {args.wait:.0f} s: {dict(b.got)}")
    b.stop()
    print(f"unary Pull in {args.wait:.0f} s: {dict(topic.unary_pull(args.wait))}")
    topic.admin.close()


def main(argv: list[str] | None = None) -> int:
    """Run the probe; returns the process exit code."""
    args = parse_args(argv)
    with Emulator("pubsub") as emulator:
        proxy = FaultProxy("127.0.0.1", emulator.port).start()
        try:
            probe(args, emulator, proxy)
        finally:
            proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
