"""Thumbnail speed and memory: pixelfleet against gdal_translate and the bare read.

Inputs are generated in a temporary folder: NAIP-like 4-band uint8 rasters about
7000 x 7000 (pixels mirror-tiled from the real NAIP sample in shared/samples, plus
a little noise so that compression behaves like real imagery), DEFLATE with
horizontal predictor, pixel-interleaved as NAIP's 4-band COGs are (4 bands rule out
JPEG-YCbCr):

- ``tiled_ovr``: 512 x 512 tiles with internal overviews 2, 4, 8, 16;
- ``tiled_noovr``: the same tiles, no overviews;
- ``strips``: untiled (one-row strips, GDAL's default), no overviews;
- ``photo``: a 4000 x 3000 JPEG (quality 90) made from a real sample photo.

For each input, one thread of this process measures, in thumbnails per second per
core (from CPU time, so other work on the machine does not skew it; wall time is
shown too):

1. pixelfleet: ``ThumbnailOp.run`` with local storage, as a worker calls it
   (``configure_gdal`` first), writing the 512 px JPEG;
2. ``gdal_translate -outsize 512 0 -of JPEG`` (rasters with ``-b 1 -b 2 -b 3`` so
   both write the same RGB image), one process per thumbnail;
3. the floor: one ``rasterio`` decimated read of the same bands at the thumbnail's
   size with the GDAL resampling pixelfleet uses (Pillow ``draft`` + decode for the
   JPEG), nothing around it. The "read" column says what pixelfleet reads: GDAL's
   resampling, and the samples per pixel it averages itself (see
   ``pixelfleet.imagery.rasters``).

Peak RSS is that of a fresh process rendering one thumbnail of the input. The row
``tiled_noovr/nn`` repeats ``tiled_noovr`` with ``resampling = "nearest"``, to show
what averaging costs when every block must be decoded anyway.

    .venv/bin/python benchmarks/thumbnails.py [--quick] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples"
NAIP_SAMPLE = SAMPLES / "geo" / "naip_m_3607824_se_17_1_20160620_sub.tif"
PHOTO_SAMPLE = SAMPLES / "photo" / "no_geo.jpg"
GDAL_TRANSLATE = shutil.which("gdal_translate")

# Targets from the issue: speed-up over gdal_translate per input, and limits.
TARGET_VS_GDAL = {"tiled_ovr": 8.0, "strips": 2.0, "tiled_noovr": 1.0}
TARGET_VS_FLOOR = 1.5
TARGET_RSS_MB = 300.0


@dataclass
class Timing:
    """Seconds per thumbnail, from CPU time and from wall time (medians)."""

    cpu: float
    wall: float
    runs: int

    @property
    def rate(self) -> float:
        """Thumbnails per second per core."""
        return 1.0 / self.cpu if self.cpu > 0 else float("inf")


@dataclass
class Row:
    """One input's results."""

    name: str
    detail: str
    pixelfleet: Timing
    floor: Timing
    gdal: Timing | None
    rss_mb: float
    notes: list[str] = field(default_factory=list)


# -- inputs ---------------------------------------------------------------------------


def make_inputs(folder: Path, quick: bool) -> dict[str, Path]:
    """Write the benchmark inputs into ``folder`` and return name -> path."""
    import rasterio
    from rasterio.enums import ColorInterp, Resampling

    side = 1750 if quick else 7000
    pixels = naip_like(side)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": side,
        "height": side,
        "count": 4,
        "dtype": "uint8",
        "compress": "deflate",
        "predictor": 2,
        "interleave": "pixel",
        "photometric": "RGB",
        "crs": "EPSG:26917",
        "transform": rasterio.Affine(0.6, 0, 500000, 0, -0.6, 4000000),
    }
    layouts: dict[str, dict[str, Any]] = {
        "tiled_ovr": {"tiled": True, "blockxsize": 512, "blockysize": 512},
        "tiled_noovr": {"tiled": True, "blockxsize": 512, "blockysize": 512},
        "strips": {"tiled": False},
    }
    paths = {}
    for name, layout in layouts.items():
        path = folder / f"{name}.tif"
        with rasterio.open(path, "w", **profile, **layout) as dst:
            dst.write(pixels)
            dst.colorinterp = [
                ColorInterp.red,
                ColorInterp.green,
                ColorInterp.blue,
                ColorInterp.undefined,
            ]
            if name == "tiled_ovr":
                factors = [2, 4, 8, 16] if not quick else [2, 4]
                dst.build_overviews(factors, Resampling.average)
        paths[name] = path

    from PIL import Image

    width, height = (1000, 750) if quick else (4000, 3000)
    if PHOTO_SAMPLE.exists():
        with Image.open(PHOTO_SAMPLE) as sample:
            photo = sample.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    else:
        rng = np.random.default_rng(1)
        photo = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    paths["photo"] = folder / "photo.jpg"
    photo.save(paths["photo"], quality=90)
    return paths


