"""Serve benchmark: events/s through the event API and landing-page latency, against a
real uvicorn on loopback, loaded from a second process.

For each backend (a fresh SQLite file, and a fresh PostgreSQL database created on
NUDGE_BENCH_POSTGRES_URL and dropped afterwards) a project is laid out in a temp folder
(the repository's rules and templates, the database URL in nudge.toml) and served by
uvicorn in a child process, configured as `nudge serve` runs it, except that the
event API's per-IP rate limit (10 requests/s, i.e. 5,000 events/s for one client) is
lifted: the figure is what the server can take, not what one client is allowed.

1. **Events**: `--events` synthetic events (bench/ingest.py's generator) are POSTed to
   `/v1/events` in batches of `--batch` (500) by a client process over
   `--connections` keep-alive connections, as fast as the server answers. Every item
   must come back `stored`, and the events table must then hold exactly the events sent.
   Beside it, the limit: the same rows (validated beforehand, untimed) written by the
   ingest writer directly (`BatchWriter.write_events`, one transaction per batch: the
   SQLite executemany / PostgreSQL COPY path `nudge ingest` uses), in this process.
   API and limit alternate, `--repeat` times (fresh event ids each time, so each run
   stores everything; the order alternates too, so the table's growth favours neither).
2. **Landing page**: `GET /l/<rule>/<variant>` (the generic page, rendered live) from a
   client process: at most throughput over `--connections` connections for
   `--landing-seconds`, and p50/p95/max latency at a fixed `--landing-rate` (200/s,
   open loop: latency counts from each request's scheduled instant, so a stall is not
   hidden). Beside it, the limit: the same page rendered in-process (`render_landing`).

Targets: >= 10,000 events/s through the API in batches of 500 with nothing lost;
landing p95 < 50 ms at 200 requests/s. Min and median of the repeats are printed, with
the ratio to the limit and the load average.

    .venv/bin/python bench/serve.py                          # both backends, ~2-3 min
    .venv/bin/python bench/serve.py --backend sqlite --events 50000 --repeat 3 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest as ingest_bench  # noqa: E402  bench/ingest.py: the event generator

TOKEN = "bench-api-token"
LANDING_PATH = "/l/winback-lapsed-members/standard"
SHOP = {"name": "Bench Shop", "timezone": "Asia/Shanghai", "currency": "CNY"}


# --- the project and its server ------------------------------------------------------


@contextmanager
def backend_url(name: str, folder: Path):
    """A fresh migrated database: a SQLite file, or a PostgreSQL database dropped after."""
    from engine.config import Settings
    from engine.store import Store
    from engine.store.database import create_engine_for
    from engine.store.migrations import upgrade

    admin = database = None
    if name == "sqlite":
        url = f"sqlite:///{folder / 'bench.db'}"
    else:
        base = os.environ.get("NUDGE_BENCH_POSTGRES_URL", ingest_bench.DEFAULT_POSTGRES_URL)
        admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
        database = f"nudge_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{database}"')
        url = sa.engine.make_url(base).set(database=database).render_as_string(False)
    store = Store(engine=create_engine_for(url), settings=Settings())
    upgrade(store)
    store.dispose()
    try:
        yield url
    finally:
        if admin is not None:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.dispose()


def make_project(folder: Path, url: str) -> Path:
    """A project with the repository's rules and templates on the database `url`."""
    project = folder / "shop"
    project.mkdir()
    shutil.copytree(ROOT / "rules", project / "rules", ignore=shutil.ignore_patterns("tests"))
    shutil.copytree(ROOT / "templates", project / "templates")
    (project / "nudge.toml").write_text(
        "[shop]\n"
        + "".join(f'{key} = "{value}"\n' for key, value in SHOP.items())
        + f'[database]\nurl = "{url}"\n'
        + '[serve]\nbase_url = "https://go.example.com"\n'
        + '[delivery]\nbase_url = "https://shop.example.com/lp"\n',
        encoding="utf-8",
    )
    return project


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_server(project: Path, port: int) -> None:
    """The child: `nudge serve`'s app and uvicorn settings, the API's rate limit lifted."""
    import uvicorn

    from engine.config import load_settings
    from engine.serve.app import create_app
    from engine.serve.safety import TokenBucket
    from engine.store import open_store

    settings = load_settings(project, environ={})
    app = create_app(
        settings,
        store=open_store(settings),
        api_token=TOKEN.encode(),
        api_rate_limiter=TokenBucket(capacity=1e9, rate=1e9),
    )
    # As `nudge serve` (cli.py), but no access log: one line per request is not the
    # server's work being measured.
    uvicorn.run(app, host="127.0.0.1", port=port, server_header=False, log_level="warning")


