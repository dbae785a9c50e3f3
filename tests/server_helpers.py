"""A catalog filled by a real pipeline run, and a live uvicorn server on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo" / "bucket"


def fill_demo_catalog(folder: Path) -> tuple[str, str]:
    """Run a thumbnail pipeline over the demo bucket into ``folder``; return catalog and
    ledger URLs. Adds labels to two photos (as a labels step would) for text search."""
    from pixelfleet.catalog import open_catalog
    from pixelfleet.ledger import open_ledger
    from pixelfleet.pipeline import pipeline_from_dict
    from pixelfleet.runner import Runner

    src = folder / "bucket"
    # The 15 thumbnail-demo objects (the Landsat scenes belong to other pipelines).
    shutil.copytree(DEMO, src, ignore=shutil.ignore_patterns("landsat"))
    catalog_url = f"sqlite:///{folder / 'catalog.db'}"
    ledger_url = f"sqlite:///{folder / 'ledger.db'}"
    pipeline = pipeline_from_dict(
        {
            "source": {"url": str(src), "include": ["**/*.tif", "**/*.jpg", "**/*.png"]},
            "output": {"url": str(folder / "out")},
            "steps": [{"op": "thumbnail", "size": 128}],
            "run": {"executor": "local", "workers": 2},
            "catalog": {"url": catalog_url, "collection": "demo", "title": "Demo bucket"},
        }
    )
    with open_ledger(ledger_url) as ledger:
        summary = Runner(pipeline, ledger, progress=False).run()
    assert summary.state == "done", summary.failures
    with open_catalog(catalog_url) as catalog:
        for key, labels in (
            ("photos/chelsea.png", [{"name": "cat", "confidence": 93.0}]),
            ("photos/coffee.png", [{"name": "coffee", "confidence": 88.0}]),
        ):
            item = catalog.get_item("demo", key)
            item["properties"]["labels"] = labels
            catalog.upsert([item])
    return catalog_url, ledger_url


#: The demo's Landsat 8 scene (bands 2-4), as ``fill_composite_catalog`` indexes it.
LANDSAT = "LC81070352015122LGN00/LC81070352015122LGN00"


def fill_composite_catalog(folder: Path) -> tuple[str, str]:
    """Run the demo's true-colour composite step over its Landsat 8 scene into ``folder``
    (with a histogram plot); return catalog and ledger URLs. The item is ``LANDSAT``."""
    from pixelfleet.ledger import open_ledger
    from pixelfleet.pipeline import pipeline_from_dict
    from pixelfleet.runner import Runner

    catalog_url = f"sqlite:///{folder / 'catalog.db'}"
    ledger_url = f"sqlite:///{folder / 'ledger.db'}"
    pipeline = pipeline_from_dict(
        {
            "source": {
                "url": str(DEMO / "landsat"),
                "include": ["LC8*/*.tif"],
                "partition": {"by": "scene", "pattern": "{scene}_B{band}.TIF"},
            },
            "output": {"url": str(folder / "out")},
            "steps": [
                {
                    "op": "composite",
                    "recipe": "true-color",
                    "image_size": 512,
                    "histogram_key": "{scene}_{recipe}.hist.png",
                }
            ],
            "run": {"executor": "inline"},
            "catalog": {"url": catalog_url, "collection": "landsat"},
        }
    )
    with open_ledger(ledger_url) as ledger:
        summary = Runner(pipeline, ledger, progress=False).run()
    assert summary.state == "done", summary.failures
    return catalog_url, ledger_url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port; yield its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
