"""The public API: what each package exports exists, and the names users are told to
import (README, DESIGN, docstrings) stay importable from where they are documented."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import pixelfleet

PACKAGES = sorted(
    name for _, name, is_pkg in pkgutil.walk_packages(pixelfleet.__path__, "pixelfleet.") if is_pkg
)

# Where users are told to find things; moving one is a breaking change.
DOCUMENTED = {
    "pixelfleet": ["__version__"],
    "pixelfleet.runner": ["Runner", "RunSummary", "DryRunReport"],
    "pixelfleet.pipeline": ["Pipeline", "load_pipeline", "pipeline_from_dict"],
    "pixelfleet.models": ["Entry", "Task", "TaskResult", "RunCounts", "OutputRecord"],
    "pixelfleet.sources": ["Source", "ListingSource", "InventorySource", "MemorySource"],
    "pixelfleet.storage": ["Storage", "open_storage"],
    "pixelfleet.executors": ["Executor", "Job", "open_executor"],
    "pixelfleet.ledger": ["Ledger", "RunRecord", "TaskRecord", "open_ledger"],
    "pixelfleet.catalog": ["Catalog", "open_catalog", "parse_query", "SearchQuery"],
    "pixelfleet.catalog.indexer": ["ItemIndexer"],
    "pixelfleet.ops": ["Op", "OpConfig", "OpContext", "render_key"],
    "pixelfleet.labelers": ["Labeler", "Label", "ImageRef"],
    "pixelfleet.imagery.thumbnails": ["render_thumbnail", "render_object"],
    "pixelfleet.imagery.pictures": ["ThumbnailOptions", "encode", "fit_size"],
    "pixelfleet.imagery.reading": ["sniff_format", "raster_opener"],
    "pixelfleet.imagery.composite": ["make_composite", "CompositeSpec"],
    "pixelfleet.errors": ["PixelfleetError", "InputError", "ConfigError"],
    "pixelfleet.server": ["create_app"],
}


@pytest.mark.parametrize("name", PACKAGES)
def test_every_package_says_what_it_exports(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no docstring"
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists names it does not have: {missing}"


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_documented_names_import_from_where_they_are_documented(name: str) -> None:
    module = importlib.import_module(name)
    missing = [n for n in DOCUMENTED[name] if not hasattr(module, n)]
    assert not missing, f"{name} lost {missing}"
    exported = getattr(module, "__all__", None)
    if exported is not None and name != "pixelfleet.errors":
        assert set(DOCUMENTED[name]) <= set(exported), f"{name}.__all__ misses documented names"


def test_the_package_is_typed() -> None:
    from importlib.resources import files

    assert files("pixelfleet").joinpath("py.typed").is_file()