@contextmanager
def server(project: Path):
    port = free_port()
    env = {**os.environ, "NUDGE_SERVE_SECRET": "bench-serve-secret"}
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(project), "--port", str(port)], env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, child)
        yield base, child.pid
    finally:
        child.terminate()
        child.wait(timeout=30)


def wait_healthy(base: str, child: subprocess.Popen, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"the server exited with code {child.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the server did not answer /healthz within {timeout:.0f} s")


class Connection:
    """A minimal HTTP/1.1 keep-alive connection for the load generator.

    httpx costs about a millisecond of CPU per request, as much as the server's own
    work on a landing page: with it the client, sharing the machine's cores, was what
    the benchmark measured. This sends a request and reads a Content-Length response.
    """

    def __init__(self, base: str):
        host, port = base.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def request(self, method: str, path: str, body: bytes = b"", headers: str = ""):
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nhost: {self.host}\r\n{headers}"
            f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"no content-length in {head!r}")
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


# --- events: the API and its limit ---------------------------------------------------


def load_events(folder: Path, events: int, users: int) -> list[dict[str, Any]]:
    path = folder / "events.jsonl"
    ingest_bench.generate(path, events, users)
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def with_ids(events: list[dict[str, Any]], run: str) -> list[dict[str, Any]]:
    """The events with ids of this run: each run stores every one of them anew."""
    return [{**event, "id": f"{run}-{number}"} for number, event in enumerate(events)]


def batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def post_events(base: str, folder: Path, events: list[dict], batch: int, connections: int):
    """Runs the client process on these events; its report."""
    bodies = folder / "bodies.json"
    bodies.write_text(json.dumps([json.dumps(b) for b in batches(events, batch)]))
    report = client_process(
        ["--post-events", base, "--bodies", str(bodies), "--connections", str(connections)]
    )
    bodies.unlink()
    return report


def client_process(arguments: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, *arguments], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the client failed:\n{done.stderr}")
    return json.loads(done.stdout)


async def _post_all(base: str, bodies: list[str], connections: int) -> dict[str, Any]:
    totals = {"stored": 0, "duplicate": 0, "rejected": 0, "errors": 0, "requests": 0}
    pending = [body.encode() for body in reversed(bodies)]
    headers = f"authorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\n"

    async def worker() -> None:
        connection = await Connection(base).open()
        while pending:
            status, answer = await connection.request("POST", "/v1/events", pending.pop(), headers)
            totals["requests"] += 1
            if status != 200:
                totals["errors"] += 1
                totals.setdefault("first_error", f"{status} {answer[:200]!r}")
                continue
            result = json.loads(answer)
            for key in ("stored", "duplicate", "rejected"):
                totals[key] += result[key]
        connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    totals["seconds"] = time.perf_counter() - started
    return totals


