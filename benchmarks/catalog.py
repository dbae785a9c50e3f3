"""Catalog benchmark: bulk insert rate, and search latency over HTTP against a plain scan.

For each backend (SQLite; pgstac when PostgreSQL is reachable) it

1. generates N synthetic STAC items (random 0.05-degree footprints over the
   continental US, datetimes over 2010-2020, titles and labels drawn from a
   1000-word vocabulary with a Zipf-like skew) and upserts them in batches of 50,000
   (one transaction each), timing only the upserts (items/s);
2. starts ``pixelfleet serve`` on 127.0.0.1, pinned to one core, and sends text,
   bbox, datetime and combined searches (limit 10, newest first, one at a time),
   timing each request (p50/p95, ms);
3. answers the same queries with a plain scan (the SQLite ``items`` table read without
   its indexes, in this process) as the baseline.

4. measures throughput: requests per second for plain, bbox, datetime, free-text and
   property-filter searches (limit 10), sent back to back over 1 and over 8
   connections, with the server's CPU milliseconds per request (steadier than
   requests per second on a shared machine);
5. on pgstac, when stac-fastapi-pgstac is installed in its own virtual environment
   (``--peer-python``), serves the SAME database with it too (one uvicorn process,
   pinned to the same core, free-text search enabled), checks that both return the
   same first pages, and measures both with the same requests, pixelfleet first for
   each query type, printing both and their ratios. Install it with
   ``python3 -m venv /tmp/sfp && /tmp/sfp/bin/pip install 'stac-fastapi-pgstac[server]==7.2.0'``
   (7.2 supports pgstac 0.9.2 up to 0.10.x; pypgstac 0.10.0 installs pgstac 0.10.0).

Usage: python benchmarks/catalog.py [--items 1000000] [--pg-items N] [--queries 100]
       [--seconds 3] [--peer-python /tmp/sfp/bin/python]
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import importlib.metadata as metadata
import json
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from pixelfleet.catalog import new_collection, open_catalog
from pixelfleet.catalog.pgstac import POOL_SIZE

VOCAB_SIZE = 1000
BATCH = 50_000
COLLECTION = "bench"
CONUS = (-124.0, 25.0, -67.0, 49.0)
START, END = 1262304000.0, 1609459200.0  # 2010-01-01 .. 2021-01-01


def word(i: int) -> str:
    """Vocabulary word ``i``: pronounceable and distinct (``w`` + base-26 letters)."""
    letters = ""
    i += 26 * 26
    while i:
        i, r = divmod(i, 26)
        letters += "abcdefghijklmnopqrstuvwxyz"[r]
    return "w" + letters


VOCAB = [word(i) for i in range(VOCAB_SIZE)]
# Zipf-like weights: word k is drawn with weight 1 / (k + 10).
WEIGHTS = [1.0 / (k + 10) for k in range(VOCAB_SIZE)]


def iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def epoch(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def items(n: int, seed: int = 1) -> Iterator[list[dict[str, Any]]]:
    """N items in batches, generated on the fly (never all in memory)."""
    rng = random.Random(seed)
    w0, s0, e0, n0 = CONUS
    for start in range(0, n, BATCH):
        batch = []
        for i in range(start, min(n, start + BATCH)):
            lon = rng.uniform(w0, e0 - 0.05)
            lat = rng.uniform(s0, n0 - 0.05)
            words = rng.choices(VOCAB, WEIGHTS, k=3)
            labels = rng.choices(VOCAB, WEIGHTS, k=2)
            box = [round(lon, 5), round(lat, 5), round(lon + 0.05, 5), round(lat + 0.05, 5)]
            ring = [[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]],
                    [box[0], box[1]]]  # fmt: skip
            key = f"st{i % 50:02d}/{2010 + i % 11}/m_{i:08d}.tif"
            batch.append(
                {
                    "type": "Feature",
                    "stac_version": "1.1.0",
                    "stac_extensions": [],
                    "id": key,
                    "collection": COLLECTION,
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                    "bbox": box,
                    "properties": {
                        "datetime": iso(rng.uniform(START, END)),
                        "title": " ".join(words),
                        "description": f"synthetic scene {i}",
                        "keywords": labels,
                        "labels": [{"name": name, "confidence": 0.9} for name in labels],
                        "pixelfleet:key": key,
                    },
                    "links": [],
                    "assets": {
                        "thumbnail": {
                            "href": f"https://thumbs.example/{key}.jpg",
                            "type": "image/jpeg",
                            "roles": ["thumbnail"],
                        }
                    },
                }
            )
        yield batch


def load(url: str, n: int, quiet: bool = False) -> tuple[float, float]:
    """Upsert N items; return items per second of wall time and of this process's CPU time
    (upserts only; the CPU figure is steadier on a shared machine)."""
    spent = 0.0
    cpu = 0.0
    with open_catalog(url) as catalog:
        catalog.save_collection(new_collection(COLLECTION))
        done = 0
        for batch in items(n):
            t, c = time.perf_counter(), time.process_time()
            catalog.upsert(batch)
            spent += time.perf_counter() - t
            cpu += time.process_time() - c
            done += len(batch)
            if not quiet and (done % 200_000 == 0 or done == n):
                print(f"    {done:,} items, {done / spent:,.0f} items/s so far", flush=True)
    return n / spent, n / cpu


def queries(count: int, seed: int = 7) -> dict[str, list[dict[str, str]]]:
    """The same random queries for every backend: text, bbox, datetime, combined."""
    rng = random.Random(seed)
    w0, s0, e0, n0 = CONUS
    out: dict[str, list[dict[str, str]]] = {"text": [], "bbox": [], "datetime": [], "combined": []}
    for _ in range(count):
        out["text"].append({"q": rng.choice(VOCAB[:200])})
        lon, lat = rng.uniform(w0, e0 - 1), rng.uniform(s0, n0 - 1)
        out["bbox"].append({"bbox": f"{lon:.3f},{lat:.3f},{lon + 1:.3f},{lat + 1:.3f}"})
        t0 = rng.uniform(START, END - 30 * 86400)
        out["datetime"].append({"datetime": f"{iso(t0)}/{iso(t0 + 30 * 86400)}"})
        lon, lat = rng.uniform(w0, e0 - 5), rng.uniform(s0, n0 - 5)
        t0 = rng.uniform(START, END - 365 * 86400)
        out["combined"].append(
            {
                "q": rng.choice(VOCAB[:50]),
                "bbox": f"{lon:.3f},{lat:.3f},{lon + 5:.3f},{lat + 5:.3f}",
                "datetime": f"{iso(t0)}/{iso(t0 + 365 * 86400)}",
            }
        )
    return out


#: stac-fastapi-pgstac, the peer measured on the same pgstac database (see --peer-python).
PEER_PYTHON = "/tmp/sfp/bin/python"
PEER_INSTALL = (
    "python3 -m venv /tmp/sfp && /tmp/sfp/bin/pip install 'stac-fastapi-pgstac[server]==7.2.0'"
)
#: The peer's server: its own app with the free-text extension added to /search (7.2's
#: defaults leave it out there, and q would be ignored), one uvicorn process, as
#: ``pixelfleet serve`` runs (uvloop and httptools, which its ``[server]`` extra installs).
PEER_APP = """
import sys
import uvicorn
from stac_fastapi.extensions.free_text import FreeTextExtension
from stac_fastapi.pgstac.app import instantiate_api
from stac_fastapi.pgstac.models.extensions import Extensions

