"""Scene composites: pixelfleet against a naive numpy composite and the I/O floor.

Generates three 7,600 x 7,800 uint16 band files (512 px tiles, DEFLATE with the
horizontal predictor, like USGS Landsat COGs), made of the real Landsat-8 sample's
pixels (mirror-tiled, with a little noise and a zero-filled collar, as a real scene
has), once without and once with internal overviews (averaged, 2-16). Then, each in
a fresh process so that peak RSS is the method's own, makes the same outputs (a
DEFLATE COG with an alpha band and overviews, and a 1024 px PNG) three ways:

- ``pixelfleet``: the composite step as a worker runs it (true-color, 2-98 percentile
  stretch, local storage), outputs written into an output folder;
- ``naive``: read every band whole, ``np.percentile`` of the valid pixels, scale in
  float, write the GeoTIFF, translate it to a COG, resize the PNG from the full array;
- ``floor``: read the three bands stripe by stripe and write the same outputs from
  data that needs no stretch (a bit shift), through the same writer as pixelfleet
  (overviews, COG driver, PNG): the I/O and encoding no method can skip;
- ``floor-gdal``: the same, but letting GDAL's COG driver compute the overviews, the
  plain way to write a COG (for reference).

Also checks pixelfleet's stretch ranges (from a 1/8 nearest sample) against exact
full-array percentiles, as a percentage of each band's stretch range.

Usage: ``python benchmarks/composites.py [--quick] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


# -- inputs -------------------------------------------------------------------------------


def generate(folder: Path, width: int, height: int, overviews: bool) -> None:
    """Write the three band files into ``folder``."""
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:height, 0:width]
    # A rotated footprint, as Landsat scenes sit in their grid: zero fill outside it.
    tilt = 0.18 * (xx - width / 2)
    inside = (yy > 0.06 * height + tilt) & (yy < 0.94 * height + tilt)
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
        # The sample's own zero collar stays zero (no data), the rest gets the noise.
        noisy = np.clip(mirrored.astype(np.int32) + noise, 1, 65535).astype(np.uint16)
        data = np.where(mirrored > 0, noisy, np.uint16(0))
        data[~inside] = 0
        path = folder / f"{SCENE}_B{band}.TIF"
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
            predictor=2,
            nodata=0,
        ) as dst:
            dst.write(data, 1)
        if overviews:
            with rasterio.open(path, "r+") as dst:
                dst.build_overviews([2, 4, 8, 16], Resampling.average)
        del data, mirrored, noise, noisy


# -- the three methods (each run in its own process) --------------------------------------


def run_pixelfleet(inputs: Path, out: Path) -> dict[str, object]:
    from pixelfleet.ops.base import OpContext
    from pixelfleet.ops.composite import CompositeConfig, CompositeOp
    from pixelfleet.settings import get_settings
    from pixelfleet.storage.local import LocalStorage
    from pixelfleet.worker import configure_gdal

    configure_gdal()
    source = LocalStorage(str(inputs))
    entries = list(source.scan())
    ctx = OpContext(
        source=source,
        output=LocalStorage(str(out)),
        settings=get_settings(),
        scene_pattern="{scene}_B{band}.TIF",
    )
    op = CompositeOp(CompositeConfig(op="composite", recipe="true-color", histogram_key=""))
    started, cpu = time.perf_counter(), cpu_seconds()
    records = op.run_group(ctx, SCENE, entries)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    rss = peak_rss_mb()  # before the check below, which is not part of the method
    import rasterio

    # The stretch ranges pixelfleet chose, to compare with exact percentiles.
    from pixelfleet.imagery.composite import BandFile, CompositeSpec, make_composite

    spec = CompositeSpec(
        channels=list(BANDS), stretch=["percentile"] * 3, cog=False, image_size=None
    )
    files = [BandFile(b, b, str(inputs / f"{SCENE}_B{b}.TIF")) for b in BANDS]
    with tempfile.TemporaryDirectory() as tmp, rasterio.Env():
        stats = make_composite(files, spec, tmp).stats
    ranges = [[c["stretch"]["low"], c["stretch"]["high"]] for c in stats["channels"]]
    return {
        "seconds": seconds,
        "cpu": cpu,
        "outputs": [r.key for r in records],
        "ranges": ranges,
        "rss_mb": rss,
    }


def run_naive(inputs: Path, out: Path) -> dict[str, object]:
    import rasterio
    import rasterio.shutil
    from PIL import Image

    started, cpu = time.perf_counter(), cpu_seconds()
    bands = []
    for b in BANDS:
        with rasterio.open(inputs / f"{SCENE}_B{b}.TIF") as src:
            bands.append(src.read(1))
            profile = src.profile
    valid = (bands[0] > 0) & (bands[1] > 0) & (bands[2] > 0)
    rgb = []
    ranges = []
    for band in bands:
        low, high = np.percentile(band[valid], (2, 98))
        ranges.append([float(low), float(high)])
        scaled = np.clip((band.astype(np.float32) - low) / (high - low), 0, 1) * 255
        rgb.append(scaled.astype(np.uint8))
    alpha = valid.astype(np.uint8) * 255
    stack = np.stack([*rgb, alpha])
    tmp = out / "naive.tif"
    for name in ("compress", "predictor", "nodata"):
        profile.pop(name, None)
    profile.update(count=4, dtype="uint8", photometric="RGB", alpha="YES")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(stack)
    from pixelfleet.imagery.cogs import cog_options

    rasterio.shutil.copy(tmp, out / "naive-cog.tif", driver="COG", **cog_options())
    os.unlink(tmp)
    image = Image.fromarray(np.moveaxis(stack, 0, -1), "RGBA")
    image.thumbnail((1024, 1024), Image.Resampling.BOX)
    image.save(out / "naive.png")
    return {
        "seconds": time.perf_counter() - started,
        "cpu": cpu_seconds() - cpu,
        "ranges": ranges,
    }


def run_floor(inputs: Path, out: Path, gdal_overviews: bool = False) -> dict[str, object]:
    import rasterio
    from rasterio.windows import Window

    from pixelfleet.worker import configure_gdal

    configure_gdal()
    started, cpu = time.perf_counter(), cpu_seconds()
    srcs = [rasterio.open(inputs / f"{SCENE}_B{b}.TIF") for b in BANDS]
    first = srcs[0]
    tmp = out / "floor.tif"
    profile = {
        "driver": "GTiff", "width": first.width, "height": first.height, "count": 4,
        "dtype": "uint8", "crs": first.crs, "transform": first.transform, "tiled": True,
        "blockxsize": 512, "blockysize": 512, "interleave": "pixel", "photometric": "RGB",
        "alpha": "YES",
    }  # fmt: skip
    with rasterio.open(tmp, "w", **profile) as dst:
        for r0 in range(0, first.height, 512):
            window = Window(0, r0, first.width, min(512, first.height - r0))
            stripe = np.empty((4, int(window.height), first.width), np.uint8)
            for i, src in enumerate(srcs):
                raw = src.read(1, window=window)
                stripe[i] = raw >> 8  # data that needs no stretch
                if i == 0:
                    stripe[3] = (raw > 0).view(np.uint8) * np.uint8(255)
            dst.write(stripe, window=window)
    for src in srcs:
        src.close()
    if gdal_overviews:
        # The plain way: GDAL's COG driver computes the overviews itself.
        import rasterio.shutil

        from pixelfleet.imagery.cogs import cog_options, render_image

        cog = out / "floor-cog.tif"
        rasterio.shutil.copy(tmp, cog, driver="COG", **cog_options())
        (out / "floor.png").write_bytes(render_image(str(cog), 1024))
        os.unlink(tmp)
    else:
        # The same writer as pixelfleet's: its own overviews, COG, 1024 px PNG.
        from pixelfleet.imagery.cogs import write_outputs

        _cog, picture = write_outputs(str(tmp), str(out), image_size=1024)
        (out / "floor.png").write_bytes(picture or b"")
    return {"seconds": time.perf_counter() - started, "cpu": cpu_seconds() - cpu}


def run_floor_gdal(inputs: Path, out: Path) -> dict[str, object]:
    return run_floor(inputs, out, gdal_overviews=True)


METHODS = {
    "pixelfleet": run_pixelfleet,
    "naive": run_naive,
    "floor": run_floor,
    "floor-gdal": run_floor_gdal,
}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited
    from the parent across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """CPU time of this process so far (user + system, all threads)."""
    t = os.times()
    return t.user + t.system


def child(method: str, inputs: str, out: str) -> None:
    """Run one method and print its result with this process's peak RSS."""
    result = METHODS[method](Path(inputs), Path(out))
    result.setdefault("rss_mb", peak_rss_mb())
    print(json.dumps(result))


