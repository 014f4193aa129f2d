"""Running the dispatcher from the command line: one pass, or a polling loop.

The loop is the only place in delivery that asks the clock for `now`; every pass
below it takes `now` as an argument.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime

from engine.clock import utcnow
from engine.delivery.channels import build_channels
from engine.delivery.config import delivery_config
from engine.delivery.dispatcher import DispatchReport, dispatch_until_idle
from engine.store import Store


def worker_name() -> str:
    """host:pid — unique among live dispatchers, readable in `claimed_by`."""
    return f"{socket.gethostname()}:{os.getpid()}"[:64]


def run_dispatcher(
    store: Store,
    *,
    once: bool = True,
    at: datetime | None = None,
    poll_seconds: float = 5.0,
    stop: threading.Event | None = None,
    on_pass: Callable[[DispatchReport], None] | None = None,
) -> DispatchReport:
    """Drain what is due (at `at`, default now); with once=False, repeat until `stop`."""
    config = delivery_config(store.settings)
    stop = stop or threading.Event()
    total = DispatchReport()
    with build_channels(store.settings, config) as channels:
        while True:
            report = dispatch_until_idle(
                store, now=at or utcnow(), worker_id=worker_name(), channels=channels, config=config
            )
            total.add(report)
            if on_pass is not None and (once or report.claimed):
                on_pass(report)
            if once or stop.wait(poll_seconds):
                return total