api = instantiate_api(extensions=Extensions(search_map={"free_text": FreeTextExtension()}))
uvicorn.run(api.app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""
#: Both servers get the same requests; neither is asked to compress (stac-fastapi-pgstac
#: would gzip every page for httpx's default Accept-Encoding; pixelfleet never compresses).
HEADERS = {"Accept-Encoding": "identity"}


class Server:
    """A search server under test: its base URL, search path and process."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], base: str, path: str):
        self.name, self.proc, self.base, self.path = name, proc, base, path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    name: str, argv: list[str], port: int, path: str, log: Path, env: dict[str, str] | None = None
) -> Server:
    """Run ``argv`` (a server on 127.0.0.1:``port``) pinned to core 0, its stderr to ``log``;
    return once ``path``'s conformance page answers."""
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            preexec_fn=lambda: os.sched_setaffinity(0, {0}),
        )
    base = f"http://127.0.0.1:{port}"
    probe = f"{base}{path.removesuffix('/search')}/conformance"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(probe, timeout=1).status_code == 200:
                return Server(name, proc, base, path)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    proc.wait(10)
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{name} did not start (exit {proc.returncode}): {tail}")


def serve(url: str, folder: Path) -> Server:
    """``pixelfleet serve`` for ``url`` on one core."""
    port = free_port()
    exe = Path(sys.executable).with_name("pixelfleet")
    argv = [str(exe), "serve", "--catalog", url, "--port", str(port)]
    return start("pixelfleet", argv, port, "/stac/search", folder / "pixelfleet.log")