def measure(method: str, inputs: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pf-bench-out-") as out:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", method, str(inputs), out],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{method} failed:\n{proc.stderr}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2000 x 2000 bands, one repeat")
    parser.add_argument("--repeat", type=int, default=2, help="runs per method; best is kept")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "INPUTS", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    width, height = (2000, 2000) if args.quick else (7600, 7800)
    repeat = 1 if args.quick else args.repeat
    begun = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pf-bench-") as tmp:
        t0 = time.perf_counter()
        for variant, ovr in (("tiled", False), ("tiled+ovr", True)):
            generate(Path(tmp) / variant, width, height, ovr)
        print(
            f"inputs: 3 bands of {width}x{height} uint16, 512 px tiles, DEFLATE, with and "
            f"without overviews, made in {time.perf_counter() - t0:.0f} s; "
            f"{os.cpu_count()} cores"
        )
        print(
            f"\n{'input':<10} {'method':<11} {'wall s':>7} {'CPU s':>7} {'wall/floor':>10} "
            f"{'CPU/floor':>9} {'RSS MB':>7}   checks"
        )
        print("-" * 110)
        for variant in ("tiled", "tiled+ovr"):
            report(variant, Path(tmp) / variant, repeat)
    print(
        f"\nwall, CPU: seconds of the work in a fresh process, the run with the least CPU "
        f"of {repeat} (runs interleaved); RSS: the highest peak of those processes, imports "
        "included. The machine is shared: CPU time is the steadier measure."
    )
    print(f"total {time.perf_counter() - begun:.0f} s")


