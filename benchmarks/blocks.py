"""Block processing: pixelfleet (1 and 2 workers) against whole-array numpy and
rioxarray + dask, on Landsat-sized bands.

Generates, once, three 7,600 x 7,800 uint16 band files (512 px tiles, DEFLATE, nodata
0) made of the real Landsat-8 sample's pixels (bands 2, 3 and 4, mirror-tiled, with a
little noise and a zero collar, as a real scene has). Then two tasks, each method in a
fresh process so that its peak memory is its own:

- ``ndvi``: ``(b - a) / (b + a)`` of two bands (band 4 as red; band 3 stands in for the
  near infrared, which the sample lacks: the cost does not depend on what the pixels
  mean) to float32, nodata -9999 where either band is 0;
- ``focal``: the 5 x 5 mean of band 4 to float32 (``overlap = 2``; past the image's
  edges the margin is the band's nodata, 0).

Every method writes the same product, as RIOS does by default: a tiled (512) DEFLATE
float32 GeoTIFF with overviews (RIOS's levels: 4, 8, 16, 32, nearest) and per-band
statistics. Methods:

- ``pixelfleet-1``, ``pixelfleet-2``: ``blocks.apply`` on the local executor with 1 and 2
  worker processes, 512 x 512 blocks;
- ``numpy``: read the bands whole, compute, write the GeoTIFF, add overviews and
  statistics with GDAL;
- ``rioxarray``: ``rioxarray.open_rasterio(chunks=512)``, the same computation lazily
  (``map_overlap`` for the focal mean), ``rio.to_raster`` with dask's threaded
  scheduler on 2 threads, then GDAL's overviews and statistics;
- ``rios``, ``rios-2``: RIOS's ``applier.apply`` (serial, and with 2 compute threads) on
  the same files and settings (512 x 512 windows, the same overlap, GTiff tiled 512 DEFLATE
  float32 output, its default statistics, histogram and overviews), run under the system
  Python with Debian's ``python3-gdal`` and the RIOS source in ``--rios`` (default
  ``/tmp/rios``: RIOS is not on PyPI). Skipped, with the reason printed, when either is
  missing. Its focal mean's edges follow RIOS's rule (the margin past the image is 0), so
  its output is not compared pixel for pixel.

Usage: ``python benchmarks/blocks.py [--quick] [--repeat N] [--tasks ndvi,focal]
[--methods ...] [--rios DIR] [--system-python PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "demo" / "bucket" / "landsat" / "LC81070352015122LGN00"
SCENE = "LC81070352015122LGN00"
BANDS = ("4", "3", "2")
NODATA = -9999.0


def rios_levels(width: int, height: int) -> list[int]:
    """RIOS's default overview factors: 4, 8, 16... while the level's smaller side stays
    over 128 pixels (4, 8, 16, 32 for 7,600 x 7,800)."""
    levels, f = [], 4
    while min(width, height) // f > 128:
        levels.append(f)
        f *= 2
    return levels


# -- inputs -------------------------------------------------------------------------------


def generate(folder: Path, width: int, height: int) -> dict[str, Path]:
    """Write the three band files into ``folder``; returns their paths by band."""
    import rasterio
    from affine import Affine

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:height, 0:width]
    tilt = 0.18 * (xx - width / 2)
    inside = (yy > 0.06 * height + tilt) & (yy < 0.94 * height + tilt)
    paths = {}
    for band in BANDS:
        with rasterio.open(SAMPLES / f"{SCENE}_B{band}.tif") as src:
            real = src.read(1)
        reps = (height // real.shape[0] + 2, width // real.shape[1] + 2)
        mirrored = np.block(
            [
                [real if (i + j) % 2 == 0 else real[:, ::-1] for j in range(reps[1])]
                for i in range(reps[0])
            ]
        )[:height, :width]
        noise = rng.integers(-20, 21, size=(height, width), dtype=np.int32)
        noisy = np.clip(mirrored.astype(np.int32) + noise, 1, 65535).astype(np.uint16)
        data = np.where(mirrored > 0, noisy, np.uint16(0))
        data[~inside] = 0
        path = paths[band] = folder / f"{SCENE}_B{band}.TIF"
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=width,
            height=height,
            count=1,
            dtype="uint16",
            crs="EPSG:32654",
            transform=Affine(30.0, 0.0, 300000.0, 0.0, -30.0, 4100000.0),
            tiled=True,
            blockxsize=512,
            blockysize=512,
            compress="deflate",
            nodata=0,
        ) as dst:
            dst.write(data, 1)
        del data, mirrored, noise, noisy
    return paths


# -- the block functions (by reference: this file is the workers' __main__) ----------------


def ndvi(block: Any, args: Any) -> dict[str, np.ndarray]:
    """NDVI of 'red' and 'nir', -9999 where either is 0 (nodata)."""
    red, nir = block.inputs["red"][0], block.inputs["nir"][0]
    r, n = red.astype("f4"), nir.astype("f4")
    out = (n - r) / (n + r + np.float32(1e-9))
    out[(red == 0) | (nir == 0)] = NODATA
    return {"out": out[None]}


def box_mean(data: np.ndarray, size: int = 5) -> np.ndarray:
    """The ``size`` x ``size`` mean of a 2-D array for every pixel at least ``size // 2``
    from its edges (the others are left 0): two running sums, float64."""
    half = size // 2
    acc = np.zeros(data.shape, np.float64)
    padded = data.astype(np.float64)
    rows = np.cumsum(np.pad(padded, ((1, 0), (0, 0))), axis=0)
    vertical = rows[size:] - rows[:-size]
    cols = np.cumsum(np.pad(vertical, ((0, 0), (1, 0))), axis=1)
    acc[half:-half, half:-half] = (cols[:, size:] - cols[:, :-size]) / (size * size)
    return acc


def focal(block: Any, args: Any) -> dict[str, np.ndarray]:
    """The 5 x 5 mean of 'image' (returned with the margin, which pixelfleet trims)."""
    return {"out": box_mean(block.inputs["image"][0]).astype("f4")[None]}


def rios_ndvi(info: Any, inputs: Any, outputs: Any, otherargs: Any = None) -> None:
    """RIOS's NDVI: the same arithmetic as :func:`ndvi` on RIOS's block arrays."""
    red, nir = inputs.red[0], inputs.nir[0]
    r, n = red.astype("f4"), nir.astype("f4")
    out = (n - r) / (n + r + np.float32(1e-9))
    out[(red == 0) | (nir == 0)] = NODATA
    outputs.out = out[None]


def rios_focal(info: Any, inputs: Any, outputs: Any, otherargs: Any = None) -> None:
    """RIOS's focal mean: RIOS passes the overlap in and expects it back."""
    outputs.out = box_mean(inputs.image[0]).astype("f4")[None]