def write_directly(url: str, events: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    """The limit: the same rows through the ingest writer, one transaction per batch."""
    from engine.config import Settings, ShopSettings
    from engine.ingest.money import ShopCurrency
    from engine.ingest.records import event_row
    from engine.ingest.writers import BatchWriter
    from engine.store import Store
    from engine.store.database import create_engine_for

    settings = Settings(shop=ShopSettings(timezone=SHOP["timezone"], currency=SHOP["currency"]))
    zone, currency = settings.tz, ShopCurrency.of(settings)
    rows = [[event_row(item, zone, currency) for item in chunk] for chunk in batches(events, batch)]
    store = Store(engine=create_engine_for(url), settings=settings)
    inserted = 0
    now = ingest_bench.NOW
    with store.connect() as connection:
        writer = BatchWriter(connection, now)
        writer.create_temp_tables()
        started = time.perf_counter()
        for chunk in rows:
            with connection.begin():
                inserted += writer.write_events(chunk, require_users=False).inserted
        seconds = time.perf_counter() - started
        with connection.begin():
            writer.drop_temp_tables()
    store.dispose()
    return {"seconds": seconds, "stored": inserted}


def count_events(url: str, prefix: str) -> tuple[int, int]:
    """(rows, distinct ids) of one run's events in the table."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    query = sa.text(
        "SELECT count(*), count(DISTINCT user_id || ':' || source_id) FROM events "
        "WHERE source_id LIKE :prefix"
    )
    with engine.connect() as connection:
        rows, distinct = connection.execute(query, {"prefix": f"{prefix}-%"}).one()
    engine.dispose()
    return rows, distinct


def bench_events(url: str, base: str, folder: Path, events: list[dict], args) -> dict[str, Any]:
    api_rates: list[float] = []
    limit_rates: list[float] = []
    for repeat in range(args.repeat):
        order = ("api", "limit") if repeat % 2 == 0 else ("limit", "api")
        for kind in order:
            run = f"r{repeat}{kind}"
            mine = with_ids(events, run)
            if kind == "api":
                report = post_events(base, folder, mine, args.batch, args.connections)
                assert report["errors"] == 0, report.get("first_error")
                assert report["stored"] == len(mine), report
            else:
                report = write_directly(url, mine, args.batch)
                assert report["stored"] == len(mine), report
            # Nothing lost, nothing twice: the table holds exactly the events sent.
            assert count_events(url, run) == (len(mine), len(mine)), run
            rate = len(mine) / report["seconds"]
            (api_rates if kind == "api" else limit_rates).append(rate)
            print(f"  {kind:>5} {rate:>10,.0f} events/s", file=sys.stderr)
    return {
        "api_events_per_s": summary(api_rates),
        "limit_events_per_s": summary(limit_rates),
        "ratio_median": round(statistics.median(api_rates) / statistics.median(limit_rates), 2),
    }


def summary(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values)), "median": round(statistics.median(values))}


# --- landing page --------------------------------------------------------------------


async def _landing_max(base: str, seconds: float, connections: int) -> dict[str, Any]:
    counts = {"ok": 0, "errors": 0}
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        connection = await Connection(base).open()
        while time.perf_counter() < deadline:
            status, _ = await connection.request("GET", LANDING_PATH)
            counts["ok" if status == 200 else "errors"] += 1
        connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    counts["seconds"] = time.perf_counter() - started
    return counts


async def _landing_at_rate(base: str, seconds: float, rate: float) -> dict[str, Any]:
    """Open loop: request i is due at start + i / rate; latency counts from then. A
    request finding no idle connection opens one, so a slow answer never delays the
    next request's sending."""
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0}
    idle: list[Connection] = []
    warm = await Connection(base).open()
    await warm.request("GET", LANDING_PATH)  # the first render out of the figures
    idle.append(warm)

    async def one(due: float) -> None:
        connection = idle.pop() if idle else await Connection(base).open()
        status, _ = await connection.request("GET", LANDING_PATH)
        latencies.append(time.perf_counter() - due)
        counts["ok" if status == 200 else "errors"] += 1
        idle.append(connection)

    start = time.perf_counter() + 0.05
    tasks = []
    for number in range(int(seconds * rate)):
        due = start + number / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the load, not waiting for a result
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    for connection in idle:
        connection.close()
    latencies.sort()
    return {
        **counts,
        "connections": len(idle),
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p95_ms": latencies[int(len(latencies) * 0.95)] * 1000,
        "max_ms": latencies[-1] * 1000,
    }


def render_directly(project: Path, seconds: float) -> float:
    """The limit: pages/s of the same generic page rendered in-process."""
    from engine import clock
    from engine.config import load_settings
    from engine.serve import landing
    from engine.serve.clicks import delivery_base_url
    from engine.store import open_store

    settings = load_settings(project, environ={})
    store = open_store(settings)
    use, locales = landing.landing_index(store)[tuple(LANDING_PATH.split("/")[2:])]
    pages = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        landing.render_landing(
            store,
            use,
            query={},
            accept_language=None,
            locales=locales,
            base_url=delivery_base_url(settings),
            landing_secret=None,
            now=clock.utcnow(),
        )
        pages += 1
    rate = pages / (time.perf_counter() - started)
    store.dispose()
    return rate


