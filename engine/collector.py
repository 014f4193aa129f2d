"""The cyclic garbage collector, paused while bulk work runs, then resumed.

Process-wide, so its users share one mechanism (as engine/switch_interval.py does for
the GIL's switch interval): an import (engine/ingest/import_mode.py) and a dispatch
batch (engine/delivery/dispatcher.py) each pause it while they run, from any thread;
it runs again when the last of them ends, if it was running before the first.

Why pause it: bulk work allocates objects by the thousand that stay alive until the
batch ends (rows, actions, outcomes). Each allocation counts towards the collector's
next pass, and the passes that reach the oldest generation walk every object of the
process (SQLAlchemy's metadata and caches, compiled templates: about a million), again
and again. Reference counting frees what the batch leaves behind at once; the rare
cycle waits for the first pass after the batch.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_pausing = 0  # users running now
_was_enabled = True  # whether it ran before the first of them


@contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection while this runs (see the module)."""
    global _pausing, _was_enabled
    with _lock:
        if _pausing == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pausing += 1
    try:
        yield
    finally:
        with _lock:
            _pausing -= 1
            if _pausing == 0 and _was_enabled:
                gc.enable()
