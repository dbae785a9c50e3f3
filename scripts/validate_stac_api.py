"""Run stac-api-validator against ``pixelfleet serve``: the demo catalog, or any catalog.

The validator is not a project dependency (tests never download anything), so this
script installs a pinned version into a virtual environment of its own (default
``/tmp/pixelfleet-stac-api-validator``; the first run takes about a minute), builds the
demo catalog in a temporary folder the way ``make demo`` does (or takes ``--catalog``),
serves it on a free 127.0.0.1 port, and runs the validator's conformance classes over it.
Run it from the repository root with the project's Python::

    .venv/bin/python scripts/validate_stac_api.py
    .venv/bin/python scripts/validate_stac_api.py --catalog sqlite:///big.db --collection bench

It exits with the validator's status (0: no errors) and ends with one summary line.

Two things stand between the validator and an offline machine, and the script handles
both inside the validator's process, without changing what it checks:

- The validator fetches STAC JSON schemas from their web sites. The core ones (item,
  collection, catalog, GeoJSON) are served from the copies pystac ships; extension
  schemas from ``--schemas DIR`` (JSON files, matched by their ``$id``) when given, else
  they are replaced by an empty schema and listed as not checked. Any other address
  that is not this machine is refused.
- Its sort check compares every returned ``properties.datetime`` with Python's ``<``
  and fails with a ``TypeError`` when one is ``null`` (which the STAC item spec allows
  when ``start_datetime`` and ``end_datetime`` are set, as the demo's year-range items
  do). The check is run with ``null`` ordered after every timestamp, in both
  directions, which is the order pixelfleet promises; the run says when that mattered.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

#: The validator release this script was written against.
VALIDATOR = "stac-api-validator==0.6.8"
CLASSES = ["core", "features", "item-search", "filter", "item-search#sort"]
ROOT = Path(__file__).resolve().parents[1]
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def main() -> int:
    """Build or take a catalog, serve it, run the validator over it; its exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--catalog", help="catalog URL to serve (default: build the demo's)")
    parser.add_argument("--collection", help="collection to validate (default: the first)")
    parser.add_argument(
        "--geometry", help="GeoJSON for the intersects checks (default: an item's bbox)"
    )
    parser.add_argument(
        "--conformance", action="append", help=f"class to check (default: {' '.join(CLASSES)})"
    )
    parser.add_argument("--schemas", type=Path, help="folder of extension JSON schemas")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/pixelfleet-stac-api-validator"))
    parser.add_argument("--keep", action="store_true", help="keep the temporary demo folder")
    args, extra = parser.parse_known_args()
    python = ensure_validator(args.venv)
    folder = Path(tempfile.mkdtemp(prefix="pixelfleet-validate-"))
    try:
        url = args.catalog or demo_catalog(folder)
        port = free_port()
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "pixelfleet"), "serve", "--port", str(port),
             "--catalog", url, "--ledger", f"sqlite:///{folder / 'ledger.db'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            root = f"http://127.0.0.1:{port}/stac"
            wait_for(root, server)
            collection = args.collection or first_collection(root)
            geometry = args.geometry or item_geometry(root, collection)
            command = [str(python), __file__, "--as-validator", "--root-url", root,
                       "--collection", collection, "--geometry", geometry]  # fmt: skip
            for name in args.conformance or CLASSES:
                command += ["--conformance", name]
            env = {**os.environ, "PIXELFLEET_SCHEMAS": str(args.schemas or "")}
            print(f"{VALIDATOR} on {url}, collection {collection!r}", flush=True)
            return subprocess.run([*command, *extra], env=env, check=False).returncode
        finally:
            server.terminate()
            server.wait(10)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def ensure_validator(venv: Path) -> Path:
    """The validator's Python, installing it first if the venv lacks it."""
    python = venv / "bin" / "python"
    wanted = VALIDATOR.split("==")[1]
    check = [str(python), "-c", "import importlib.metadata as m;"
             " print(m.version('stac-api-validator'))"]  # fmt: skip
    if python.exists():
        found = subprocess.run(check, capture_output=True, text=True, check=False).stdout.strip()
        if found == wanted:
            return python
    print(f"installing {VALIDATOR} into {venv} (about a minute, once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", VALIDATOR], check=True)
    return python


def demo_catalog(folder: Path) -> str:
    """Run ``make demo``'s pipelines over a copy of the demo bucket in ``folder``."""
    for name in ("examples", "demo"):
        shutil.copytree(ROOT / name, folder / name)
    url = f"sqlite:///{folder / 'catalog.db'}"
    env = {**os.environ, "PIXELFLEET_CATALOG": url,
           "PIXELFLEET_LEDGER": f"sqlite:///{folder / 'ledger.db'}"}  # fmt: skip
    print(f"building the demo catalog in {folder} (about 30 s)", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "pixelfleet.cli.demo"], cwd=folder, env=env,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if "STAC items in" not in done.stdout:
        sys.exit(f"the demo did not build its catalog:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return url


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    """The JSON at a URL."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def wait_for(url: str, server: subprocess.Popen[bytes]) -> None:
    """Wait until the server answers at ``url`` (exit if it dies or takes over 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"pixelfleet serve exited with status {server.returncode}")
        try:
            get_json(url)
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"pixelfleet serve did not answer at {url} within 60 s")