def peer_version(python: str) -> tuple[str | None, str]:
    """stac-fastapi-pgstac's version in ``python``'s environment, or None and why not."""
    if not python:
        return None, "--peer-python is empty"
    if not Path(python).exists():
        return None, f"{python} does not exist"
    check = (
        "import importlib.metadata as m, stac_fastapi.pgstac, uvicorn;"
        " print(m.version('stac-fastapi-pgstac'))"
    )
    try:
        done = subprocess.run([python, "-c", check], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{python} did not run: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        return None, f"{python} cannot import stac_fastapi.pgstac and uvicorn ({last})"
    return done.stdout.strip(), ""


def serve_peer(python: str, url: str, folder: Path) -> Server:
    """stac-fastapi-pgstac for the pgstac database at ``url`` on one core, its pool at most
    as large as pixelfleet's."""
    parts = urlsplit(url)
    env = {
        **os.environ,
        "PGUSER": unquote(parts.username or ""),
        "PGPASSWORD": unquote(parts.password or ""),
        "PGHOST": parts.hostname or "127.0.0.1",
        "PGPORT": str(parts.port or 5432),
        "PGDATABASE": parts.path.lstrip("/"),
        "DB_MIN_CONN_SIZE": "1",
        "DB_MAX_CONN_SIZE": str(POOL_SIZE),
    }
    port = free_port()
    argv = [python, "-c", PEER_APP, str(port)]
    return start("stac-fastapi-pgstac", argv, port, "/search", folder / "peer.log", env)


def percentiles(ms: list[float]) -> tuple[float, float]:
    ms = sorted(ms)
    return statistics.median(ms), ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]


def over_http(base: str, qs: dict[str, list[dict[str, str]]]) -> dict[str, tuple[float, float]]:
    out = {}
    with httpx.Client(base_url=base, timeout=60, headers=HEADERS) as client:
        for _ in range(5):  # warm up
            client.get("/stac/search", params={"limit": 10})
        for kind, params in qs.items():
            times = []
            for p in params:
                t = time.perf_counter()
                r = client.get("/stac/search", params={**p, "limit": 10})
                times.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    raise RuntimeError(f"{kind} {p}: {r.status_code} {r.text[:200]}")
            out[kind] = percentiles(times)
    return out


