"""Imports switch the garbage collector off and shorten the GIL switch interval for
their duration only: the process gets both back as they were, even after a failure."""

from __future__ import annotations

import contextlib
import gc
import json
import sys
from datetime import UTC, datetime

import pytest

from engine.ingest import ingest_files
from engine.ingest.import_mode import SWITCH_INTERVAL, import_mode

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def interpreter_state():
    saved = (gc.isenabled(), sys.getswitchinterval())
    yield saved
    sys.setswitchinterval(saved[1])
    gc.enable() if saved[0] else gc.disable()


def test_an_import_restores_the_collector_and_switch_interval(store, tmp_path, interpreter_state):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"user": "u1", "type": "visit", "at": "2026-03-01T10:00Z"}))
    sys.setswitchinterval(0.004)
    gc.enable()

    assert ingest_files(store, [path], now=NOW).events_inserted == 1

    assert gc.isenabled() and sys.getswitchinterval() == pytest.approx(0.004)


def test_nested_and_failed_imports_restore_only_at_the_last_exit(interpreter_state):
    gc.enable()
    with pytest.raises(RuntimeError), import_mode():
        assert not gc.isenabled()
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
        with import_mode():
            pass
        assert not gc.isenabled()  # the outer import is still running
        raise RuntimeError("the import failed")
    assert gc.isenabled()


def test_a_collector_switched_off_by_the_caller_stays_off(interpreter_state):
    gc.disable()
    with import_mode():
        pass
    assert not gc.isenabled()


def test_an_import_and_sends_on_workers_share_the_switch_interval(interpreter_state):
    """Both shorten the process-wide interval (engine/switch_interval.py): while both
    run the shorter one holds, and whichever ends first leaves the other's in place."""
    from engine.delivery.channels.parallel import SWITCH_INTERVAL as SENDING
    from engine.delivery.channels.parallel import quick_switching

    sys.setswitchinterval(0.004)
    importing = import_mode()
    importing.__enter__()
    with quick_switching():
        assert sys.getswitchinterval() == pytest.approx(SENDING)
        importing.__exit__(None, None, None)
        assert sys.getswitchinterval() == pytest.approx(SENDING)  # sends still running
    assert sys.getswitchinterval() == pytest.approx(0.004)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_import_gives_the_sqlite_pool_back_its_connections_as_they_were(store, tmp_path):
    """SQLite connections are pooled: the import's 64 MB page cache and in-memory temp
    store belong to its own connection, which must not go back to the pool for the
    daemons' next transactions."""

    def pragmas_of_pooled_connections() -> set[tuple[int, int]]:
        with contextlib.ExitStack() as stack:
            connections = [stack.enter_context(store.read()) for _ in range(3)]
            return {
                (
                    connection.exec_driver_sql("PRAGMA cache_size").scalar(),
                    connection.exec_driver_sql("PRAGMA temp_store").scalar(),
                )
                for connection in connections
            }

    before = pragmas_of_pooled_connections()
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"user": "u1", "type": "visit", "at": "2026-03-01T10:00Z"}))

    assert ingest_files(store, [path], now=NOW).events_inserted == 1

    assert pragmas_of_pooled_connections() == before
    assert before == {(-2000, 0)}  # SQLite's defaults
