"""One daemon per SQLite file: a second one is refused at once, with who holds it;
a killed holder frees the lock; PostgreSQL takes no lock."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import DaemonAlreadyRunning, NudgeError
from engine.store.daemon_lock import daemon_lock_path, exclusive_daemon

REPO = Path(__file__).resolve().parents[2]
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

HOLDER = """
import sys, time
from engine.config import Settings
from engine.store.daemon_lock import exclusive_daemon
from engine.store.database import Store, create_engine_for

store = Store(engine=create_engine_for(sys.argv[1]), settings=Settings())
with exclusive_daemon(store, owner="holder-under-test"):
    print("locked", flush=True)
    time.sleep(120)
"""


def start_holder(url: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready, _, _ = select.select([process.stdout], [], [], 30)
    if not ready:
        process.kill()
        pytest.fail(f"the holder did not take the lock: {process.stderr.read()}")
    assert process.stdout.readline().strip() == "locked", process.stderr.read()
    return process


@sqlite_only
def test_a_second_daemon_is_refused_at_once_until_the_first_is_killed(store, store_url):
    database = Path(store.engine.url.database).resolve()
    holder = start_holder(store_url)
    try:
        started = time.monotonic()
        with pytest.raises(DaemonAlreadyRunning) as refused:
            with exclusive_daemon(store):
                pytest.fail("two daemons hold the lock")
        assert time.monotonic() - started < 2  # refused at once, not after a wait
        message = str(refused.value)
        assert str(database) in message
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert "holder-under-test" in message
        assert "started 20" in message
        assert "PostgreSQL" in message
        assert refused.value.lock_path == database.with_name(database.name + ".daemon.lock")
        assert refused.value.holder["pid"] == str(holder.pid)
        assert isinstance(refused.value, NudgeError)  # the CLI prints it as "Error: ..."
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        holder.stdout.close()
        holder.stderr.close()
    assert holder.returncode == -signal.SIGKILL

    # kill -9 left the file behind with its details, but the kernel freed the lock.
    with exclusive_daemon(store, owner="second") as lock_path:
        assert json.loads(lock_path.read_text())["pid"] == str(os.getpid())
        assert json.loads(lock_path.read_text())["owner"] == "second"
    assert lock_path.read_text() == ""  # released: nobody's details


@sqlite_only
def test_the_lock_is_exclusive_within_one_process_too_and_released_on_exit(store):
    with exclusive_daemon(store) as lock_path:
        with pytest.raises(DaemonAlreadyRunning, match="nudge run, pid"):
            with exclusive_daemon(store):
                pass
    with pytest.raises(RuntimeError, match="boom"):
        with exclusive_daemon(store):
            raise RuntimeError("boom")  # released on the way out of an exception too
    with exclusive_daemon(store) as again:
        assert again == lock_path


@sqlite_only
def test_the_same_file_through_a_symlink_is_the_same_lock(store, tmp_path):
    from engine.store.database import Store, create_engine_for

    link = tmp_path / "link.db"
    link.symlink_to(store.engine.url.database)
    other = Store(engine=create_engine_for(f"sqlite:///{link}"), settings=store.settings)
    try:
        assert daemon_lock_path(other) == daemon_lock_path(store)
        with exclusive_daemon(store):
            with pytest.raises(DaemonAlreadyRunning):
                with exclusive_daemon(other):
                    pass
    finally:
        other.dispose()


def test_postgres_runs_several_daemons_and_memory_needs_no_lock(store, backend):
    from engine.store.database import Store, create_engine_for

    if backend == "postgresql":
        with exclusive_daemon(store) as first, exclusive_daemon(store) as second:
            assert first is None and second is None
        return
    memory = Store(engine=create_engine_for("sqlite://"), settings=store.settings)
    with exclusive_daemon(memory) as first, exclusive_daemon(memory) as second:
        assert first is None and second is None
