"""``make demo``: thumbnails and STAC items for the bundled sample bucket, a rerun that
skips everything, composites of the sample Landsat scenes and labels for the photos and
rasters; ends by saying where to look and how to open the search page.

Run from the repository root: ``python -m pixelfleet.cli.demo``.
"""

from __future__ import annotations

import html
import os
import sys
from pathlib import Path
from typing import Any

import click

from pixelfleet.cli.display import show_summary
from pixelfleet.errors import PixelfleetError
from pixelfleet.ledger import open_ledger
from pixelfleet.pipeline import Pipeline, load_pipeline
from pixelfleet.runner import Runner
from pixelfleet.settings import get_settings
from pixelfleet.storage.local import path_from_url

PIPELINE = Path("examples/demo.toml")
COMPOSITES = Path("examples/landsat-demo.toml")


def contact_sheet(output_dir: Path) -> Path:
    """Write ``index.html`` beside the thumbnails, showing each with its key."""
    thumbs = sorted(p for p in output_dir.rglob("*.thumb.*") if p.is_file())
    cells = "\n".join(
        f'<figure><img src="{html.escape(p.relative_to(output_dir).as_posix())}" loading="lazy">'
        f"<figcaption>{html.escape(p.relative_to(output_dir).as_posix())}"
        f"{_labels_caption(p)}</figcaption></figure>"
        for p in thumbs
    )
    page = output_dir / "index.html"
    page.write_text(
        "<!doctype html><meta charset=utf-8><title>pixelfleet demo thumbnails</title>"
        "<style>body{font-family:sans-serif;background:#222;color:#ddd}"
        "main{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;width:260px}"
        "img{max-width:256px;max-height:256px;background:#444}"
        "figcaption{font-size:12px;word-break:break-all}</style>"
        f"<h1>pixelfleet demo: {len(thumbs)} thumbnails</h1><main>{cells}</main>\n"
    )
    return page


def _labels_caption(thumb: Path) -> str:
    """The top labels of the image a thumbnail shows, if the labels step ran on it."""
    import json

    sidecar = thumb.with_name(thumb.name.split(".thumb.")[0] + ".labels.json")
    if not sidecar.is_file():
        return ""
    try:
        text = top_labels(json.loads(sidecar.read_text()))
    except (ValueError, KeyError):
        return ""
    return f"<br><b>{html.escape(text)}</b>" if text else ""


def catalog_url(pipeline: Pipeline) -> str:
    """The catalog the demo pipeline writes to."""
    section = pipeline.catalog
    return (section.url if section and section.url else None) or get_settings().catalog_url


def fill_catalog(pipeline: Pipeline, indexed: int) -> int:
    """Index the demo's items if the runs did not (their tasks were done before a catalog
    was configured); return how many items the demo collection holds."""
    from pixelfleet.catalog import open_catalog, parse_query
    from pixelfleet.reindex import reindex

    if pipeline.catalog is None:
        return 0
    with open_catalog(catalog_url(pipeline)) as catalog:
        query = parse_query(collections=[pipeline.catalog.collection], limit=1)
        held = catalog.search(query).matched or 0
        if held < indexed or held == 0:
            click.secho(f"\n== pixelfleet index {PIPELINE}   (fill the catalog)", bold=True)
            reindex(pipeline, catalog)
            held = catalog.search(query).matched or 0
    return held


def composites_page(output_dir: Path) -> Path:
    """Write ``index.html`` beside the composites: each picture with its histograms."""
    pictures = sorted(p for p in output_dir.rglob("*.png") if not p.name.endswith(".hist.png"))
    cells = []
    for p in pictures:
        rel = p.relative_to(output_dir).as_posix()
        hist = p.with_name(p.name[: -len(".png")] + ".hist.png")
        extra = (
            f'<img src="{html.escape(hist.relative_to(output_dir).as_posix())}" loading="lazy">'
            if hist.exists()
            else ""
        )
        cells.append(
            f'<figure><img src="{html.escape(rel)}" loading="lazy">{extra}'
            f"<figcaption>{html.escape(rel)} (COG beside it: .tif)</figcaption></figure>"
        )
    page = output_dir / "index.html"
    page.write_text(
        "<!doctype html><meta charset=utf-8><title>pixelfleet demo composites</title>"
        "<style>body{font-family:sans-serif;background:#222;color:#ddd}"
        "figure{margin:0 0 24px}img{max-width:640px;margin-right:12px;background:#444;"
        "vertical-align:top}figcaption{font-size:12px}</style>"
        f"<h1>pixelfleet demo: {len(pictures)} scene composites</h1>{''.join(cells)}\n"
    )
    return page


