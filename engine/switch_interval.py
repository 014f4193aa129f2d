"""The interpreter's GIL switch interval, shortened while some work needs it.

Process-wide, so users share one mechanism: an import (engine/ingest/import_mode.py)
and sends on worker threads (engine/delivery/channels/parallel.py) each ask for an
interval of at most so much while they run. Overlapping requests, from any thread,
get the shortest of them; the interval from before the first is restored when the
last one ends.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_requests: list[float] = []  # the intervals asked for by the users running now
_saved = 0.005  # the interval before the first of them


@contextmanager
def at_most(seconds: float) -> Iterator[None]:
    """`sys.getswitchinterval()` at most `seconds` while this runs (see the module)."""
    global _saved
    with _lock:
        if not _requests:
            _saved = sys.getswitchinterval()
        _requests.append(seconds)
        sys.setswitchinterval(min([_saved, *_requests]))
    try:
        yield
    finally:
        with _lock:
            _requests.remove(seconds)
            sys.setswitchinterval(min([_saved, *_requests]))
