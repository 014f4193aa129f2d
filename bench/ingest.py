"""Ingest benchmark: Nudge's events/s beside the database's own limit, same run.

Generates N synthetic events over U users (deterministic), writes them as one JSONL
file in a temp folder, and ingests it through `engine.ingest.ingest_files` into a
fresh SQLite file and a fresh PostgreSQL database (created on the server at
NUDGE_BENCH_POSTGRES_URL and dropped afterwards).

Beside each Nudge run, the limit: the same rows, validated and converted to what the
columns store before the clock starts, loaded into the `events` table of another fresh
store in batches of `BATCH_SIZE`, one transaction each, by the plainest fast path of
the driver: `executemany` of a prepared INSERT on SQLite, `COPY` on PostgreSQL. The
two are interleaved and repeated (`--repeat`, at least 3); min and median of each and
the ratio of the medians are printed, with the load average before and after and the
CPU time of this process per event. Every run checks that the rows it timed are in the
table, and each Nudge run (untimed) that the profiles it kept cover every stored event
once. (Nudge's first batches of a file are smaller, FIRST_BATCH_SIZE doubling up to
BATCH_SIZE, to start writing sooner; the limit has nothing to overlap, and loads
batches of BATCH_SIZE. Nudge writes several batches per transaction, up to
TRANSACTION_BATCHES x BATCH_SIZE rows or TRANSACTION_SECONDS, both per backend; the
limit keeps one transaction per BATCH_SIZE rows, as in the figures recorded before, so its commits
are more frequent than Nudge's.)

Targets (issue 12): >= 0.7 x the limit on each backend, and >= 50,000 events/s.

    .venv/bin/python bench/ingest.py                       # 1,000,000 events, 100,000 users
    .venv/bin/python bench/ingest.py --events 200000 --users 20000 --backend sqlite --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import Settings, ShopSettings  # noqa: E402
from engine.ingest import BATCH_SIZE, ingest_files  # noqa: E402
from engine.ingest.event_staging import EVENT_FIELDS  # noqa: E402
from engine.ingest.money import ShopCurrency  # noqa: E402
from engine.ingest.records import event_row  # noqa: E402
from engine.ingest.writers import sqlite_instant  # noqa: E402
from engine.store import Store  # noqa: E402
from engine.store.database import create_engine_for  # noqa: E402
from engine.store.migrations import upgrade  # noqa: E402

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SETTINGS = Settings(shop=ShopSettings(timezone="Asia/Shanghai"))
STORED_COLUMNS = (*EVENT_FIELDS, "ingested_at")
# A believable mix: mostly visits, a purchase in ten, the rest engagement.
EVENT_MIX = (
    ("visit", 55),
    ("purchase", 12),
    ("email_open", 12),
    ("email_click", 6),
    ("ad_click", 6),
    ("signup", 4),
    ("coupon_redeemed", 3),
    ("refund", 1),
    ("unsubscribe", 1),
)
UTM_SOURCES = ("google", "wechat", "newsletter", "douyin", None, None, None)


def generate(path: Path, events: int, users: int, seed: int = 42) -> None:
    """Write `events` JSONL lines; times span the 180 days before NOW, in random order."""
    rng = random.Random(seed)
    types = [name for name, weight in EVENT_MIX for _ in range(weight)]
    start = NOW - timedelta(days=180)
    span = 180 * 24 * 3600
    with path.open("w", encoding="utf-8") as out:
        for number in range(events):
            kind = types[rng.randrange(len(types))]
            at = start + timedelta(seconds=rng.randrange(span))
            event: dict[str, object] = {
                "user": f"u{rng.randrange(users):07d}",
                "type": kind,
                "at": at.isoformat(),
            }
            if kind in ("purchase", "refund"):
                event["amount"] = f"{rng.randrange(1000, 100000) / 100:.2f}"
                event["order_id"] = f"o{number}"
            source = UTM_SOURCES[rng.randrange(len(UTM_SOURCES))]
            if source:
                event["utm_source"] = source
                event["utm_campaign"] = "spring-sale"
            if kind == "visit":
                event["page"] = f"/p/{rng.randrange(500)}"
            out.write(json.dumps(event, separators=(",", ":")) + "\n")


# -- measuring


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


class RssSampler:
    """Resident memory of this process during a run (peak, and growth from its start).

    ru_maxrss would be the peak of the whole process, limit rows and generator
    included; sampling /proc shows what the ingest itself holds.
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.start_mb = self.peak_mb = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, _rss_mb())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, _rss_mb())