def run_composites() -> tuple[int, Path | None]:
    """Run the Landsat composites pipeline; returns (failed tasks, its output folder)."""
    try:
        pipeline = load_pipeline(str(COMPOSITES))
        with open_ledger(get_settings().ledger_url) as ledger:
            click.secho(f"\n== pixelfleet run {COMPOSITES}", bold=True)
            summary = Runner(pipeline, ledger).run()
            show_summary(summary)
    except PixelfleetError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1, None
    return summary.failed, Path(path_from_url(pipeline.output.url))


def main() -> int:
    """Run the demo pipeline twice and say where to look."""
    if not PIPELINE.exists():
        click.echo(f"error: run the demo from the repository root ({PIPELINE} not found)", err=True)
        return 1
    try:
        pipeline = load_pipeline(str(PIPELINE))
        with open_ledger(get_settings().ledger_url) as ledger:
            click.secho(f"== pixelfleet run {PIPELINE}", bold=True)
            first = Runner(pipeline, ledger).run()
            show_summary(first)
            click.secho(f"\n== pixelfleet run {PIPELINE}   (again: nothing to redo)", bold=True)
            second = Runner(pipeline, ledger, progress=False).run()
            show_summary(second)
        indexed = fill_catalog(pipeline, first.counts.items_indexed)
    except PixelfleetError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    composites_failed, composites_out = run_composites()
    out = Path(path_from_url(pipeline.output.url))
    labelled = label_demo()
    page = contact_sheet(out)
    rel = os.path.relpath(out)
    click.secho("\nWhere to look:", bold=True)
    click.echo(f"  thumbnails:     {rel}/ (keys mirror demo/bucket/, e.g. va/2016/*.thumb.jpg)")
    click.echo(f"  contact sheet:  file://{page.resolve()}")
    if labelled:
        click.echo(f"  labels:         {rel}/**/*.labels.json (next to each thumbnail)")
    if composites_out is not None:
        sheet = composites_page(composites_out)
        click.echo(
            f"  composites:     {os.path.relpath(composites_out)}/ (COG .tif, .png, histograms)"
        )
        click.echo(f"  composites page: file://{sheet.resolve()}")
        scene = "demo/bucket/landsat/LC81070352015122LGN00/"
        plot = os.path.join(os.path.relpath(composites_out), "explore.hist.png")
        click.echo(
            f"  explore a scene: .venv/bin/pixelfleet histogram {scene} --bands 4,3,2 -o {plot}"
        )
    click.echo("  run status:     .venv/bin/pixelfleet status")
    indexed = fill_catalog(pipeline, indexed)  # now with the scenes and labelled images too
    click.echo(f"  catalog:        {indexed} STAC items in {catalog_url(pipeline)}")
    click.echo('  search labels:  .venv/bin/pixelfleet search "cat"')
    click.echo('  search:         .venv/bin/pixelfleet search "flower"   (or --bbox, --datetime)')
    click.secho(
        "  search page:    .venv/bin/pixelfleet serve   then open http://127.0.0.1:8000/",
        bold=True,
    )
    click.echo(f"  what it would do: .venv/bin/pixelfleet run {PIPELINE} --dry-run")
    click.echo(
        f"  keep it current: .venv/bin/pixelfleet watch {PIPELINE}"
        "   (then add, change or delete files in demo/bucket/)"
    )
    return 1 if first.failed or composites_failed else 0


#: The labelling pipelines ``make demo`` runs after the thumbnails.
LABEL_PIPELINES = (
    Path("examples/label-photos.toml"),
    Path("examples/label-landcover.toml"),
    Path("examples/label-landsat.toml"),
)


def label_demo() -> bool:
    """Label the sample photos and rasters, then print the top labels of each image.

    Returns False (after saying why) when the labellers cannot run here.
    """
    import json

    from pixelfleet.errors import MissingExtraError

    done = []
    try:
        with open_ledger(get_settings().ledger_url) as ledger:
            for path in LABEL_PIPELINES:
                click.secho(f"\n== pixelfleet run {path}", bold=True)
                try:
                    labels = load_pipeline(str(path))
                except MissingExtraError as exc:
                    click.echo(f"  skipped: {exc}")
                    continue
                show_summary(Runner(labels, ledger).run())
                done.append(labels)
    except PixelfleetError as exc:
        click.echo(f"error: {exc}", err=True)
        return False
    if not done:
        return False
    click.secho("\nTop labels:", bold=True)
    for out in sorted({Path(path_from_url(p.output.url)) for p in done}):
        for sidecar in sorted(out.rglob("*.labels.json")):
            doc = json.loads(sidecar.read_text())
            click.echo(f"  {doc['source']['key']}: {top_labels(doc) or '(none above threshold)'}")
    return True


def top_labels(doc: dict[str, Any], count: int = 3) -> str:
    """``"tabby cat 71%, tiger cat 12%"``: the first labels of a labels sidecar."""
    return ", ".join(f"{lab['name']} {lab['confidence']:.0f}%" for lab in doc["labels"][:count])


if __name__ == "__main__":
    sys.exit(main())
