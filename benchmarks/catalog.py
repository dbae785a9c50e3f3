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
   requests per second on a shared machine).

Usage: python benchmarks/catalog.py [--items 1000000] [--pg-items N] [--queries 100]
       [--seconds 3]
"""

from __future__ import annotations

import argparse
import calendar
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

import httpx

from pixelfleet.catalog import new_collection, open_catalog

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(url: str) -> tuple[subprocess.Popen[bytes], str]:
    """``pixelfleet serve`` for ``url`` on one core; returns the process and base URL."""
    port = free_port()
    exe = Path(sys.executable).with_name("pixelfleet")
    proc = subprocess.Popen(
        [str(exe), "serve", "--catalog", url, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: os.sched_setaffinity(0, {0}),
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/stac/conformance", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start: {proc.stderr.read() if proc.stderr else ''}")


def percentiles(ms: list[float]) -> tuple[float, float]:
    ms = sorted(ms)
    return statistics.median(ms), ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]


def over_http(base: str, qs: dict[str, list[dict[str, str]]]) -> dict[str, tuple[float, float]]:
    out = {}
    with httpx.Client(base_url=base, timeout=60) as client:
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
        out["filter"].append({"filter": f"\"pixelfleet:key\" LIKE 'st{station:02d}/%'"})
    return out


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def send(
    base: str,
    kind: str,
    params: list[dict[str, str]],
    offset: int,
    stop: float,
    times: list[float],
    lock: threading.Lock,
) -> None:
    """One client connection sending searches back to back until ``stop``."""
    mine = []
    with httpx.Client(base_url=base, timeout=60) as client:
        i = offset
        while time.perf_counter() < stop:
            t = time.perf_counter()
            r = client.get("/stac/search", params={**params[i % len(params)], "limit": 10})
            mine.append((time.perf_counter() - t) * 1000)
            if r.status_code != 200:
                raise RuntimeError(f"{kind}: {r.status_code} {r.text[:200]}")
            i += 1
    with lock:
        times.extend(mine)


def throughput(
    base: str, pid: int, qs: dict[str, list[dict[str, str]]], clients: int, seconds: float
) -> dict[str, tuple[float, float, float, float]]:
    """Requests back to back over ``clients`` connections for ``seconds`` per query type:
    ``(requests/s, p50 ms, p95 ms, server CPU ms per request)``."""
    out = {}
    for kind, params in qs.items():
        times: list[float] = []
        lock = threading.Lock()
        stop = time.perf_counter() + seconds

        cpu0, t0 = server_cpu(pid), time.perf_counter()
        threads = [
            threading.Thread(target=send, args=(base, kind, params, k * 7, stop, times, lock))
            for k in range(clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall, cpu = time.perf_counter() - t0, server_cpu(pid) - cpu0
        p50, p95 = percentiles(times)
        out[kind] = (len(times) / wall, p50, p95, cpu * 1000 / len(times))
    return out


def report_throughput(name: str, figures: dict[int, dict[str, Any]]) -> None:
    if not figures:
        return
    print(f"  {name} throughput, limit 10 (target >= 1,000 req/s, p95 <= 20 ms; filter >= 300):")
    print(f"  {'query':<10} {'conns':>5} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7}"
          f" {'srv CPU ms/req':>15}")  # fmt: skip
    for clients, rows in figures.items():
        for kind, (rate, p50, p95, cpu) in rows.items():
            print(f"  {kind:<10} {clients:>5} {rate:7.0f} {p50:7.1f} {p95:7.1f} {cpu:15.2f}")


def plain_scan(path: str, qs: dict[str, list[dict[str, str]]]) -> dict[str, tuple[float, float]]:
    """The baseline: the same queries over the items table read without any index."""
    db = sqlite3.connect(path)
    out = {}
    for kind, params in qs.items():
        times = []
        for p in params[: max(5, len(params) // 5)]:  # scans are slow: a fifth of them
            conds, args = [], []
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
    """A fresh database on 127.0.0.1:5432, or None when PostgreSQL is not there."""
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            pass
    except OSError:
        return None
    import psycopg

    name = "pixelfleet_bench"
    with psycopg.connect("postgresql://root@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql://root@127.0.0.1:5432/{name}"


def analyze(url: str) -> None:
    """VACUUM ANALYZE after a bulk load, as one does with PostgreSQL."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


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
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument(
        "--pg-items", type=int, default=None, help="items for pgstac (default: --items; 0 skips)"
    )
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="seconds per throughput figure (0 skips)"
    )
    parser.add_argument("--no-scan", action="store_true", help="skip the plain-scan baseline")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.pg_items is None:
        args.pg_items = args.items
    folder = Path(tempfile.mkdtemp(prefix="pixelfleet-bench-"))
    qs = queries(args.queries)
    tqs = throughput_queries(args.queries)
    clients = (1, 8) if args.seconds > 0 else ()
    print(f"machine: {os.cpu_count()} cores; server pinned to core 0; {args.queries} queries"
          " per type, limit 10, newest first")  # fmt: skip
    started = time.monotonic()
    try:
        path = folder / "catalog.db"
        url = f"sqlite:///{path}"
        print(f"sqlite: loading {args.items:,} items ...", flush=True)
        rate = load(url, args.items)
        size = path.stat().st_size / 1024**2
        print(f"    database file {size:,.0f} MB")
        proc, base = serve(url)
        try:
            http = over_http(base, qs)
            rates = {c: throughput(base, proc.pid, tqs, c, args.seconds) for c in clients}
        finally:
            proc.terminate()
            proc.wait(10)
        scan = skipped(qs) if args.no_scan else plain_scan(str(path), qs)
        report("sqlite", args.items, rate, http, scan)
        report_throughput("sqlite", rates)
        print("  insert target >= 20,000 items/s:", "ok" if rate[0] >= 20_000 else "MISSED")

        pg = pg_url() if args.pg_items else None
        if pg is None:
            why = "not reachable on 127.0.0.1:5432" if args.pg_items else "--pg-items 0"
            print(f"\npgstac: skipped ({why})")
        else:
            print(f"\npgstac: loading {args.pg_items:,} items ...", flush=True)
            rate = load(pg, args.pg_items)
            analyze(pg)
            proc, base = serve(pg)
            try:
                http = over_http(base, qs)
                pg_rates = {c: throughput(base, proc.pid, tqs, c, args.seconds) for c in clients}
            finally:
                proc.terminate()
                proc.wait(10)
            # The baseline for pgstac is the same plain scan over the same items.
            if args.no_scan:
                scan = skipped(qs)
            elif args.pg_items != args.items:
                small = folder / "small.db"
                load(f"sqlite:///{small}", args.pg_items, quiet=True)
                scan = plain_scan(str(small), qs)
            report("pgstac", args.pg_items, rate, http, scan)
            report_throughput("pgstac", pg_rates)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
