"""Running the dispatcher: one pass, or a polling loop that stops cleanly.

The loop is the only place in delivery that picks the clock: the wall clock
(`engine.clock.utcnow`), or an instant frozen at `at`; every pass below it reads time
only through the clock it is given.

Shutdown: `run_dispatcher(store, once=False, stop=event)` returns soon after
`event.set()` — at most the send in progress finishes (bounded by the channel's
timeout); what was sent is recorded and what was claimed but not sent is given back
(planned again, due at once for another dispatcher, the attempt not counted). A daemon
runs it in a thread and sets the event from its SIGTERM/SIGINT handler, e.g. with
`stop_on_signals(event)` in the main thread:

    stop = threading.Event()
    worker = threading.Thread(target=run_dispatcher, args=(store,),
                              kwargs={"once": False, "stop": stop})
    with stop_on_signals(stop):
        worker.start()
        while worker.is_alive():
            worker.join(timeout=1)

Called without `stop` from the main thread (`nudge dispatch`), it installs
`stop_on_signals` itself for its duration: the first Ctrl-C or SIGTERM stops it
cleanly, a second one acts as it would have without it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from engine.clock import utcnow
from engine.delivery.channels import ChannelSet, build_channels
from engine.delivery.claims import CLAIM_ID_HEX, HOLDER_LENGTH
from engine.delivery.config import delivery_config
from engine.delivery.dispatcher import Clock, DispatchReport, Rules, dispatch_until_idle, frozen
from engine.store import Store

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def worker_name(number: int | None = None) -> str:
    """host:pid, or host:pid/<number> for one of several dispatchers of a process:
    readable in `claimed_by` (each claim adds its own claim id)."""
    suffix = "" if number is None else f"/{number}"
    room = HOLDER_LENGTH - CLAIM_ID_HEX - 1 - len(suffix)
    return f"{socket.gethostname()}:{os.getpid()}"[:room] + suffix


@contextlib.contextmanager
def stop_on_signals(
    stop: threading.Event, signals: Iterable[signal.Signals] = STOP_SIGNALS
) -> Iterator[threading.Event]:
    """While inside, the first of `signals` sets `stop` instead of killing the process;
    a second one restores the previous handlers and is re-raised to them (so a second
    Ctrl-C still interrupts). Restores the previous handlers on exit. Signal handlers
    can only be installed from the main thread."""
    signals = tuple(signals)
    previous = {signum: signal.getsignal(signum) for signum in signals}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def handler(signum, _frame) -> None:
        if not stop.is_set():
            stop.set()
            return
        restore()
        signal.raise_signal(signum)

    for signum in signals:
        signal.signal(signum, handler)
    try:
        yield stop
    finally:
        restore()


def _stop_event(
    stop: threading.Event | None,
) -> tuple[threading.Event, contextlib.AbstractContextManager]:
    """`stop`, or an event of our own that the first Ctrl-C or SIGTERM sets while the
    returned context is entered (signal handlers only from the main thread)."""
    if stop is not None:
        return stop, contextlib.nullcontext()
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        return stop, stop_on_signals(stop)
    return stop, contextlib.nullcontext()


def run_dispatcher(
    store: Store,
    *,
    once: bool = True,
    at: datetime | None = None,
    clock: Clock | None = None,
    poll_seconds: float = 5.0,
    stop: threading.Event | None = None,
    on_pass: Callable[[DispatchReport], None] | None = None,
    rules: Rules = None,
    worker_id: str | None = None,
    channels: ChannelSet | None = None,
) -> DispatchReport:
    """Drain what is due; with once=False, repeat every `poll_seconds` until `stop`.

    Time is `clock` if given, else frozen at `at` if given, else the wall clock. `rules`
    are what the rule policy checks (`unless`, flight): a RuleSet, or a callable
    returning one per batch (the daemon's `RuleCache.rules`); default: the rule files,
    read each batch and compiled again only when their bytes changed. `worker_id`
    defaults to `worker_name()`; `channels` to those nudge.toml configures, built here
    and closed at the end (channels given are left open). Returns the total of every
    pass, including `released` rows when it was stopped mid-batch.
    """
    config = delivery_config(store.settings)
    worker_id = worker_id or worker_name()
    if clock is None:
        clock = frozen(at) if at is not None else utcnow
    stop, signals = _stop_event(stop)
    total = DispatchReport()
    if channels is not None:
        built: contextlib.AbstractContextManager = contextlib.nullcontext(channels)
    else:
        built = build_channels(store.settings, config)
    with signals, built as channels:
        while not stop.is_set():
            report = dispatch_until_idle(
                store,
                clock=clock,
                worker_id=worker_id,
                channels=channels,
                config=config,
                stop=stop,
                rules=rules,
            )
            total.add(report)
            if on_pass is not None and (once or report.claimed):
                on_pass(report)
            if once or stop.wait(poll_seconds):
                break
    return total


def run_dispatchers(
    store: Store,
    *,
    dispatchers: int | None = None,
    once: bool = True,
    at: datetime | None = None,
    clock: Clock | None = None,
    poll_seconds: float = 5.0,
    stop: threading.Event | None = None,
    on_pass: Callable[[DispatchReport], None] | None = None,
    rules: Rules = None,
    channels: ChannelSet | None = None,
) -> DispatchReport:
    """`run_dispatcher` `dispatchers` times at once (default `[delivery] dispatchers`),
    each on a thread of its own with its own channels and worker id (`host:pid/<n>`);
    returns their total. `channels`, when given, are shared by all of them: they must
    be safe to send on from several threads.

    They share the outbox as dispatchers of several daemons do: disjoint claims, caps
    counted across claims (engine.delivery.policy). On PostgreSQL each waits for the
    server while another runs Python; on SQLite, whose writes are serial, more than
    one does not help (bench/README.md, Sixth round). A dispatcher that fails stops
    the others, and its error is raised once all have ended; the first Ctrl-C or
    SIGTERM stops them all when this runs on the main thread without a `stop`.
    """
    count = dispatchers or delivery_config(store.settings).dispatchers
    arguments = {
        "once": once,
        "at": at,
        "clock": clock,
        "poll_seconds": poll_seconds,
        "on_pass": on_pass,
        "rules": rules,
        "channels": channels,
    }
    if count == 1:
        return run_dispatcher(store, stop=stop, **arguments)
    stop, signals = _stop_event(stop)
    # The dispatchers stop on `halt`: set by `stop`, or by one of them failing.
    halt = threading.Event()
    reports: list[DispatchReport] = []
    errors: list[BaseException] = []

    def one(number: int) -> None:
        try:
            worker = worker_name(number)
            reports.append(run_dispatcher(store, stop=halt, worker_id=worker, **arguments))
        except BaseException as exc:  # noqa: BLE001 - raised below, once all have ended
            errors.append(exc)
            halt.set()

    threads = [
        threading.Thread(target=one, args=(number,), name=f"nudge-dispatch-{number}")
        for number in range(1, count + 1)
    ]
    with signals:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.2)
                if stop.is_set():
                    halt.set()
    if errors:
        raise errors[0]
    total = DispatchReport()
    for report in reports:
        total.add(report)
    return total
