"""Several sends at once on one channel, each on a worker thread.

A channel that can take several messages at once says so with `concurrency` (an SMTP
pool of N connections, an HTTP client): the kinds' sends (engine.actions.delivering)
then reserve a slot, check and build the message on the dispatcher's thread, and
hand it to a worker, so that up to N messages wait for their server at once while
the next one is rendered. A slot is reserved *before* the dispatcher's last check
(lease, stop, recheck) of a message, so a message never waits in a queue after it:
it leaves as soon as it is built. Channels without `concurrency` (or 1) are sent
one at a time on the dispatcher's own thread, as before.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


def concurrency_of(channel: Any) -> int:
    """How many messages `channel` may be sending at once (1 unless it says more)."""
    return max(1, int(getattr(channel, "concurrency", 1) or 1))


class ParallelSends:
    """Up to `width` sends of one channel in flight at once."""

    def __init__(self, channel: Any, width: int, name: str = "channel"):
        self.channel, self.width = channel, width
        self._slots = threading.BoundedSemaphore(width)
        self._workers = ThreadPoolExecutor(max_workers=width, thread_name_prefix=f"nudge-{name}")

    def reserve(self) -> None:
        """Wait until fewer than `width` sends are in flight, and take the free slot."""
        self._slots.acquire()

    def cancel(self) -> None:
        """Give back a reserved slot that was not used (the message was not sent)."""
        self._slots.release()

    def submit(self, message: Any) -> Future:
        """Send `message` (in a reserved slot) on a worker; the slot frees when done."""
        future = self._workers.submit(self.channel.send, message)
        future.add_done_callback(lambda _done: self._slots.release())
        return future

    def close(self) -> None:
        self._workers.shutdown(wait=True)