def first_collection(root: str) -> str:
    """The id of the API's first collection."""
    collections = get_json(f"{root}/collections")["collections"]
    if not collections:
        sys.exit("the catalog has no collection to validate")
    return str(collections[0]["id"])


def item_geometry(root: str, collection: str) -> str:
    """A polygon around the first item that has a footprint."""
    page = get_json(f"{root}/collections/{collection}/items?limit=100")
    for item in page["features"]:
        if item.get("bbox"):
            w, s, e, n = item["bbox"][:4] if len(item["bbox"]) == 4 else item["bbox"][::3][:4]
            ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
            return json.dumps({"type": "Polygon", "coordinates": [ring]})
    sys.exit(f"no item of {collection!r} has a footprint: give --geometry")


# -- inside the validator's environment (no pixelfleet here) -------------------------------


def as_validator(argv: list[str]) -> int:
    """Run the validator's command line with schemas served locally and null datetimes
    ordered last in its sort check."""
    import copy
    from urllib.parse import urlsplit

    import requests
    import stac_api_validator.validations as validations
    from pystac.validation.local_validator import get_local_schema_cache
    from requests.adapters import HTTPAdapter

    schemas = {url.rstrip("#"): body for url, body in get_local_schema_cache().items()}
    folder = os.environ.get("PIXELFLEET_SCHEMAS")
    if folder:
        for path in sorted(Path(folder).glob("*.json")):
            body = json.loads(path.read_text())
            schemas[str(body["$id"]).rstrip("#")] = body
    unchecked: set[str] = set()
    nulls_seen = [0]
    send = HTTPAdapter.send

    def offline_send(adapter: HTTPAdapter, request: Any, **kwargs: Any) -> Any:
        url = str(request.url).split("#")[0]
        host = urlsplit(url).hostname
        if host in LOCAL_HOSTS:
            return send(adapter, request, **kwargs)
        if url not in schemas and url.startswith("https://stac-extensions.github.io/"):
            unchecked.add(url)
        elif url not in schemas:
            raise requests.ConnectionError(f"not fetched (offline run): {url}")
        response = requests.Response()
        response.status_code = 200
        response._content = json.dumps(schemas.get(url, {})).encode()
        response.headers["Content-Type"] = "application/schema+json"
        response.url, response.request = str(request.url), request
        return response

    class NullsLast(list):  # type: ignore[type-arg]
        """A list whose sort puts None after every value, in either direction."""

        def sort(self, *, key: Any = None, reverse: bool = False) -> None:
            values = sorted((v for v in self if v is not None), key=key, reverse=reverse)
            nulls_seen[0] += len(self) - len(values)
            self[:] = values + [None] * (len(self) - len(values))

    class Copying:
        @staticmethod
        def deepcopy(value: Any) -> Any:
            copied = copy.deepcopy(value)
            return NullsLast(copied) if isinstance(copied, list) else copied

    HTTPAdapter.send = offline_send  # type: ignore[method-assign,assignment]
    # validate_sort copies each page's datetimes with copy.deepcopy, then sorts the copy.
    validations.copy = Copying  # type: ignore[assignment]
    import stac_api_validator.__main__ as cli

    counted: list[int] = []
    validate_api = cli.validate_api

    def counting_validate_api(**kwargs: Any) -> Any:
        warnings, errors = validate_api(**kwargs)
        counted[:] = [len(errors.errors), len(warnings.errors)]
        return warnings, errors

    cli.validate_api = counting_validate_api
    if not any(a.startswith("--log-level") for a in argv):
        argv = ["--log-level", "WARNING", *argv]
    try:
        status = int(cli.main(argv, standalone_mode=False) or 0)  # 1: it crashed
    except SystemExit as exc:
        status = int(exc.code or 0)
    if unchecked:
        print(f"not checked (no schema given, see --schemas): {', '.join(sorted(unchecked))}")
    if nulls_seen[0]:
        print(f"sort check: {nulls_seen[0]} null datetimes were expected after the others")
    if counted:
        print(f"summary: {counted[0]} errors, {counted[1]} warnings")
    else:
        print("summary: the validator stopped before its report (see above)")
    return status if counted else max(status, 1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--as-validator"]:
        sys.exit(as_validator(sys.argv[2:]))
    sys.exit(main())
