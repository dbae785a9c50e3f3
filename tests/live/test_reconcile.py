"""Reconcile after a watcher missed events: the catalog and the outputs come back in
line with the bucket, through the same code path as events."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from live_helpers import keys_under, photo, photo_pipeline
from pixelfleet.catalog import open_catalog
from pixelfleet.catalog.query import parse_query
from pixelfleet.cli.main import cli
from pixelfleet.ledger import open_ledger
from pixelfleet.live.reconcile import compare
from pixelfleet.runner import Runner


def catalogued(url: str) -> dict[str, str]:
    with open_catalog(url) as catalog:
        page = catalog.search(parse_query(collections=["photos"], limit=1000))
    return {f["id"]: f["properties"]["pixelfleet:etag"] for f in page.items}


def test_reconcile_restores_catalog_and_outputs(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    for i in range(6):
        (src / "d").mkdir(parents=True, exist_ok=True)
        (src / "d" / f"p{i}.png").write_bytes(photo((i * 40, 10, 10)))
    catalog_url = f"sqlite:///{tmp_path / 'cat.db'}"
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    pipeline = photo_pipeline(f"file://{src}", f"file://{out}", catalog_url)
    with open_ledger(ledger_url) as ledger:
        assert Runner(pipeline, ledger, progress=False).run().state == "done"
    assert len(catalogued(catalog_url)) == 6

    # While nothing watched: one new, one changed, two deleted.
    (src / "d" / "new.png").write_bytes(photo((1, 2, 3)))
    (src / "d" / "p0.png").write_bytes(photo((9, 9, 9), size=40))
    (src / "d" / "p1.png").unlink()
    (src / "d" / "p2.png").unlink()

    with open_catalog(catalog_url) as catalog:
        report = compare(pipeline, catalog)
    assert (len(report.new), len(report.changed), len(report.deleted)) == (1, 1, 2)

    toml = tmp_path / "photos.toml"
    toml.write_text(
        f'[source]\nurl = "file://{src}"\ninclude = ["**/*.png"]\n'
        f'[output]\nurl = "file://{out}"\n'
        '[[steps]]\nop = "thumbnail"\nsize = 32\nkey = "{stem}.thumb.jpg"\n'
        f'[catalog]\nurl = "{catalog_url}"\ncollection = "photos"\n'
        '[run]\nexecutor = "inline"\n'
    )
    runner = CliRunner()
    dry = runner.invoke(cli, ["reconcile", str(toml), "--dry-run", "--ledger", ledger_url])
    assert dry.exit_code == 0, dry.output
    assert "1 new, 1 changed, 2 deleted" in dry.output
    assert "d/new.png" in dry.output
    assert catalogued(catalog_url).keys() == {f"d/p{i}.png" for i in range(6)}  # unchanged

    done = runner.invoke(cli, ["reconcile", str(toml), "--ledger", ledger_url])
    assert done.exit_code == 0, done.output
    bucket = {p.relative_to(src).as_posix() for p in src.rglob("*.png")}
    items = catalogued(catalog_url)
    assert items.keys() == bucket
    assert keys_under(out) == {k.replace(".png", ".thumb.jpg") for k in bucket}
    assert items["d/p0.png"] != items["d/p3.png"]

    again = runner.invoke(cli, ["reconcile", str(toml), "--dry-run", "--ledger", ledger_url])
    assert "0 new, 0 changed, 0 deleted" in again.output


def test_watch_reconciles_on_a_schedule(tmp_path: Path) -> None:
    """`watch --reconcile-every`: objects that changed while no event came are found."""
    from live_helpers import Background, local_photos, wait_for
    from pixelfleet.events import MemoryQueue
    from pixelfleet.live import Watcher

    src, out, _, pipeline, ledger, catalog = local_photos(tmp_path)
    (src / "missed.png").write_bytes(photo())
    watcher = Watcher(
        pipeline, ledger, MemoryQueue(), catalog=catalog, summary_every=0, reconcile_every=0.3
    )
    with Background(watcher):
        wait_for(lambda: "missed.png" in catalogued(f"sqlite:///{tmp_path / 'catalog.db'}"))
        (src / "missed.png").unlink()
        wait_for(lambda: not catalogued(f"sqlite:///{tmp_path / 'catalog.db'}"))
    assert keys_under(out) == set()
    ledger.close()
    catalog.close()