def _rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


# -- stores


@contextmanager
def fresh_store(backend: str, folder: Path, server_url: str) -> Iterator[Store]:
    """A migrated, empty store: a new SQLite file or a new PostgreSQL database."""
    name = f"nudge_bench_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        store = Store(engine=create_engine_for(f"sqlite:///{folder}/{name}.db"), settings=SETTINGS)
        upgrade(store)
        try:
            yield store
        finally:
            store.dispose()
            for path in folder.glob(f"{name}.db*"):
                path.unlink()
        return
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        url = sa.engine.make_url(server_url).set(database=name)
        store = Store(
            engine=create_engine_for(url.render_as_string(hide_password=False)), settings=SETTINGS
        )
        upgrade(store)
        try:
            yield store
        finally:
            store.dispose()
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def stored_events(store: Store) -> int:
    with store.connect() as connection:
        return connection.exec_driver_sql("SELECT count(*) FROM events").scalar_one()


# -- the two contenders


def run_nudge(store: Store, data: Path, events: int) -> dict[str, object]:
    with RssSampler() as rss:
        started, cpu = time.perf_counter(), time.process_time()
        report = ingest_files(store, [data], now=NOW)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert report.rejected_count == 0, report.rejected[:3]
    assert report.events_inserted == events, (report.events_inserted, events)
    assert stored_events(store) == events
    check_profiles(store, events)
    return {
        "seconds": round(elapsed, 3),
        "per_s": round(events / elapsed),
        # This process's CPU (reader and writer threads; not PostgreSQL's server).
        "cpu_us_per_event": round(cpu / events * 1e6, 1),
        "rss_start_mb": round(rss.start_mb, 1),
        "rss_peak_mb": round(rss.peak_mb, 1),
    }


def check_profiles(store: Store, events: int) -> None:
    """The profiles kept up batch by batch cover every stored event once (untimed)."""
    with store.connect() as connection:
        profiled, counted = connection.exec_driver_sql(
            "SELECT count(*), sum(event_count) FROM profiles"
        ).one()
        users = connection.exec_driver_sql(
            "SELECT count(DISTINCT user_id) FROM events"
        ).scalar_one()
    assert (profiled, counted) == (users, events), (profiled, counted, users, events)


def prepared_rows(data: Path, backend: str) -> list[tuple]:
    """The rows Nudge stores for this file, as the driver takes them for `events`."""
    zone, currency = SETTINGS.tz, ShopCurrency.of(SETTINGS)
    rows = []
    with data.open("rb") as lines:
        for line in lines:
            row = event_row(orjson.loads(line), zone, currency)
            row["ingested_at"] = NOW
            rows.append(_driver_values(row, backend))
    return rows


def _driver_values(row: dict, backend: str) -> tuple:
    values = []
    for name in STORED_COLUMNS:
        value = row[name]
        if name == "properties":
            value = orjson.dumps(value).decode()
        elif backend == "sqlite" and name in ("occurred_at", "ingested_at"):
            value = sqlite_instant(value)
        elif backend == "sqlite" and name in ("amount", "original_amount") and value is not None:
            value = float(value)
        values.append(value)
    return tuple(values)


def run_limit(store: Store, rows: list[tuple], backend: str) -> dict[str, object]:
    """Plain executemany (SQLite) or COPY (PostgreSQL) of the rows, batch by batch."""
    columns = ", ".join(STORED_COLUMNS)
    raw = store.engine.raw_connection()
    try:
        driver = raw.driver_connection
        started, cpu = time.perf_counter(), time.process_time()
        if backend == "sqlite":
            insert = (
                f"INSERT INTO events ({columns}) VALUES ({', '.join('?' * len(STORED_COLUMNS))})"
            )
            cursor = driver.cursor()
            # The page cache the ingest writer sets too (engine/ingest/writers.py).
            cursor.execute("PRAGMA cache_size=-65536")
            for start in range(0, len(rows), BATCH_SIZE):
                # The store's engine leaves transactions to the caller (autocommit).
                cursor.execute("BEGIN IMMEDIATE")
                cursor.executemany(insert, rows[start : start + BATCH_SIZE])
                cursor.execute("COMMIT")
        else:
            for start in range(0, len(rows), BATCH_SIZE):
                with driver.cursor() as cursor:
                    with cursor.copy(f"COPY events ({columns}) FROM STDIN") as copy:
                        for row in rows[start : start + BATCH_SIZE]:
                            copy.write_row(row)
                driver.commit()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        raw.close()
    assert stored_events(store) == len(rows)
    return {
        "seconds": round(elapsed, 3),
        "per_s": round(len(rows) / elapsed),
        "cpu_us_per_event": round(cpu / len(rows) * 1e6, 1),
    }


