"""Several sends at once on one channel, each on a worker thread.

A channel that can take several messages at once says so with `concurrency` (an SMTP
pool of N connections, an HTTP client): the kinds' sends (engine.actions.delivering)
then reserve a slot, check and build the message on the dispatcher's thread, and
hand it to a worker, so that up to N messages wait for their server at once while
the next one is rendered. A slot is reserved *before* the dispatcher's last check
(lease, stop, recheck) of a message, so a message never waits in a queue after it:
it leaves as soon as it is built. Channels without `concurrency` (or 1) are sent
one at a time on the dispatcher's own thread, as before.

A channel of one connection that says `pipelined = True` (SMTP, by default) has its
own pipeline instead (`channel.pipeline()`, engine.delivery.channels.smtp_pipeline):
the same calls, on the dispatcher's thread, writing each message and reading its
replies only once the next one was built.

While sends are in flight on worker threads (`quick_switching()`), the interpreter
hands the GIL over every 0.2 ms instead of every 5 ms: a worker whose server replied
must take the GIL back from the dispatcher's thread (which is rendering) to read the
reply, several times per message (one per SMTP command).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from engine import switch_interval


def concurrency_of(channel: Any) -> int:
    """How many messages `channel` may be sending at once (1 unless it says more)."""
    return max(1, int(getattr(channel, "concurrency", 1) or 1))


class ParallelSends:
    """Up to `width` sends of one channel in flight at once, on `width` workers."""

    threaded = True  # the GIL is handed over quickly while these run (quick_switching)

    def __init__(self, channel: Any, width: int, name: str = "channel"):
        self.channel, self.width = channel, width
        self._slots = threading.BoundedSemaphore(width)
        self._workers = ThreadPoolExecutor(max_workers=width, thread_name_prefix=f"nudge-{name}")

    def reserve(self) -> None:
        """Wait until a slot is free (fewer than `width` messages handed over and not
        yet sent), and take it."""
        self._slots.acquire()

    def cancel(self) -> None:
        """Give back a reserved slot that was not used (the message was not sent)."""
        self._slots.release()

    def submit(self, message: Any) -> Future:
        """Send `message` (in a reserved slot) on a worker; the slot frees when done."""
        future = self._workers.submit(self.channel.send, message)
        future.add_done_callback(lambda _done: self._slots.release())
        return future

    def finish(self) -> None:
        """Nothing to do: each send's future resolves on its worker."""

    def close(self) -> None:
        self._workers.shutdown(wait=True)


def pipelined(channel: Any) -> bool:
    """Whether a one-at-a-time `channel` is sent through its own `pipeline()`."""
    return (
        bool(getattr(channel, "pipelined", False))
        and concurrency_of(channel) == 1
        and callable(getattr(channel, "pipeline", None))
    )


# The GIL switch interval while sends are in flight on workers (see the module's doc).
SWITCH_INTERVAL = 0.0002


def quick_switching():
    """The GIL switch interval at most SWITCH_INTERVAL while this runs, then restored
    (engine/switch_interval.py: shared with imports, counted across threads)."""
    return switch_interval.at_most(SWITCH_INTERVAL)