def naip_like(side: int) -> np.ndarray:
    """A (4, side, side) uint8 array of real NAIP pixels, mirror-tiled, with +-2 noise."""
    import rasterio

    rng = np.random.default_rng(0)
    if NAIP_SAMPLE.exists():
        with rasterio.open(NAIP_SAMPLE) as src:
            tile = src.read()
    else:  # shared/samples missing: smooth random fields stand in for the picture
        tile = rng.integers(0, 255, (4, 30, 30), dtype=np.uint8).repeat(10, 1).repeat(10, 2)
    tile = np.concatenate([tile, tile[:, :, ::-1]], axis=2)
    tile = np.concatenate([tile, tile[:, ::-1, :]], axis=1)
    reps = (1, side // tile.shape[1] + 1, side // tile.shape[2] + 1)
    pixels = np.tile(tile, reps)[:, :side, :side].astype(np.int16)
    pixels += rng.integers(-2, 3, size=pixels.shape, dtype=np.int16)
    return np.clip(pixels, 0, 255).astype(np.uint8)


# -- measurements ---------------------------------------------------------------------


def measure(fn: Callable[[], object], budget: float, min_runs: int = 3) -> Timing:
    """Run ``fn`` (after one warm-up) until ``budget`` seconds or 40 runs have passed."""
    fn()
    cpu_times: list[float] = []
    wall_times: list[float] = []
    started = time.perf_counter()
    while len(wall_times) < min_runs or (
        time.perf_counter() - started < budget and len(wall_times) < 40
    ):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu_times.append(time.process_time() - c0)
        wall_times.append(time.perf_counter() - w0)
    return Timing(median(cpu_times), median(wall_times), len(wall_times))


def measure_subprocess(cmd: list[str], budget: float, min_runs: int = 3) -> Timing:
    """Like :func:`measure` for a command, timing the children's CPU (user + system)."""
    subprocess.run(cmd, check=True, capture_output=True)
    cpu_times: list[float] = []
    wall_times: list[float] = []
    started = time.perf_counter()
    while len(wall_times) < min_runs or (
        time.perf_counter() - started < budget and len(wall_times) < 40
    ):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        w0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall_times.append(time.perf_counter() - w0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_times.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return Timing(median(cpu_times), median(wall_times), len(wall_times))


def median(values: list[float]) -> float:
    """The median of a non-empty list."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def pixelfleet_runner(
    path: Path, out_dir: Path, settings: dict[str, Any] | None = None
) -> Callable[[], object]:
    """A callable rendering ``path`` through ``ThumbnailOp.run`` as a worker does."""
    from pixelfleet.ops.base import OpContext
    from pixelfleet.ops.thumbnail import ThumbnailConfig, ThumbnailOp
    from pixelfleet.settings import get_settings
    from pixelfleet.storage.local import LocalStorage

    source = LocalStorage(str(path.parent))
    ctx = OpContext(source, LocalStorage(str(out_dir)), get_settings())
    op = ThumbnailOp(ThumbnailConfig(**(settings or {})))
    entry = source.head(path.name)
    assert entry is not None
    return lambda: op.run(ctx, entry)


def floor_runner(
    path: Path, settings: dict[str, Any] | None = None
) -> tuple[Callable[[], object], str]:
    """The bare read behind a thumbnail of ``path``, and a word on what it reads."""
    from PIL import Image

    from pixelfleet.imagery.pictures import fit_size
    from pixelfleet.ops.thumbnail import ThumbnailConfig

    config = ThumbnailConfig(**(settings or {}))
    if path.suffix == ".jpg":

        def decode() -> object:
            with Image.open(path) as image:
                image.draft("RGB", fit_size(*image.size, config.size))
                image.load()
                return image.size

        return decode, "Pillow draft + decode"

    import rasterio

    from pixelfleet.imagery.rasters import GDAL_OPTIONS, plan_read
    from pixelfleet.settings import get_settings

    with rasterio.Env(**GDAL_OPTIONS), rasterio.open(path) as src:
        plan = plan_read(src, config, get_settings(), path.name)
    indexes = plan.indexes + ([plan.alpha] if plan.alpha else [])
    shape = (len(indexes), plan.height, plan.width)

    def read() -> object:
        with rasterio.Env(**GDAL_OPTIONS), rasterio.open(path, driver="GTiff") as src:
            return src.read(indexes, out_shape=shape, resampling=plan.resampling)

    ys, xs = plan.supersample
    samples = f" {ys}x{xs} samples" if (ys, xs) != (1, 1) else ""
    return read, f"{plan.resampling.name}{samples}"


def gdal_command(path: Path, out: Path) -> list[str] | None:
    """The gdal_translate command for ``path``, or None when it is not installed."""
    if GDAL_TRANSLATE is None:
        return None
    bands = [] if path.suffix == ".jpg" else ["-b", "1", "-b", "2", "-b", "3"]
    return [
        GDAL_TRANSLATE,
        "-q",
        "-outsize",
        "512",
        "0",
        "-of",
        "JPEG",
        *bands,
        str(path),
        str(out),
    ]


def peak_rss_mb(path: Path | None) -> float:
    """Peak RSS in MB of a fresh process that renders one thumbnail of ``path``
    (``None``: a process that only imports what rendering needs)."""
    out = subprocess.run(
        [sys.executable, __file__, "--child-rss", str(path) if path else "-"],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def child_rss(target: str) -> None:
    """In a fresh process: render ``target`` once (unless "-") and print peak RSS in MB."""
    from pixelfleet.worker import configure_gdal

    configure_gdal()
    import numpy  # noqa: F401
    import rasterio  # noqa: F401
    from PIL import Image  # noqa: F401

    import pixelfleet.imagery.photos  # noqa: F401
    import pixelfleet.imagery.rasters  # noqa: F401

    if target != "-":
        path = Path(target)
        with tempfile.TemporaryDirectory() as out_dir:
            pixelfleet_runner(path, Path(out_dir))()
    print(own_peak_rss_mb())


def own_peak_rss_mb() -> float:
    """This process's peak RSS in MB.

    Linux's VmHWM is used where it exists: ``ru_maxrss`` carries over the parent's
    peak across fork and exec, which would charge the benchmark's own arrays to the child.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- report ---------------------------------------------------------------------------


#: Rows of the table: (row name, input, thumbnail settings other than the defaults).
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("tiled_ovr", "tiled_ovr", {}),
    ("tiled_noovr", "tiled_noovr", {}),
    ("tiled_noovr/nn", "tiled_noovr", {"resampling": "nearest"}),
    ("strips", "strips", {}),
    ("photo", "photo", {}),
]


def local_rows(paths: dict[str, Path], work: Path, quick: bool) -> list[Row]:
    """Measure every case on the local file system."""
    budget = 1.0 if quick else 3.0
    rows = []
    gdal_timings: dict[str, Timing | None] = {}
    for name, kind, settings in CASES:
        path = paths[kind]
        ours = measure(pixelfleet_runner(path, work / "out", settings), budget)
        floor_fn, detail = floor_runner(path, settings)
        floor = measure(floor_fn, budget)
        if kind not in gdal_timings:
            command = gdal_command(path, work / f"{kind}.gdal.jpg")
            gdal_timings[kind] = measure_subprocess(command, budget) if command else None
        rss = peak_rss_mb(path) if not settings else float("nan")
        rows.append(Row(name, detail, ours, floor, gdal_timings[kind], rss))
    return rows


def print_table(rows: list[Row], baseline_mb: float) -> None:
    """Print the results, one row per input, with the targets checked."""
    header = (
        f"{'input':<15} {'read':<24} {'pixelfleet/s':>12} {'gdal_tr/s':>10} {'floor/s':>8} "
        f"{'x gdal':>7} {'t/floor':>8} {'RSS MB':>7}  {'wall ms: pf / gdal / floor':<28} checks"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        vs_gdal = row.gdal.cpu / row.pixelfleet.cpu if row.gdal else None
        vs_floor = row.pixelfleet.cpu / row.floor.cpu
        checks = []
        target = TARGET_VS_GDAL.get(row.name.split("/")[0])
        if target and vs_gdal is not None:
            checks.append(f"x gdal >= {target:g}: {'ok' if vs_gdal >= target else 'MISSED'}")
        checks.append(
            f"t/floor <= {TARGET_VS_FLOOR:g}: {'ok' if vs_floor <= TARGET_VS_FLOOR else 'MISSED'}"
        )
        if row.rss_mb == row.rss_mb:  # not NaN: measured
            checks.append(
                f"RSS < {TARGET_RSS_MB:g}: {'ok' if row.rss_mb < TARGET_RSS_MB else 'MISSED'}"
            )
        gdal_rate = f"{row.gdal.rate:10.1f}" if row.gdal else f"{'-':>10}"
        gdal_wall = f"{row.gdal.wall * 1000:.0f}" if row.gdal else "-"
        x_gdal = f"{vs_gdal:7.2f}" if vs_gdal is not None else f"{'-':>7}"
        walls = f"{row.pixelfleet.wall * 1000:.0f} / {gdal_wall} / {row.floor.wall * 1000:.0f}"
        rss = f"{row.rss_mb:.0f}" if row.rss_mb == row.rss_mb else "-"
        print(
            f"{row.name:<15} {row.detail:<24} {row.pixelfleet.rate:12.1f} {gdal_rate} "
            f"{row.floor.rate:8.1f} {x_gdal} {vs_floor:8.2f} {rss:>7}  {walls:<28} "
            + "; ".join(checks)
        )
    print(
        f"\nrates: thumbnails per second per core (1 / median CPU seconds); RSS: peak of a "
        f"fresh process rendering one thumbnail (imports alone: {baseline_mb:.0f} MB)"
    )


def main(argv: list[str] | None = None) -> int:
    """Generate the inputs, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs: a smoke run")
    parser.add_argument("--keep", metavar="DIR", help="generate inputs in DIR and keep them")
    parser.add_argument("--child-rss", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_rss:
        child_rss(args.child_rss)
        return 0

    from pixelfleet.worker import configure_gdal

    configure_gdal()  # before GDAL's block cache exists: its size is fixed at first use
    if GDAL_TRANSLATE is None:
        print(
            "gdal_translate not found: its column is skipped. Install it with "
            "`apt-get install -y gdal-bin` (Debian/Ubuntu) to compare."
        )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pixelfleet-bench-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        paths = make_inputs(work, args.quick)
        made = time.perf_counter() - started
        side = 1750 if args.quick else 7000
        print(
            f"inputs: {side}x{side} 4-band uint8 DEFLATE rasters and a JPEG, made in {made:.0f} s"
        )
        print(
            f"machine: {os.cpu_count()} cores; GDAL_CACHEMAX={os.environ.get('GDAL_CACHEMAX')} MB"
        )
        rows = local_rows(paths, work, args.quick)
        print()
        print_table(rows, peak_rss_mb(None))
        if args.quick:
            print("(--quick: a smoke run; the targets are meant for the full-size inputs)")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