def time_stages(store: Store) -> float | None:
    try:
        from engine.lifecycle import refresh_stages
    except ImportError:
        return None
    started = time.perf_counter()
    with store.begin() as connection:
        refresh_stages(connection, SETTINGS, NOW)
    return round(time.perf_counter() - started, 2)


def bench_backend(
    backend: str, data: Path, events: int, repeat: int, folder: Path, server: str
) -> dict[str, object]:
    started = time.perf_counter()
    rows = prepared_rows(data, backend)
    prepare_seconds = round(time.perf_counter() - started, 2)
    nudge: list[dict[str, object]] = []
    limit: list[dict[str, object]] = []
    stages = None

    def nudge_run() -> None:
        nonlocal stages
        with fresh_store(backend, folder, server) as store:
            nudge.append({"load": load_average(), **run_nudge(store, data, events)})
            stages = time_stages(store)

    def limit_run() -> None:
        with fresh_store(backend, folder, server) as store:
            limit.append({"load": load_average(), **run_limit(store, rows, backend)})

    for number in range(repeat):
        # Alternate which goes first, so a drift in the machine's load hits both alike.
        pair: tuple[Callable[[], None], ...] = (nudge_run, limit_run)
        for run in pair if number % 2 == 0 else reversed(pair):
            run()
    result: dict[str, object] = {
        "nudge": summary(nudge),
        "limit": summary(limit),
        "limit_kind": "executemany" if backend == "sqlite" else "COPY",
        "prepare_limit_rows_seconds": prepare_seconds,
        "stages_seconds": stages,
        "runs": {"nudge": nudge, "limit": limit},
    }
    result["ratio_median"] = round(
        result["nudge"]["median_per_s"] / result["limit"]["median_per_s"], 2
    )
    result["ratio_best"] = round(result["nudge"]["max_per_s"] / result["limit"]["max_per_s"], 2)
    return result


def summary(runs: list[dict[str, object]]) -> dict[str, object]:
    seconds = [float(run["seconds"]) for run in runs]
    rates = [int(run["per_s"]) for run in runs]
    return {
        "min_seconds": min(seconds),
        "median_seconds": round(statistics.median(seconds), 3),
        "max_per_s": max(rates),
        "median_per_s": round(statistics.median(rates)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs of each (>= 3)")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    args = parser.parse_args(argv)
    if args.repeat < 3:
        parser.error("--repeat must be at least 3 (min and median need several runs)")
    server = os.environ.get("NUDGE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    results: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "events": args.events,
        "users": args.users,
        "batch_size": BATCH_SIZE,
        "repeat": args.repeat,
        "load_before": list(os.getloadavg()),
    }
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    with tempfile.TemporaryDirectory(prefix="nudge-bench-") as name:
        folder = Path(name)
        data = folder / "events.jsonl"
        started = time.perf_counter()
        generate(data, args.events, args.users)
        results["generate_seconds"] = round(time.perf_counter() - started, 2)
        results["file_mb"] = round(data.stat().st_size / 2**20, 1)
        for backend in backends:
            results[backend] = bench_backend(
                backend, data, args.events, args.repeat, folder, server
            )
    results["load_after"] = list(os.getloadavg())
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results, backends)
    return 0


def print_table(results: dict[str, object], backends: tuple[str, ...]) -> None:
    for key in ("date", "machine", "events", "users", "batch_size", "repeat", "file_mb"):
        print(f"{key:>12}: {results[key]}")
    print(f"{'load':>12}: {results['load_before']} -> {results['load_after']} (1, 5, 15 min)")
    for backend in backends:
        result = results[backend]
        nudge, limit = result["nudge"], result["limit"]
        print(
            f"{backend:>12}: Nudge {nudge['median_per_s']:,}/s median, {nudge['max_per_s']:,}/s "
            f"best | {result['limit_kind']} {limit['median_per_s']:,}/s median, "
            f"{limit['max_per_s']:,}/s best | ratio {result['ratio_median']} median, "
            f"{result['ratio_best']} best"
        )
        for kind in ("nudge", "limit"):
            for run in result["runs"][kind]:
                print(f"{'':>14}{kind:>6}: {run}")
        print(f"{'':>14}stages: {result['stages_seconds']} s")


if __name__ == "__main__":
    raise SystemExit(main())
