"""Interpreter settings for bulk imports: set while `ingest_files` runs, then restored."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from engine import switch_interval

# How often the reader thread hands the GIL to the writer thread when the writer asks
# for it between two statements (see `import_mode`).
SWITCH_INTERVAL = 0.0005
_import_mode_lock = threading.Lock()
_imports_running = 0
_collector_was_enabled = True


@contextmanager
def import_mode() -> Iterator[None]:
    """Two process-wide interpreter settings for the duration of imports, then restored.

    - The cyclic garbage collector is off. Validation allocates a dozen objects per
      row and up to three batches are alive at a time: the collector's passes over
      them cost a third of the reader thread's time (12.5 -> 8.5 us per event
      measured). Rows hold no reference cycles: reference counting frees them.
    - The GIL switch interval is 0.5 ms instead of 5 ms. The writer thread releases
      the GIL for every SQL statement; taking it back while the reader thread
      validates costs it up to a whole interval, several times per statement (with
      5 ms, the short statements of a batch waited ~100 ms for it per batch).

    Counted, so that concurrent imports in one process restore them only when the
    last one ends (the switch interval through engine/switch_interval.py, which other
    work shortening it shares).
    """
    global _imports_running, _collector_was_enabled
    with _import_mode_lock:
        if _imports_running == 0:
            _collector_was_enabled = gc.isenabled()
            gc.disable()
        _imports_running += 1
    try:
        with switch_interval.at_most(SWITCH_INTERVAL):
            yield
    finally:
        with _import_mode_lock:
            _imports_running -= 1
            if _imports_running == 0 and _collector_was_enabled:
                gc.enable()
