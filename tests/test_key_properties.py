"""Property tests of key handling (hypothesis): no key writes outside the output prefix,
and every key a storage accepts round-trips through the ledger, the catalog and the
one-line display ``status`` uses."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixelfleet.catalog import open_catalog
from pixelfleet.cli.display import printable
from pixelfleet.errors import PixelfleetError
from pixelfleet.ledger import TaskRecord, open_ledger
from pixelfleet.models import Entry, Task
from pixelfleet.ops.base import render_key
from pixelfleet.storage import open_storage

#: Keys as hostile users write them: path tricks, separators, control characters, any text.
PARTS = st.sampled_from(["..", ".", "", "a", "b c", "%2e%2e", "~", "\\", "C:", "\n", "\x00", "é"])
KEYS = st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(PARTS, st.text(max_size=6)), min_size=1, max_size=6).map("/".join),
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def inside(path: Path, root: Path) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(root) + os.sep)


@SETTINGS
@given(key=KEYS, template=st.sampled_from(["{stem}.thumb.jpg", "{dir}/{name}", "{key}.json"]))
def test_no_key_writes_outside_the_output(key: str, template: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "out"
        root.mkdir()
        storage = open_storage(f"file://{root}")
        try:
            out_key = render_key(template, key)
            storage.write(out_key, b"x")
        except (PixelfleetError, ValueError):
            return  # refused, with a reason: fine
        written = [p for p in Path(tmp).rglob("*") if p.is_file()]
        assert written, "the write reported success but wrote nothing"
        assert all(inside(p, root) for p in written), (key, out_key, written)


@SETTINGS
@given(key=KEYS)
def test_accepted_keys_round_trip(key: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(f"file://{tmp}")
        try:
            storage.write(key, b"x")
        except (PixelfleetError, ValueError):
            return
        (listed,) = [e for e in storage.scan() if e.key == key]
        entry = Entry(key, listed.size, listed.etag, listed.mtime)
        with open_ledger(f"sqlite:///{tmp}/l.db") as ledger:
            ledger.save_tasks("r", [TaskRecord.pending(Task("t1", key, (entry,)))])
            (back,) = ledger.find_tasks("r")
            assert back.to_task().entries[0].key == key and back.group == key
        with open_catalog(f"sqlite:///{tmp}/c.db") as catalog:
            catalog.ensure_collection("c", None, None)
            item = {
                "type": "Feature",
                "stac_version": "1.1.0",
                "id": key,
                "collection": "c",
                "geometry": None,
                "properties": {"datetime": "2026-01-01T00:00:00Z", "title": key},
                "links": [],
                "assets": {},
            }
            catalog.upsert([item])
            assert catalog.get_item("c", key)["id"] == key
        shown = printable(key)
        assert "\n" not in shown and "\r" not in shown
