"""A disk that fills up during ingest: one line that says so and what was stored.

The real thing needs a tiny file system: a tmpfs of 1 MB when this runs as root (the CI
container does); elsewhere the ENOSPC is injected where ingest writes its rejects file,
the same OSError the kernel raises.
"""

from __future__ import annotations

import errno
import os
import subprocess

import pytest
from cli_shop import run, shop_fixtures

shop, in_shop = shop_fixtures()


def _rows(n: int) -> str:
    lines = ["user,type,at,amount"]
    lines += [f"u{i},purchase,2026-03-01T10:00:00Z,{'-1' if i % 2 else '10'}" for i in range(n)]
    return "\n".join(lines) + "\n"


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_rejects_filling_a_real_disk(in_shop, tiny_disk):
    """Half the rows are rejected; their rejects file fills the 256 kB file system."""
    source = in_shop / "many.csv"
    source.write_text(_rows(30_000), encoding="utf-8")
    result = run("ingest", str(source), "--rejects", str(tiny_disk / "rejects.jsonl"))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    [line] = result.stderr.splitlines()[-1:]
    assert line.startswith("Error: the disk is full: ingest stopped with at least ")
    assert "run the same command again" in line


def test_injected_enospc_names_what_was_stored(in_shop, monkeypatch):
    from engine.ingest import report as rejects_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "events.rejects.jsonl")

    monkeypatch.setattr(rejects_module.RejectsWriter, "write", full)
    (in_shop / "events.csv").write_text(_rows(4), encoding="utf-8")
    result = run("ingest", "events.csv")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: the disk is full: ingest stopped with at least 0 rows stored (whole "
        "batches). Free space and run the same command again: rows already stored are "
        "skipped.\n"
    )