def run_rios(task: str, paths: dict[str, str], out: Path, workers: int) -> dict[str, Any]:
    """RIOS's applier with its defaults but for the window size, the output's format
    and creation options (the same as every other method's) and, for ``workers`` > 1,
    that many compute threads (and one read thread). Runs under the system Python (see
    ``rios_python``)."""
    from rios import applier, structures

    infiles = applier.FilenameAssociations()
    for name, path in inputs_for(task, paths).items():
        setattr(infiles, name, path)
    outfiles = applier.FilenameAssociations()
    outfiles.out = str(out / "out.tif")
    controls = applier.ApplierControls()
    controls.setWindowSize(512, 512)
    controls.setOutputDriverName("GTiff")
    controls.setCreationOptions(
        ["TILED=YES", "BLOCKXSIZE=512", "BLOCKYSIZE=512", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"]
    )
    if task == "ndvi":
        controls.setStatsIgnore(NODATA)
    else:
        controls.setOverlap(2)
    if workers > 1:
        controls.setConcurrencyStyle(
            structures.ConcurrencyStyle(
                numReadWorkers=1,  # RIOS needs one with compute workers
                numComputeWorkers=workers,
                computeWorkerKind=structures.CW_THREADS,
            )
        )
    function = rios_ndvi if task == "ndvi" else rios_focal
    applier.apply(function, infiles, outfiles, controls=controls)
    return {}


def rios_python(rios: str, python: str) -> str | None:
    """Why RIOS cannot run here (None when it can): the system Python must import GDAL's
    bindings and RIOS from ``rios``."""
    if not Path(python).exists():
        return f"{python} not found"
    if not Path(rios, "rios", "applier.py").exists():
        return f"no RIOS source in {rios} (git archive of ubarsc/rios's rios-2.0.9 tag)"
    proc = subprocess.run(
        [python, "-c", "import osgeo, numpy, rios.applier; print(osgeo.__version__)"],
        env={**os.environ, "PYTHONPATH": rios},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"{python} cannot import GDAL and RIOS ({last}; apt-get install python3-gdal)"
    return None


# -- the methods (each run in its own process) --------------------------------------------


def inputs_for(task: str, paths: dict[str, str]) -> dict[str, str]:
    if task == "ndvi":
        return {"red": paths["4"], "nir": paths["3"]}
    return {"image": paths["4"]}


def run_pixelfleet(task: str, paths: dict[str, str], out: Path, workers: int) -> dict[str, Any]:
    from pixelfleet import blocks

    output = blocks.Output(
        str(out / "out.tif"), dtype="float32", nodata=NODATA if task == "ndvi" else None
    )
    result = blocks.apply(
        ndvi if task == "ndvi" else focal,
        inputs_for(task, paths),
        {"out": output},
        block_size=512,
        overlap=0 if task == "ndvi" else 2,
        executor="local",
        workers=workers,
    )
    info = result.outputs["out"]
    assert info.overviews == rios_levels(info.width, info.height), info.overviews
    return {"strips": result.strips, "phases": result.phases, "timings": result.timings}


def _finish_with_gdal(path: Path) -> None:
    """Add what RIOS adds by default: overviews (nearest) and statistics."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path, "r+") as dst:
        dst.build_overviews(rios_levels(dst.width, dst.height), Resampling.nearest)
        dst.update_tags(1, **_stats_tags(dst.stats(indexes=[1], approx=False)[0]))


def _stats_tags(s: Any) -> dict[str, str]:
    return {
        "STATISTICS_MINIMUM": repr(s.min),
        "STATISTICS_MAXIMUM": repr(s.max),
        "STATISTICS_MEAN": repr(s.mean),
        "STATISTICS_STDDEV": repr(s.std),
    }


def _profile(src: Any, nodata: float | None) -> dict[str, Any]:
    return {
        "driver": "GTiff",
        "width": src.width,
        "height": src.height,
        "count": 1,
        "dtype": "float32",
        "crs": src.crs,
        "transform": src.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "bigtiff": "IF_SAFER",
    }


def run_numpy(task: str, paths: dict[str, str], out: Path, workers: int) -> dict[str, Any]:
    import rasterio

    with rasterio.open(paths["4"]) as red_src:
        red = red_src.read(1)
        profile = _profile(red_src, NODATA if task == "ndvi" else None)
    if task == "ndvi":
        with rasterio.open(paths["3"]) as nir_src:
            nir = nir_src.read(1)
        r, n = red.astype("f4"), nir.astype("f4")
        result = (n - r) / (n + r + np.float32(1e-9))
        result[(red == 0) | (nir == 0)] = NODATA
    else:
        result = box_mean(np.pad(red, 2))[2:-2, 2:-2].astype("f4")
    with rasterio.open(out / "out.tif", "w", **profile) as dst:
        dst.write(result, 1)
    _finish_with_gdal(out / "out.tif")
    return {}


def run_rioxarray(task: str, paths: dict[str, str], out: Path, workers: int) -> dict[str, Any]:
    import threading

    import dask
    import rioxarray
    import xarray as xr

    red = rioxarray.open_rasterio(paths["4"], chunks={"x": 512, "y": 512}, masked=False)
    if task == "ndvi":
        nir = rioxarray.open_rasterio(paths["3"], chunks={"x": 512, "y": 512}, masked=False)
        r, n = red.astype("f4"), nir.astype("f4")
        result = xr.where((red == 0) | (nir == 0), np.float32(NODATA), (n - r) / (n + r + 1e-9))
        result = result.astype("f4").rio.write_nodata(NODATA)
    else:
        data = red.data[0].map_overlap(
            lambda a: box_mean(a).astype("f4"), depth=2, boundary=0, dtype="f4"
        )
        result = red.copy(data=data[None])
        result = result.rio.write_nodata(None)
    result = result.rio.write_crs(red.rio.crs)
    with dask.config.set(scheduler="threads", num_workers=workers):
        result.rio.to_raster(
            out / "out.tif",
            tiled=True,
            blockxsize=512,
            blockysize=512,
            compress="deflate",
            dtype="float32",
            lock=threading.Lock(),
            windowed=True,
        )
    _finish_with_gdal(out / "out.tif")
    return {}


METHODS = {
    "pixelfleet-1": (run_pixelfleet, 1),
    "pixelfleet-2": (run_pixelfleet, 2),
    "numpy": (run_numpy, 1),
    "rioxarray": (run_rioxarray, 2),
    "rios": (run_rios, 1),
    "rios-2": (run_rios, 2),
}

#: Where the RIOS methods run: (system Python, RIOS source folder), set by main().
RIOS_RUNTIME: dict[str, str] = {}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: not inherited across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(method: str, task: str, paths_json: str, out: str) -> None:
    """Run one method and print its wall and CPU time and peak memory as JSON."""
    run, workers = METHODS[method]
    paths = json.loads(paths_json)
    # Imports are not the method's work: a script pays them once, whatever it runs.
    if method.startswith("rios"):
        import rios.applier  # noqa: F401
        from osgeo import gdal  # noqa: F401
    else:
        import rasterio  # noqa: F401
    if method.startswith("pixelfleet"):
        import pixelfleet.blocks.driver  # noqa: F401
    if method == "rioxarray":
        import dask.array  # noqa: F401
        import rioxarray  # noqa: F401
    started, before = time.perf_counter(), os.times()
    result = run(task, paths, Path(out), workers)
    seconds = time.perf_counter() - started
    if not method.startswith("rios"):  # RIOS runs under the system Python, without pixelfleet
        # Waiting for the fork server adds its CPU time and its workers' to this process's.
        from pixelfleet.executors.local import stop_fork_server

        stop_fork_server()
    after = os.times()
    cpu = sum(after[:4]) - sum(before[:4])  # this process and its (waited-for) workers
    workers_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        json.dumps(
            {
                **result,
                "seconds": seconds,
                "cpu": cpu,
                "rss_mb": peak_rss_mb(),
                "workers_rss_mb": workers_rss,
            }
        )
    )


def measure(method: str, task: str, paths: dict[str, str], keep: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pf-bench-out-") as out:
        python, env = sys.executable, None
        if method.startswith("rios"):
            python = RIOS_RUNTIME["python"]
            env = {**os.environ, "PYTHONPATH": RIOS_RUNTIME["rios"]}
        proc = subprocess.run(
            [python, __file__, "--child", method, task, json.dumps(paths), out],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{method} {task} failed:\n{proc.stderr}")
        if keep is not None:
            os.replace(Path(out) / "out.tif", keep)
        return json.loads(proc.stdout.strip().splitlines()[-1])


def _burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def free_cores() -> float:
    """How many cores two busy processes get here now: 2.0 on an idle 2-core machine,
    1.0 when something else holds a core (this machine is shared)."""
    import multiprocessing

    n = 6_000_000
    started = time.perf_counter()
    _burn(n)
    one = time.perf_counter() - started
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_burn, [n])  # start-up out of the way
        started = time.perf_counter()
        pool.map(_burn, [n, n])
        two = time.perf_counter() - started
    return 2 * one / two


def rios_version() -> str:
    """RIOS's and GDAL's versions, as the system Python reports them."""
    proc = subprocess.run(
        [
            RIOS_RUNTIME["python"],
            "-c",
            "import rios, osgeo, sys; print('RIOS', rios.RIOS_VERSION, 'GDAL', osgeo.__version__,"
            " 'Python', sys.version.split()[0])",
        ],
        env={**os.environ, "PYTHONPATH": RIOS_RUNTIME["rios"]},
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or proc.stderr.strip()


def same_pixels(a: Path, b: Path) -> bool:
    """Tell whether two rasters hold the same pixels (read in stripes)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(a) as x, rasterio.open(b) as y:
        if (x.width, x.height) != (y.width, y.height):
            return False
        for row in range(0, x.height, 512):
            window = Window(0, row, x.width, min(512, x.height - row))
            if not np.array_equal(x.read(1, window=window), y.read(1, window=window)):
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2000 x 2000 bands, one repeat")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method (medians)")
    parser.add_argument("--tasks", default="ndvi,focal")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--rios", default="/tmp/rios", help="RIOS's source folder")
    parser.add_argument("--system-python", default="/usr/bin/python3", help="with python3-gdal")
    parser.add_argument("--child", nargs=4, metavar=("METHOD", "TASK", "PATHS", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    width, height = (2000, 2000) if args.quick else (7600, 7800)
    repeat = 1 if args.quick else args.repeat
    methods = args.methods.split(",")
    if "rioxarray" in methods:
        try:
            import rioxarray  # noqa: F401
        except ImportError:
            methods.remove("rioxarray")
            print("rioxarray: not installed (pip install rioxarray): skipped")
    if any(m.startswith("rios") for m in methods):
        why = rios_python(args.rios, args.system_python)
        if why is None:
            RIOS_RUNTIME.update(python=args.system_python, rios=args.rios)
        else:
            methods = [m for m in methods if not m.startswith("rios")]
            print(f"RIOS: skipped: {why}")
    begun = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pf-bench-blocks-") as tmp:
        t0 = time.perf_counter()
        paths = {b: str(p) for b, p in generate(Path(tmp) / "in", width, height).items()}
        print(
            f"inputs: 3 bands of {width}x{height} uint16, 512 px tiles, DEFLATE, made in "
            f"{time.perf_counter() - t0:.0f} s; {os.cpu_count()} cores; load average "
            f"{os.getloadavg()[0]:.1f}"
        )
        if RIOS_RUNTIME:
            print(f"RIOS: {rios_version()} under {RIOS_RUNTIME['python']}")
        print(f"cores free for two busy processes: {free_cores():.2f} (before)")
        for task in args.tasks.split(","):
            report(task, paths, methods, repeat, Path(tmp))
        print(f"\ncores free for two busy processes: {free_cores():.2f} (after)")
    print(
        f"\nwall, CPU: medians of {repeat} runs (methods interleaved), each in a fresh "
        "process; CPU counts the driver, its fork server and worker processes (rioxarray, "
        "rios-2: their threads). "
        "RSS: the highest peak, imports included; 'workers' is the largest worker process. "
        "The machine is shared: CPU time is the steadier measure."
    )
    print(f"total {time.perf_counter() - begun:.0f} s")


def report(task: str, paths: dict[str, str], methods: list[str], repeat: int, tmp: Path) -> None:
    """Measure every method on one task and print its rows and the ratios."""
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    kept = {m: tmp / f"{task}-{m}.tif" for m in methods}
    for i in range(repeat):
        for method in methods:
            runs[method].append(measure(method, task, paths, kept[method] if i == 0 else None))
    print(f"\n{task}")
    print(f"  {'method':<13} {'wall s':>7} {'CPU s':>7} {'RSS MB':>7} {'workers':>8}   runs (wall)")
    med: dict[str, dict[str, float]] = {}
    for method in methods:
        rs = runs[method]
        med[method] = {
            "seconds": statistics.median(r["seconds"] for r in rs),
            "cpu": statistics.median(r["cpu"] for r in rs),
            "rss": max(r["rss_mb"] for r in rs),
            "workers": max(r["workers_rss_mb"] for r in rs),
        }
        m = med[method]
        walls = ", ".join(f"{r['seconds']:.2f}" for r in rs)
        workers = f"{m['workers']:.0f}" if method.startswith("pixelfleet") else "-"
        print(
            f"  {method:<13} {m['seconds']:>7.2f} {m['cpu']:>7.2f} {m['rss']:>7.0f} "
            f"{workers:>8}   {walls}"
        )
    if "pixelfleet-2" in med:
        two = med["pixelfleet-2"]
        for other in methods:
            if other == "pixelfleet-2":
                continue
            o = med[other]
            print(
                f"  pixelfleet-2 vs {other:<13} wall {o['seconds'] / two['seconds']:.2f}x faster, "
                f"CPU {two['cpu'] / o['cpu']:.2f}x theirs"
            )
        for method in ("pixelfleet-1", "pixelfleet-2"):
            if method in med:
                parts = {
                    k: statistics.median(r["phases"][k] for r in runs[method])
                    for k in ("plan", "strips", "assemble", "deliver")
                }
                print(
                    f"  {method} phases (medians): "
                    + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items())
                )
        if "pixelfleet-1" in med:
            speedup = med["pixelfleet-1"]["seconds"] / two["seconds"]
            print(
                f"  target: 2 workers >= 1.7x faster than 1: {speedup:.2f}x "
                f"{'ok' if speedup >= 1.7 else 'MISSED'}; peak RSS per worker <= 300 MB: "
                f"{two['workers']:.0f} MB {'ok' if two['workers'] <= 300 else 'MISSED'}"
            )
    reference = "numpy" if "numpy" in methods else None
    if reference:
        for method in methods:
            if method != reference and not (task == "focal" and method.startswith("rios")):
                same = same_pixels(kept[method], kept[reference])
                print(f"  {method} output == numpy output: {same}")


if __name__ == "__main__":
    main()
