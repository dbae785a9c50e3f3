"""Vendor the search page's map code and world outline into the package's static files.

The pages must work with no internet, so nothing is fetched from a CDN at run time:
this script downloads pinned npm packages with ``npm pack`` (the ordinary npm client,
into a temporary folder), copies only the files the pages use, with their licences, to
``src/pixelfleet/server/static/vendor/``, and writes ``vendor/README.md``.

- ``leaflet``: ``leaflet.js``, ``leaflet.css`` and the marker/layer images the CSS names;
- ``world-atlas``: Natural Earth 1:110m countries, decoded here from TopoJSON to a
  GeoJSON ``FeatureCollection`` of (Multi)Polygons with coordinates rounded to 0.01°,
  so the browser needs no TopoJSON decoder.

Run it from the repository root::

    python scripts/vendor_frontend.py

The output is deterministic for the pinned versions; change ``PACKAGES`` to upgrade.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "src" / "pixelfleet" / "server" / "static" / "vendor"
#: npm package -> pinned version.
PACKAGES = {"leaflet": "1.9.4", "world-atlas": "2.0.2"}
LEAFLET_FILES = ["dist/leaflet.js", "dist/leaflet.css", "LICENSE"]
WORLD_OUTPUT = "countries-110m.geojson"
DIGITS = 2


def npm_pack(name: str, version: str, into: Path) -> Path:
    """Download ``name@version``'s tarball with ``npm pack``; return the unpacked folder."""
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("npm was not found on PATH: install Node.js (apt-get install npm) and rerun")
    out = subprocess.run(
        [npm, "pack", f"{name}@{version}", "--json", "--pack-destination", str(into)],
        check=True,
        capture_output=True,
        text=True,
        cwd=into,
    )
    filename = json.loads(out.stdout)[0]["filename"]
    folder = into / name
    with tarfile.open(into / filename) as tar:
        tar.extractall(folder, filter="data")
    return folder / "package"


def arcs_of(topology: dict[str, Any]) -> list[list[tuple[float, float]]]:
    """The topology's arcs as lists of (lon, lat), undoing quantisation and delta coding."""
    transform = topology.get("transform")
    arcs = []
    for arc in topology["arcs"]:
        points = []
        x = y = 0
        for point in arc:
            if transform:
                x, y = x + point[0], y + point[1]
                (sx, sy), (tx, ty) = transform["scale"], transform["translate"]
                points.append((x * sx + tx, y * sy + ty))
            else:
                points.append((point[0], point[1]))
        arcs.append(points)
    return arcs


def ring_of(indices: list[int], arcs: list[list[tuple[float, float]]]) -> list[list[float]]:
    """One closed ring from arc indices (a negative index ``~i`` is arc ``i`` reversed)."""
    ring: list[tuple[float, float]] = []
    for index in indices:
        arc = arcs[index] if index >= 0 else arcs[~index][::-1]
        # Consecutive arcs share their joining point.
        ring.extend(arc if not ring else arc[1:])
    return [[round(x, DIGITS), round(y, DIGITS)] for x, y in ring]


def unwrap(ring: list[list[float]]) -> list[list[float]]:
    """A ring drawn on a flat map in one piece: world-atlas cuts shapes at the
    antimeridian, so a ring may jump from 180 to -180; later points are shifted by 360
    to continue instead (Chukotka ends east of 180). A ring around a pole (Antarctica)
    goes down to the pole and back at its jump instead."""
    out = [ring[0]]
    shift = 0.0
    for lon, lat in ring[1:]:
        prev = out[-1][0]
        while lon + shift - prev > 180:
            shift -= 360
        while lon + shift - prev < -180:
            shift += 360
        out.append([round(lon + shift, DIGITS), lat])
    if abs(out[-1][0] - out[0][0]) < 180:
        return out
    around: list[list[float]] = [ring[0]]
    for (lon0, _lat0), (lon1, lat1) in zip(ring, ring[1:], strict=False):
        if abs(lon1 - lon0) > 180:
            pole = -90.0 if lat1 < 0 else 90.0
            around += [[lon0, pole], [lon1, pole]]
        around.append([lon1, lat1])
    return around


def topojson_to_geojson(topology: dict[str, Any], name: str) -> dict[str, Any]:
    """The object ``name`` of a TopoJSON topology as a GeoJSON FeatureCollection."""
    arcs = arcs_of(topology)
    features = []
    for geometry in topology["objects"][name]["geometries"]:
        kind = geometry.get("type")
        if kind == "Polygon":
            coords: Any = [unwrap(ring_of(r, arcs)) for r in geometry["arcs"]]
        elif kind == "MultiPolygon":
            coords = [[unwrap(ring_of(r, arcs)) for r in poly] for poly in geometry["arcs"]]
        else:
            continue  # countries-110m holds only polygons; anything else is not drawn
        features.append(
            {
                "type": "Feature",
                "properties": {"name": (geometry.get("properties") or {}).get("name", "")},
                "geometry": {"type": kind, "coordinates": coords},
            }
        )
    return {"type": "FeatureCollection", "features": features}


README = """# Vendored front-end files

The search and item pages draw their maps with these files, served from the package so
the pages work with no internet. Do not edit them: regenerate them with

    python scripts/vendor_frontend.py

which downloads the pinned versions below with `npm pack` and copies only what is listed.

| package | version | licence | files here |
| --- | --- | --- | --- |
| [leaflet](https://www.npmjs.com/package/leaflet) | {leaflet} | BSD-2-Clause (`leaflet/LICENSE`) | `leaflet/leaflet.js`, `leaflet/leaflet.css`, `leaflet/images/*` |
| [world-atlas](https://www.npmjs.com/package/world-atlas) | {world} | ISC (`world-atlas/LICENSE`); the data is Natural Earth, public domain | `world-atlas/{output}` (from `countries-110m.json`, TopoJSON decoded to GeoJSON, rings unwrapped at the antimeridian, coordinates rounded to {digits} decimals) |
"""  # noqa: E501


def main() -> None:
    """Download, copy, convert, and write the README."""
    with tempfile.TemporaryDirectory(prefix="pixelfleet-vendor-") as tmp:
        leaflet = npm_pack("leaflet", PACKAGES["leaflet"], Path(tmp))
        world = npm_pack("world-atlas", PACKAGES["world-atlas"], Path(tmp))
        if VENDOR.exists():
            shutil.rmtree(VENDOR)
        (VENDOR / "leaflet" / "images").mkdir(parents=True)
        (VENDOR / "world-atlas").mkdir(parents=True)
        for name in LEAFLET_FILES:
            shutil.copyfile(leaflet / name, VENDOR / "leaflet" / Path(name).name)
        for image in sorted((leaflet / "dist" / "images").glob("*.png")):
            shutil.copyfile(image, VENDOR / "leaflet" / "images" / image.name)
        shutil.copyfile(world / "LICENSE", VENDOR / "world-atlas" / "LICENSE")
        topology = json.loads((world / "countries-110m.json").read_text())
        geojson = topojson_to_geojson(topology, "countries")
        (VENDOR / "world-atlas" / WORLD_OUTPUT).write_text(
            json.dumps(geojson, separators=(",", ":")) + "\n"
        )
    (VENDOR / "README.md").write_text(
        README.format(
            leaflet=PACKAGES["leaflet"],
            world=PACKAGES["world-atlas"],
            output=WORLD_OUTPUT,
            digits=DIGITS,
        )
    )
    for path in sorted(VENDOR.rglob("*")):
        if path.is_file():
            print(f"{path.stat().st_size:>9,}  {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