def throughput_queries(count: int, seed: int = 11) -> dict[str, list[dict[str, str]]]:
    """Queries for the throughput figures: the plain page, a 1-degree box, a 30-day window,
    a common word, and a CQL2 filter on a property (one station's scenes)."""
    rng = random.Random(seed)
    w0, s0, e0, n0 = CONUS
    out: dict[str, list[dict[str, str]]] = {k: [] for k in ("plain", "bbox", "datetime", "q",
                                                            "filter")}  # fmt: skip
    for _ in range(count):
        out["plain"].append({})
        lon, lat = rng.uniform(w0, e0 - 1), rng.uniform(s0, n0 - 1)
        out["bbox"].append({"bbox": f"{lon:.3f},{lat:.3f},{lon + 1:.3f},{lat + 1:.3f}"})
        t0 = rng.uniform(START, END - 30 * 86400)
        out["datetime"].append({"datetime": f"{iso(t0)}/{iso(t0 + 30 * 86400)}"})
        out["q"].append({"q": rng.choice(VOCAB[:200])})
        station = rng.randrange(50)
        out["filter"].append(
            {"filter": f"\"pixelfleet:key\" LIKE 'st{station:02d}/%'", "filter-lang": "cql2-text"}
        )
    return out


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Backends:
    """CPU time of the PostgreSQL backends serving one database (PostgreSQL on this machine,
    visible in /proc): what pgstac's SQL costs, which the server's own CPU leaves out."""

    def __init__(self, url: str | None):
        self.name = urlsplit(url).path.lstrip("/") if url else ""
        self.conn: Any = None
        if url:
            import psycopg

            self.conn = psycopg.connect(urlunsplit(urlsplit(url)._replace(path="/postgres")),
                                        autocommit=True)  # fmt: skip

    def sample(self) -> dict[int, float]:
        if self.conn is None:
            return {}
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", [self.name]
        ).fetchall()
        out = {}
        for (pid,) in rows:
            # A backend may have ended, or PostgreSQL run elsewhere (a container, a host).
            with contextlib.suppress(OSError):
                out[pid] = server_cpu(pid)
        return out

    @staticmethod
    def spent(before: dict[int, float], after: dict[int, float]) -> float:
        """CPU seconds between two samples (backends that ended in between are missed)."""
        if not after:
            return float("nan")
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


class Round:
    """One measurement: clients open their connections, then all start at once."""

    def __init__(self, server: Server, backends: Backends, clients: int, seconds: float):
        self.server, self.backends, self.seconds = server, backends, seconds
        self.times: list[float] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.start = self.stop = self.cpu0 = 0.0
        self.db0: dict[int, float] = {}
        self.ready = threading.Barrier(clients, action=self.go)

    def go(self) -> None:
        """Runs once every client is connected: the clock starts."""
        self.db0 = self.backends.sample()
        self.cpu0, self.start = server_cpu(self.server.proc.pid), time.perf_counter()
        self.stop = self.start + self.seconds


def send(run: Round, kind: str, params: list[dict[str, str]], offset: int) -> None:
    """One client connection sending searches back to back until the round's end."""
    mine = []
    server = run.server
    try:
        with httpx.Client(base_url=server.base, timeout=60, headers=HEADERS) as client:
            client.get(server.path, params={"limit": 1})  # connect
            run.ready.wait(timeout=300)
            i = offset
            while time.perf_counter() < run.stop:
                t = time.perf_counter()
                r = client.get(server.path, params={**params[i % len(params)], "limit": 10})
                mine.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    raise RuntimeError(f"{r.status_code} {r.text[:200]}")
                i += 1
    except (httpx.HTTPError, RuntimeError, threading.BrokenBarrierError) as exc:
        run.ready.abort()  # the other clients stop waiting for this one
        with run.lock:
            run.errors.append(f"{server.name} {kind}: {exc!r}")
    with run.lock:
        run.times.extend(mine)