def bench_landing(base: str, project: Path, args) -> dict[str, Any]:
    max_rates, limit_rates, p95s, p50s, maxes = [], [], [], [], []
    for _ in range(args.repeat):
        top = client_process(["--landing-max", base, "--seconds", str(args.landing_seconds)])
        assert top["errors"] == 0 and top["ok"] > 0, top
        max_rates.append(top["ok"] / top["seconds"])
        limit_rates.append(render_directly(project, args.landing_seconds))
        paced = client_process(
            [
                "--landing-rate-url",
                base,
                "--seconds",
                str(args.landing_seconds),
                "--rate",
                str(args.landing_rate),
            ]
        )
        assert paced["errors"] == 0, paced
        # Every request it was to send was answered: the work timed was done.
        assert paced["ok"] == int(args.landing_seconds * args.landing_rate), paced
        p50s.append(paced["p50_ms"])
        p95s.append(paced["p95_ms"])
        maxes.append(paced["max_ms"])
        print(
            f"  landing {max_rates[-1]:,.0f} req/s (render {limit_rates[-1]:,.0f}/s), "
            f"p95 {p95s[-1]:.1f} ms at {args.landing_rate:.0f}/s",
            file=sys.stderr,
        )
    return {
        "requests_per_s": summary(max_rates),
        "render_limit_per_s": summary(limit_rates),
        "ratio_median": round(statistics.median(max_rates) / statistics.median(limit_rates), 2),
        f"at_{args.landing_rate:.0f}_per_s": {
            "p50_ms_median": round(statistics.median(p50s), 1),
            "p95_ms_min": round(min(p95s), 1),
            "p95_ms_median": round(statistics.median(p95s), 1),
            "max_ms_median": round(statistics.median(maxes), 1),
        },
    }


# --- main ----------------------------------------------------------------------------


def bench_backend(name: str, events: list[dict], args) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="nudge-bench-serve-") as scratch:
        folder = Path(scratch)
        with backend_url(name, folder) as url:
            project = make_project(folder, url)
            with server(project) as (base, _pid):
                print(f"{name}: events", file=sys.stderr)
                result = {"events": bench_events(url, base, folder, events, args)}
                print(f"{name}: landing", file=sys.stderr)
                result["landing"] = bench_landing(base, project, args)
    return result


def child(args) -> int:
    """The server and client processes of the benchmark."""
    if args.serve:
        run_server(Path(args.serve), args.port)
    elif args.post_events:
        bodies = json.loads(Path(args.bodies).read_text())
        print(json.dumps(asyncio.run(_post_all(args.post_events, bodies, args.connections))))
    elif args.landing_max:
        report = asyncio.run(_landing_max(args.landing_max, args.seconds, args.connections))
        print(json.dumps(report))
    else:
        report = asyncio.run(_landing_at_rate(args.landing_rate_url, args.seconds, args.rate))
        print(json.dumps(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per run")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--landing-seconds", type=float, default=5.0)
    parser.add_argument("--landing-rate", type=float, default=200.0)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    # The child processes (not for direct use).
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--post-events", help=argparse.SUPPRESS)
    parser.add_argument("--bodies", help=argparse.SUPPRESS)
    parser.add_argument("--landing-max", help=argparse.SUPPRESS)
    parser.add_argument("--landing-rate-url", dest="landing_rate_url", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve or args.post_events or args.landing_max or args.landing_rate_url:
        return child(args)

    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "events": args.events,
        "users": args.users,
        "batch": args.batch,
        "connections": args.connections,
        "repeat": args.repeat,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="nudge-bench-serve-") as scratch:
        events = load_events(Path(scratch), args.events, args.users)
    for name in ("sqlite", "postgresql"):
        if args.backend in (name, "both"):
            results[name] = bench_backend(name, events, args)
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
