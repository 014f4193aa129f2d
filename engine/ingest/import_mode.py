"""Interpreter settings for bulk imports: set while `ingest_files` runs, then restored."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from engine import collector, switch_interval

# How often the reader thread hands the GIL to the writer thread when the writer asks
# for it between two statements (see `import_mode`).
SWITCH_INTERVAL = 0.0005


@contextmanager
def import_mode() -> Iterator[None]:
    """Two process-wide interpreter settings for the duration of imports, then restored.

    - The cyclic garbage collector is off (engine/collector.py). Validation allocates
      a dozen objects per row and up to three batches are alive at a time: the
      collector's passes over them cost a third of the reader thread's time (12.5 ->
      8.5 us per event measured). Rows hold no reference cycles: reference counting
      frees them.
    - The GIL switch interval is 0.5 ms instead of 5 ms. The writer thread releases
      the GIL for every SQL statement; taking it back while the reader thread
      validates costs it up to a whole interval, several times per statement (with
      5 ms, the short statements of a batch waited ~100 ms for it per batch).

    Both are shared with other work that changes them, and restored when the last
    user ends (concurrent imports, a dispatch batch in the same process).
    """
    with collector.paused(), switch_interval.at_most(SWITCH_INTERVAL):
        yield