def measure(
    server: Server,
    backends: Backends,
    kind: str,
    params: list[dict[str, str]],
    clients: int,
    seconds: float,
) -> tuple[float, float, float, float, float]:
    """Requests back to back over ``clients`` connections for ``seconds``: ``(requests/s,
    p50 ms, p95 ms, server CPU ms per request, database CPU ms per request)``."""
    run = Round(server, backends, clients, seconds)
    threads = [
        threading.Thread(target=send, args=(run, kind, params, k * 7)) for k in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - run.start, server_cpu(server.proc.pid) - run.cpu0
    db = Backends.spent(run.db0, backends.sample())
    if run.errors:
        raise RuntimeError(run.errors[0])
    if not run.times:
        raise RuntimeError(f"{server.name} {kind}: no request finished (see its log)")
    p50, p95 = percentiles(run.times)
    n = len(run.times)
    return n / wall, p50, p95, cpu * 1000 / n, db * 1000 / n


Queries = dict[str, list[dict[str, str]]]
Figures = dict[int, dict[str, tuple[float, float, float, float, float]]]


def throughput(
    servers: list[Server],
    qs: dict[str, list[dict[str, str]]],
    clients: tuple[int, ...],
    seconds: float,
    backends: Backends,
) -> dict[str, Figures]:
    """Each query type over each number of connections, for each server in turn (the
    servers alternate per query type, so a change in the machine's load hits both)."""
    out: dict[str, Figures] = {s.name: {} for s in servers}
    for c in clients:
        for kind, params in qs.items():
            for server in servers:
                out[server.name].setdefault(c, {})[kind] = measure(
                    server, backends, kind, params, c, seconds
                )
    return out


def report_throughput(name: str, figures: Figures) -> None:
    if not figures:
        return
    print(f"  {name} throughput, limit 10 (target >= 1,000 req/s, p95 <= 20 ms; filter >= 300):")
    print(f"  {'query':<10} {'conns':>5} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7}"
          f" {'srv CPU ms/req':>15} {'db CPU ms/req':>14}")  # fmt: skip
    for clients, rows in figures.items():
        for kind, (rate, p50, p95, cpu, db) in rows.items():
            print(f"  {kind:<10} {clients:>5} {rate:7.0f} {p50:7.1f} {p95:7.1f} {cpu:15.2f}"
                  f" {db:14.2f}")  # fmt: skip


def first_pages(servers: list[Server], qs: Queries) -> list[str]:
    """Send every distinct throughput query once to each server, before anything is timed:
    pgstac keeps statistics per WHERE clause (``search_wheres``), so whichever server sent
    a query first would pay for computing them for both. With two servers, compare their
    first pages (ids in order, limit 10), print the counts and return the mismatches."""
    bad = []
    counts = []
    clients = [httpx.Client(base_url=s.base, timeout=600, headers=HEADERS) for s in servers]
    try:
        for kind, params in qs.items():
            distinct = list({json.dumps(p, sort_keys=True): p for p in params}.values())
            same = empty = 0
            for p in distinct:
                pages = []
                for client, server in zip(clients, servers, strict=True):
                    r = client.get(server.path, params={**p, "limit": 10})
                    if r.status_code != 200:
                        raise RuntimeError(f"{server.name} {kind} {p}: {r.status_code} {r.text}")
                    pages.append([f["id"] for f in r.json()["features"]])
                if all(page == pages[0] for page in pages):
                    same += 1
                    empty += not pages[0]
                else:
                    bad.append(f"{kind} {p}: " + "; ".join(
                        f"{s.name} {page}" for s, page in zip(servers, pages, strict=True)
                    ))  # fmt: skip
            counts.append(f"{kind} {same}/{len(distinct)}" + (f" ({empty} empty)" if empty else ""))
    finally:
        for client in clients:
            client.close()
    if len(servers) > 1:
        print("  same first page (ids in order, limit 10) from both servers:", ", ".join(counts))
    return bad


def report_peer(version: str, ours: Figures, peer: Figures) -> None:
    """pixelfleet and stac-fastapi-pgstac side by side, with pixelfleet's lead."""
    print(
        f"\n  pixelfleet vs stac-fastapi-pgstac {version} on the same pgstac database, limit 10"
        "\n  (ratio: pixelfleet req/s over stac-fastapi-pgstac's; srv and db: CPU ms per request"
        "\n  of the server process and of its PostgreSQL backends)"
    )
    head = f"{'req/s':>7} {'p50':>6} {'p95':>6} {'srv':>5} {'db':>6}"
    print(f"  {'':<16} {'pixelfleet':^34}   {'stac-fastapi-pgstac':^34}")
    print(f"  {'query':<10} {'conns':>5} {head}   {head}  {'ratio':>6}")
    for clients, rows in ours.items():
        for kind, (rate, p50, p95, cpu, db) in rows.items():
            prate, pp50, pp95, pcpu, pdb = peer[clients][kind]
            ratio = rate / prate if prate else float("inf")
            verdict = "ahead" if ratio > 1 else "BEHIND"
            print(
                f"  {kind:<10} {clients:>5} {rate:7.1f} {p50:6.1f} {p95:6.1f} {cpu:5.2f} {db:6.2f}"
                f"   {prate:7.1f} {pp50:6.1f} {pp95:6.1f} {pcpu:5.2f} {pdb:6.2f}"
                f"  {ratio:5.2f}x {verdict}"
            )


def plain_scan(path: str, qs: dict[str, list[dict[str, str]]]) -> dict[str, tuple[float, float]]:
    """The baseline: the same queries over the items table read without any index."""
    db = sqlite3.connect(path)
    out = {}
    for kind, params in qs.items():
        times = []
        for p in params[: max(5, len(params) // 5)]:  # scans are slow: a fifth of them
            conds: list[str] = []
            args: list[str | float] = []
            if "q" in p:
                conds.append("instr(lower(content), ?) > 0")
                args.append(f'"{p["q"]}')
            if "bbox" in p:
                w, s, e, n = (float(v) for v in p["bbox"].split(","))
                conds.append("minx <= ? AND maxx >= ? AND miny <= ? AND maxy >= ?")
                args += [e, w, n, s]
            if "datetime" in p:
                a, b = p["datetime"].split("/")
                conds.append("dt_start <= ? AND dt_end >= ?")
                args += [epoch(b), epoch(a)]
            sql = (
                "SELECT content FROM items NOT INDEXED WHERE "
                + " AND ".join(conds)
                + " ORDER BY datetime DESC LIMIT 10"
            )
            t = time.perf_counter()
            rows = db.execute(sql, args).fetchall()
            [json.loads(r[0]) for r in rows]
            times.append((time.perf_counter() - t) * 1000)
        out[kind] = percentiles(times)
    db.close()
    return out


def skipped(qs: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Baseline figures when the scan is skipped (--no-scan)."""
    return {kind: (float("nan"), float("nan")) for kind in qs}


def pg_url() -> str | None:
    """A fresh database on 127.0.0.1:5432 named after this process (so that two runs never
    drop each other's), or None when PostgreSQL is not there."""
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            pass
    except OSError:
        return None
    import psycopg

    name = f"pixelfleet_bench_{os.getpid()}"
    with psycopg.connect("postgresql://root@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql://root@127.0.0.1:5432/{name}"


def drop_database(url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect("postgresql://root@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def analyze(url: str) -> str:
    """VACUUM ANALYZE after a bulk load, as one does with PostgreSQL; returns the versions
    of PostgreSQL and pgstac."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        row = conn.execute(
            "SELECT current_setting('server_version'), pgstac.get_version()"
        ).fetchone()
    return f"PostgreSQL {row[0]}, pgstac {row[1]}" if row else "unknown versions"


def report(
    name: str, n: int, rates: tuple[float, float], http: dict[str, Any], scan: dict[str, Any]
) -> None:
    print(
        f"\n{name}: {n:,} items, bulk insert {rates[0]:,.0f} items/s wall,"
        f" {rates[1]:,.0f} items/s of this process's CPU time"
    )
    print(f"  {'query':<10} {'p50 ms':>8} {'p95 ms':>8}   {'scan p50':>9} {'scan p95':>9}  "
          f"{'p95 vs scan':>11}  target p95 <= 50 ms")  # fmt: skip
    for kind, (p50, p95) in http.items():
        s50, s95 = scan[kind]
        ok = "ok" if p95 <= 50 else "MISSED"
        print(
            f"  {kind:<10} {p50:8.1f} {p95:8.1f}   {s50:9.1f} {s95:9.1f}  {s95 / p95:10.1f}x  {ok}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000, help="items for SQLite (0 skips)")
    parser.add_argument(
        "--pg-items", type=int, default=None, help="items for pgstac (default: --items; 0 skips)"
    )
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="seconds per throughput figure (0 skips)"
    )
    parser.add_argument("--no-scan", action="store_true", help="skip the plain-scan baseline")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder and the pgstac database"
    )
    parser.add_argument(
        "--peer-python",
        default=PEER_PYTHON,
        metavar="PATH",
        help="Python of a virtual environment with stac-fastapi-pgstac, measured beside"
        f" pixelfleet on the same pgstac database ('' skips; default {PEER_PYTHON});"
        f" install it with: {PEER_INSTALL}",
    )
    args = parser.parse_args()
    if args.pg_items is None:
        args.pg_items = args.items
    folder = Path(tempfile.mkdtemp(prefix="pixelfleet-bench-"))
    qs = queries(args.queries)
    tqs = throughput_queries(args.queries)
    clients = (1, 8) if args.seconds > 0 else ()
    print(f"machine: {os.cpu_count()} cores; servers pinned to core 0; {args.queries} queries"
          " per type, limit 10, newest first")  # fmt: skip
    started = time.monotonic()
    pg = None
    try:
        if args.items:
            sqlite_run(args, folder, qs, tqs, clients)
        pg = pg_url() if args.pg_items else None
        if pg is None:
            why = "not reachable on 127.0.0.1:5432" if args.pg_items else "--pg-items 0"
            print(f"\npgstac: skipped ({why}), and stac-fastapi-pgstac with it")
        else:
            pgstac_run(args, pg, folder, qs, tqs, clients)
    finally:
        if args.keep:
            print(f"\nkept {folder}" + (f" and the database {pg}" if pg else ""))
        else:
            shutil.rmtree(folder, ignore_errors=True)
            if pg is not None:
                drop_database(pg)
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    return 0


def sqlite_run(
    args: argparse.Namespace, folder: Path, qs: Queries, tqs: Queries, clients: tuple[int, ...]
) -> None:
    path = folder / "catalog.db"
    url = f"sqlite:///{path}"
    print(f"sqlite: loading {args.items:,} items ...", flush=True)
    rate = load(url, args.items)
    size = path.stat().st_size / 1024**2
    print(f"    database file {size:,.0f} MB")
    server = serve(url, folder)
    try:
        http = over_http(server.base, qs)
        rates = throughput([server], tqs, clients, args.seconds, Backends(None))[server.name]
    finally:
        server.stop()
    scan = skipped(qs) if args.no_scan else plain_scan(str(path), qs)
    report("sqlite", args.items, rate, http, scan)
    report_throughput("sqlite", rates)
    print("  insert target >= 20,000 items/s:", "ok" if rate[0] >= 20_000 else "MISSED")


def pgstac_run(
    args: argparse.Namespace,
    pg: str,
    folder: Path,
    qs: Queries,
    tqs: Queries,
    clients: tuple[int, ...],
) -> None:
    print(f"\npgstac: loading {args.pg_items:,} items ...", flush=True)
    rate = load(pg, args.pg_items)
    print(f"    {analyze(pg)}, pypgstac {metadata.version('pypgstac')}")
    version, why = peer_version(args.peer_python)
    servers = [serve(pg, folder)]
    backends = Backends(pg)
    try:
        if version is not None:
            try:
                servers.append(serve_peer(args.peer_python, pg, folder))
            except RuntimeError as exc:
                version, why = None, str(exc)
        http = over_http(servers[0].base, qs)
        mismatches = first_pages(servers, tqs) if clients else []
        rates = throughput(servers, tqs, clients, args.seconds, backends)
    finally:
        backends.close()
        for server in servers:
            server.stop()
    # The baseline for pgstac is the same plain scan over the same items.
    if args.no_scan:
        scan = skipped(qs)
    elif args.pg_items != args.items:
        small = folder / "small.db"
        load(f"sqlite:///{small}", args.pg_items, quiet=True)
        scan = plain_scan(str(small), qs)
    else:
        scan = plain_scan(str(folder / "catalog.db"), qs)
    report("pgstac", args.pg_items, rate, http, scan)
    report_throughput("pgstac", rates["pixelfleet"])
    if version is None:
        print(
            f"\n  stac-fastapi-pgstac: skipped ({why});\n  to compare, install it: {PEER_INSTALL}"
        )
        return
    print(f"  stac-fastapi-pgstac {version}: {servers[1].base}/search, free text enabled")
    for line in mismatches:
        print(f"  MISMATCH {line}")
    if rates["stac-fastapi-pgstac"]:
        report_peer(version, rates["pixelfleet"], rates["stac-fastapi-pgstac"])


if __name__ == "__main__":
    sys.exit(main())