def report(variant: str, inputs: Path, repeat: int) -> None:
    """Measure the three methods on one input and print their rows and the checks."""
    best: dict[str, dict[str, Any]] = {}
    peak: dict[str, float] = {}
    for _ in range(repeat):
        for method in ("floor", "pixelfleet", "floor-gdal", "naive"):
            r = measure(method, inputs)
            peak[method] = max(peak.get(method, 0.0), float(r["rss_mb"]))
            if method not in best or r["cpu"] < best[method]["cpu"]:
                best[method] = r
    floor = best["floor"]
    for method in ("pixelfleet", "naive", "floor", "floor-gdal"):
        r = best[method]
        wall_ratio = r["seconds"] / floor["seconds"]
        cpu_ratio = r["cpu"] / floor["cpu"]
        checks = ""
        if method == "floor-gdal":
            plain = best["pixelfleet"]["cpu"] / r["cpu"]
            checks = f"pixelfleet CPU / this = {plain:.2f}"
        if method == "pixelfleet":
            checks = (
                f"CPU/floor <= 1.3: {'ok' if cpu_ratio <= 1.3 else 'MISSED'}; "
                f"wall/floor <= 1.3: {'ok' if wall_ratio <= 1.3 else 'MISSED'}; "
                f"RSS < 300: {'ok' if peak[method] < 300 else 'MISSED'}"
            )
        print(
            f"{variant:<10} {method:<11} {r['seconds']:>7.2f} {r['cpu']:>7.2f} "
            f"{wall_ratio:>10.2f} {cpu_ratio:>9.2f} {peak[method]:>7.0f}   {checks}"
        )
    errors = []
    for band, (lo_e, hi_e), (lo_p, hi_p) in zip(
        BANDS, best["naive"]["ranges"], best["pixelfleet"]["ranges"], strict=True
    ):
        errors.append(max(abs(lo_p - lo_e), abs(hi_p - hi_e)) / (hi_e - lo_e) * 100)
        print(
            f"{'':<10} band {band}: exact p2-p98 {lo_e:.0f}-{hi_e:.0f}, "
            f"pixelfleet {lo_p:.0f}-{hi_p:.0f}, off by {errors[-1]:.2f}% of the range"
        )
    worst = max(errors)
    print(
        f"{'':<10} stretch vs exact percentiles: worst {worst:.2f}% of the range "
        f"(target <= 1%: {'ok' if worst <= 1 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
