"""Labels per second per core, end to end against the bare computation, same process.

- imagenet: the ``labels`` step through the worker (read, decode and resize, classify in
  batches of 16, write the JSON sidecar) for N photos, against the bare forward pass
  of EfficientNet-Lite0 on the same preprocessed batches.
- spectral: the ``labels`` step for N 4-band rasters (NAIP-like, 2048 x 2048, tiled,
  with overviews), against the bare numpy index computation (NDVI/NDWI/NDSI and the
  class rules) on the same decimated arrays, already in memory.

Rates are images per CPU second of this process (torch uses 1 thread, as in a worker),
so they are per core; wall times are shown too. Target: end to end >= 70% of bare.

Run: ``.venv/bin/python benchmarks/labels.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / "demo" / "bucket" / "photos"
NAIP = REPO / "tests" / "data" / "naip_m_3607824_se_17_1_20160620_sub.tif"


def timed(
    fn: Callable[[], object], repeats: int, reset: Callable[[], object] | None = None
) -> tuple[float, float]:
    """Median CPU and wall seconds of ``fn`` over ``repeats`` runs (after one warm-up);
    ``reset`` runs before each, untimed."""
    if reset is not None:
        reset()
    fn()
    cpu, wall = [], []
    for _ in range(repeats):
        if reset is not None:
            reset()
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall)


def run_step(src: Path, out: Path, step: dict[str, object], n: int) -> Callable[[], object]:
    """A function that labels every object of ``src`` through the worker, from scratch."""
    from pixelfleet.models import Task
    from pixelfleet.pipeline import pipeline_from_dict
    from pixelfleet.storage import open_storage
    from pixelfleet.worker import run_task

    pipeline = pipeline_from_dict(
        {"source": {"url": str(src)}, "output": {"url": str(out)}, "steps": [step]}
    )
    context = json.dumps(pipeline.to_json_dict())
    entries = tuple(open_storage(str(src)).scan())
    assert len(entries) == n

    def go() -> object:
        result = run_task(context, Task("bench", "", entries))
        assert result.state == "done", result
        assert all(e.state == "done" for e in result.entries), "outputs were not removed"
        return result

    return go


def remover(out: Path) -> Callable[[], object]:
    """Removes the sidecars of the previous pass (outside the timed part)."""
    return lambda: shutil.rmtree(out, ignore_errors=True)


def make_photos(folder: Path, n: int) -> None:
    sources = sorted(p for p in PHOTOS.iterdir() if p.suffix in (".jpg", ".png"))
    folder.mkdir(parents=True)
    for i in range(n):
        src = sources[i % len(sources)]
        shutil.copy(src, folder / f"p{i:03d}{src.suffix}")


def make_rasters(folder: Path, n: int, size: int) -> None:
    import rasterio
    from affine import Affine

    with rasterio.open(NAIP) as src:
        tile = src.read()
    reps = -(-size // tile.shape[1])
    big = np.tile(tile, (1, reps, reps))[:, :size, :size]
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        data = np.clip(big.astype(np.int16) + rng.integers(-2, 3, big.shape), 0, 255).astype(
            np.uint8
        )
        path = folder / f"r{i:03d}.tif"
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=size,
            height=size,
            count=4,
            dtype="uint8",
            crs="EPSG:26917",
            transform=Affine(0.6, 0, 500000, 0, -0.6, 4000000),
            tiled=True,
            blockxsize=512,
            blockysize=512,
            compress="deflate",
            predictor=2,
            photometric="MINISBLACK",
        ) as dst:
            dst.write(data)
            dst.build_overviews([2, 4, 8])


def bench_imagenet(tmp: Path, n: int, repeats: int) -> dict[str, float]:
    from pixelfleet.labelers import imagenet
    from pixelfleet.labelers.base import ImageRef
    from pixelfleet.settings import get_settings
    from pixelfleet.storage import open_storage

    src = tmp / "photos"
    make_photos(src, n)
    e2e = run_step(src, tmp / "out-photos", {"op": "labels", "labeler": "imagenet"}, n)
    storage = open_storage(str(src))
    labeler = imagenet.ImagenetLabeler(imagenet.ImagenetConfig())
    arrays = [labeler.prepare(ImageRef(storage, e, get_settings())) for e in storage.scan()]
    batches = [np.stack(arrays[i : i + 16]) for i in range(0, n, 16)]

    def bare() -> object:
        return [imagenet.classify(b) for b in batches]

    cpu_e2e, wall_e2e = timed(e2e, repeats, remover(tmp / "out-photos"))
    cpu_bare, wall_bare = timed(bare, repeats)
    return {
        "n": n,
        "cpu_e2e": cpu_e2e,
        "wall_e2e": wall_e2e,
        "cpu_bare": cpu_bare,
        "wall_bare": wall_bare,
    }


def bench_spectral(tmp: Path, n: int, size: int, repeats: int) -> dict[str, float]:
    import rasterio
    from rasterio.enums import Resampling

    from pixelfleet.labelers.base import ImageRef
    from pixelfleet.labelers.spectral import SpectralConfig, SpectralLabeler, classify
    from pixelfleet.settings import get_settings
    from pixelfleet.storage import open_storage

    src = tmp / "rasters"
    make_rasters(src, n, size)
    step = {"op": "labels", "labeler": "spectral", "options": {"sensor": "naip"}}
    e2e = run_step(src, tmp / "out-rasters", step, n)
    storage = open_storage(str(src))
    config = SpectralConfig(sensor="naip")
    labeler = SpectralLabeler(config)
    prepared = [labeler.prepare(ImageRef(storage, e, get_settings())) for e in storage.scan()]
    paths = sorted(str(p) for p in src.iterdir())

    def bare() -> object:
        return [classify(p, config) for p in prepared]

    def floor() -> object:
        # The least any labeller of these files must do: one decimated read, then the rules.
        out = []
        for path in paths:
            with rasterio.open(path) as ds:
                data = ds.read([1, 2, 4], out_shape=(3, 512, 512), resampling=Resampling.nearest)
            out.append(bare_rules(data))
        return out

    cpu_e2e, wall_e2e = timed(e2e, repeats, remover(tmp / "out-rasters"))
    cpu_bare, wall_bare = timed(bare, repeats)
    cpu_floor, _ = timed(floor, repeats)
    return {
        "n": n,
        "cpu_e2e": cpu_e2e,
        "wall_e2e": wall_e2e,
        "cpu_bare": cpu_bare,
        "wall_bare": wall_bare,
        "cpu_floor": cpu_floor,
    }


def bare_rules(data: np.ndarray) -> dict[str, float]:
    """NDVI/NDWI classes of R, G, NIR uint8 data with plain numpy (the floor's compute)."""
    red, green, nir = (b.astype(np.float32) for b in data)
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = (nir - red) / (nir + red)
        ndwi = (green - nir) / (green + nir)
    water = ndwi >= 0
    vegetation = ~water & (ndvi >= 0.3)
    return {"water": float(water.mean()), "vegetation": float(vegetation.mean())}


def report(name: str, r: dict[str, float]) -> str:
    """One line of the table."""
    rate_e2e, rate_bare = r["n"] / r["cpu_e2e"], r["n"] / r["cpu_bare"]
    ratio = rate_e2e / rate_bare
    verdict = "meets" if ratio >= 0.7 else "MISSES"
    line = (
        f"{name:9s} {int(r['n']):4d}  {rate_e2e:9.1f}  {rate_bare:10.1f}  {ratio:6.2f}  "
        f"{r['wall_e2e'] * 1000:7.0f} / {r['wall_bare'] * 1000:.0f}   {verdict} the 0.70 target"
    )
    if "cpu_floor" in r:
        floor = r["n"] / r["cpu_floor"]
        line += f"; floor (read + numpy) {floor:.1f}/s, e2e/floor {rate_e2e / floor:.2f}"
    return line


def main() -> int:
    """Build the inputs, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, one repeat")
    args = parser.parse_args()
    os.environ.setdefault("PIXELFLEET_TORCH_THREADS", "1")
    n_photos, n_rasters, size, repeats = (16, 4, 1024, 1) if args.quick else (64, 16, 2048, 3)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pixelfleet-bench-labels-") as folder:
        tmp = Path(folder)
        print(f"machine: {os.cpu_count()} cores; torch threads per process: 1")
        img = bench_imagenet(tmp, n_photos, repeats)
        spec = bench_spectral(tmp, n_rasters, size, repeats)
    print()
    print("labeler      n  e2e img/s  bare img/s  ratio  wall ms: e2e / bare")
    print("-" * 110)
    print(report("imagenet", img))
    print(report("spectral", spec))
    print()
    print(f"imagenet: {n_photos} photos (480-1024 px): read, decode, resize, classify, write;")
    print("          bare: the forward pass alone on the same preprocessed batches of 16")
    print(f"spectral: {n_rasters} rasters {size}x{size} x 4 bands, tiled, overviews 2/4/8:")
    print("          decimated read to 512 px, classify, write; bare: the class rules in numpy")
    print("          on the same arrays in memory; floor: rasterio decimated read + numpy rules")
    print("rates: images per CPU second of one process (per core); median of repeats after warm-up")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
