"""Load test of the event API: a real `nudge serve` (uvicorn, via the CLI) loaded from a
second process, on SQLite and PostgreSQL.

The test starts `nudge serve` on a free 127.0.0.1 port in a temp project, waits for
/healthz, and runs this file as a script in another process: it POSTs /v1/events
batches of 500 at a steady rate (LOAD_RATE, 2 a second by default: 1,000 events/s,
under the API's per-IP limit of 10 requests/s) for LOAD_SECONDS (30) over 3
connections. Every 4th batch is sent twice at the same instant on two connections (a
client retrying while the first attempt is still in flight), and the first batches
are sent once more at the end. It
counts what was sent and what the server answered; the test then asserts that every
item was stored exactly once, by the answers and in the store: nothing lost, nothing
twice.

Duration and rate: 30 s, as the issue asks, at a rate that leaves the suite's other
worker a core (`make test` runs on 2 cores within 5 minutes); the throughput itself is
bench/serve.py's job. NUDGE_LOAD_SECONDS and NUDGE_LOAD_RATE change them (6 a second
for bench/README.md's figures).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

LOAD_SECONDS = float(os.environ.get("NUDGE_LOAD_SECONDS", "30"))
BATCH = 500
RATE = float(os.environ.get("NUDGE_LOAD_RATE", "2"))  # batches a second
CONNECTIONS = 3
TOKEN = "load-test-token"
START = datetime(2026, 11, 1, tzinfo=UTC)


# --- the client process -------------------------------------------------------------


def batch_events(number: int, users: int = 2_000) -> list[dict]:
    """Batch `number`: 500 events with unique ids, visits and purchases of `users` users."""
    events = []
    for item in range(BATCH):
        serial = number * BATCH + item
        event = {
            "id": f"load-{serial}",
            "user": f"u{serial * 7919 % users:05d}",
            "type": "purchase" if serial % 10 == 0 else "visit",
            "at": (START + timedelta(seconds=serial)).isoformat(),
        }
        if event["type"] == "purchase":
            event["amount"] = f"{serial % 500 + 1}.50"
        else:
            event["page"] = f"/p/{serial % 97}"
        events.append(event)
    return events


class Tally:
    """What was sent and what the server answered, from every thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {"items": 0, "stored": 0, "duplicate": 0, "rejected": 0, "requests": 0}
        self.errors: list[str] = []
        self.throttled = 0

    def add(self, answer: dict) -> None:
        with self.lock:
            self.counts["requests"] += 1
            self.counts["items"] += len(answer["results"])
            for key in ("stored", "duplicate", "rejected"):
                self.counts[key] += answer[key]


def post(client: httpx.Client, body: bytes, tally: Tally) -> dict | None:
    headers = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    for _ in range(10):
        response = client.post("/v1/events", content=body, headers=headers)
        if response.status_code == 429:  # honoured, as a well-behaved client does
            with tally.lock:
                tally.throttled += 1
            time.sleep(float(response.headers.get("retry-after", "1")))
            continue
        if response.status_code != 200:
            with tally.lock:
                tally.errors.append(f"{response.status_code}: {response.text[:300]}")
            return None
        answer = response.json()
        tally.add(answer)
        return answer
    with tally.lock:
        tally.errors.append("still throttled after 10 attempts")
    return None


def run_load(url: str, seconds: float, rate: float) -> dict:
    tally = Tally()
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=60)
        return local.client

    def send(body: bytes) -> dict | None:
        return post(client(), body, tally)

    batches = int(seconds * rate)
    bodies = [json.dumps(batch_events(number)).encode() for number in range(batches)]
    started = time.monotonic()
    late = 0.0
    with ThreadPoolExecutor(CONNECTIONS) as pool:
        futures = []
        for number, body in enumerate(bodies):
            due = started + number / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # pacing the load
            late = max(late, -wait)
            futures.append(pool.submit(send, body))
            if number % 4 == 0:
                futures.append(pool.submit(send, body))  # a retry racing the first attempt
        for future in futures:
            future.result()
        elapsed = time.monotonic() - started
        # Re-sent once everything is stored: the answer must be "duplicate" for all.
        resent = [pool.submit(send, body) for body in bodies[:3]]
        again = [future.result() for future in resent]
    return {
        **tally.counts,
        "unique_sent": batches * BATCH,
        "batches": batches,
        "seconds": round(elapsed, 2),
        "events_per_s": round(batches * BATCH / elapsed),
        "max_late_s": round(late, 3),
        "throttled": tally.throttled,
        "errors": tally.errors[:5],
        "resent_stored": sum(a["stored"] for a in again if a),
        "resent_duplicate": sum(a["duplicate"] for a in again if a),
    }


# --- the test -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = 60.0) -> None:
    """Polls /healthz until it answers 200, the server exits, or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"nudge serve exited with code {server.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"nudge serve did not answer /healthz within {timeout:.0f} s")


@pytest.mark.slow
def test_event_api_under_load_stores_every_event_once(project_dir, store_url):
    # Imported here: the file also runs as the load script, outside the test session.
    import sqlalchemy as sa
    from serve_helpers import serve_project

    from engine.store import open_store
    from engine.store.people import Event

    settings = serve_project(project_dir, store_url)
    nudge = shutil.which("nudge", path=str(Path(sys.executable).parent))
    assert nudge, "the nudge command is installed beside this Python"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "NUDGE_API_TOKEN": TOKEN, "NUDGE_SERVE_SECRET": "load-secret"}
    log = (project_dir / "serve.log").open("w")
    server = subprocess.Popen(
        [nudge, "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=project_dir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(url, server)
        client = subprocess.run(
            [sys.executable, __file__, url, "--seconds", str(LOAD_SECONDS), "--rate", str(RATE)],
            capture_output=True,
            text=True,
            timeout=LOAD_SECONDS * 4 + 60,
            check=False,
        )
        assert client.returncode == 0, client.stderr
        report = json.loads(client.stdout)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    served = (project_dir / "serve.log").read_text()
    print(json.dumps(report), file=sys.stderr)
    assert report["errors"] == [], (report["errors"], served[-3000:])
    assert "Traceback" not in served, served[-3000:]
    sent = report["unique_sent"]
    # By the answers: every event stored once, each repeat of it a duplicate.
    assert report["rejected"] == 0
    assert report["stored"] == sent
    assert report["stored"] + report["duplicate"] == report["items"]
    assert (report["resent_stored"], report["resent_duplicate"]) == (0, 3 * BATCH)
    # By the store: exactly the events sent, none twice.
    store = open_store(settings)
    try:
        events = Event.__table__
        key = events.c.user_id + ":" + events.c.source_id
        with store.read() as connection:
            rows, distinct = connection.execute(
                sa.select(sa.func.count(), sa.func.count(sa.distinct(key)))
            ).one()
    finally:
        store.dispose()
    assert (rows, distinct) == (sent, sent)


def main() -> int:
    parser = argparse.ArgumentParser(description="POST /v1/events batches at a steady rate")
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=LOAD_SECONDS)
    parser.add_argument("--rate", type=float, default=RATE, help="batches a second")
    args = parser.parse_args()
    print(json.dumps(run_load(args.url, args.seconds, args.rate)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
