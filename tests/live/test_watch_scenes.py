"""Scenes under a watcher: band files arriving one by one make one composite after the
settle time; a band file deleted redoes the composite, or removes it (and the scene's
item) when the scene can no longer be made."""

from __future__ import annotations

from pathlib import Path

from composite_helpers import SCENE, band_data, composite_pipeline, write_band
from live_helpers import Background, item_ids, keys_under, s3_event, wait_for
from pixelfleet.catalog import open_catalog
from pixelfleet.events import MemoryQueue
from pixelfleet.ledger import open_ledger
from pixelfleet.live import Watcher
from pixelfleet.pipeline import pipeline_from_dict


def test_a_scene_is_made_once_redone_and_removed(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    folder = src / "p047"
    folder.mkdir(parents=True)
    out.mkdir()
    catalog_url = f"sqlite:///{tmp_path / 'cat.db'}"
    data = composite_pipeline(src, out).to_json_dict()
    data["catalog"] = {"url": catalog_url, "collection": "scenes"}
    pipeline = pipeline_from_dict(data)
    queue = MemoryQueue()
    with (
        open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger,
        open_catalog(catalog_url) as catalog,
    ):
        watcher = Watcher(pipeline, ledger, queue, catalog=catalog, settle=0.5, summary_every=0)
        with Background(watcher):
            for band in (2, 3, 4, 5, 7):  # uploaded one after another
                write_band(folder / f"{SCENE}_B{band}.TIF", band_data(band), block=64)
                queue.put(s3_event("created", "", f"p047/{SCENE}_B{band}.TIF"))
            wait_for(lambda: queue.pending() == 0)
            made = keys_under(out)
            assert len(made) >= 1
            assert item_ids(catalog, "scenes") == {f"p047/{SCENE}"}
            assert watcher.counts() == {"created": 5}  # the five events, handled as one
            first = {k: (out / k).read_bytes() for k in made}

            # A band the true-colour recipe does not use goes: the scene is made again,
            # from the band files left (its item's etag changes), outputs the same keys.
            (folder / f"{SCENE}_B7.TIF").unlink()
            queue.put(s3_event("deleted", "", f"p047/{SCENE}_B7.TIF"))
            wait_for(lambda: queue.pending() == 0)
            assert keys_under(out) == set(first)
            assert watcher.counts()["updated"] == 1

            # A band it needs goes: the composite and the scene's item are removed.
            (folder / f"{SCENE}_B4.TIF").unlink()
            queue.put(s3_event("deleted", "", f"p047/{SCENE}_B4.TIF"))
            wait_for(lambda: queue.pending() == 0)
            assert keys_under(out) == set()
            assert item_ids(catalog, "scenes") == set()
            assert watcher.counts()["deleted"] == 1
        assert not queue.dead
