"""Ingest benchmark: events/s into SQLite and PostgreSQL, peak memory, stage time.

Generates N synthetic events over U users (deterministic), writes them as one JSONL
file in a temp folder, and ingests it through `engine.ingest.ingest_files` into a
fresh SQLite file and a fresh PostgreSQL database (created on the server at
NUDGE_BENCH_POSTGRES_URL and dropped afterwards). Target: >= 50,000 events/s each.

    .venv/bin/python bench/ingest.py                       # 1,000,000 events, 100,000 users
    .venv/bin/python bench/ingest.py --events 200000 --users 20000 --backend sqlite
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import Settings, ShopSettings  # noqa: E402
from engine.ingest import ingest_files  # noqa: E402
from engine.store import Store  # noqa: E402
from engine.store.database import create_engine_for  # noqa: E402
from engine.store.migrations import upgrade  # noqa: E402

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
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


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux: the peak of this process so far.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_backend(url: str, data: Path, events: int) -> dict[str, object]:
    settings = Settings(shop=ShopSettings(timezone="Asia/Shanghai"))
    store = Store(engine=create_engine_for(url), settings=settings)
    upgrade(store)
    started = time.perf_counter()
    report = ingest_files(store, [data], now=NOW)
    elapsed = time.perf_counter() - started
    assert report.rejected_count == 0, report.rejected[:3]
    result: dict[str, object] = {
        "events": events,
        "inserted": report.events_inserted,
        "seconds": round(elapsed, 2),
        "events_per_s": round(events / elapsed),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    stage_seconds = time_stages(store, settings)
    if stage_seconds is not None:
        result["stages_seconds"] = round(stage_seconds, 2)
    store.dispose()
    return result


def time_stages(store: Store, settings: Settings) -> float | None:
    try:
        from engine.lifecycle import refresh_stages
    except ImportError:
        return None
    started = time.perf_counter()
    with store.begin() as connection:
        refresh_stages(connection, settings, NOW)
    return time.perf_counter() - started


def bench_postgres(server_url: str, data: Path, events: int) -> dict[str, object]:
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    name = f"nudge_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        url = sa.engine.make_url(server_url).set(database=name)
        return bench_backend(url.render_as_string(hide_password=False), data, events)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    args = parser.parse_args(argv)
    server = os.environ.get("NUDGE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    results: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "events": args.events,
        "users": args.users,
    }
    with tempfile.TemporaryDirectory(prefix="nudge-bench-") as folder:
        data = Path(folder) / "events.jsonl"
        started = time.perf_counter()
        generate(data, args.events, args.users)
        results["generate_seconds"] = round(time.perf_counter() - started, 2)
        results["file_mb"] = round(data.stat().st_size / 2**20, 1)
        if args.backend in ("sqlite", "both"):
            results["sqlite"] = bench_backend(f"sqlite:///{folder}/bench.db", data, args.events)
        if args.backend in ("postgresql", "both"):
            results["postgresql"] = bench_postgres(server, data, args.events)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:>16}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
