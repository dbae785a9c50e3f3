"""``pixelfleet search [TEXT]``: find items in the catalog, as a table or JSON."""

from __future__ import annotations

import json
import os

import click

from pixelfleet.catalog import Catalog, open_catalog, parse_query
from pixelfleet.catalog.query import MAX_LIMIT
from pixelfleet.cli.display import printable
from pixelfleet.errors import ConfigError
from pixelfleet.settings import get_settings

catalog_option = click.option(
    "--catalog",
    "catalog_url",
    metavar="URL",
    default=None,
    help="Catalog to use (default: $PIXELFLEET_CATALOG, else sqlite:///pixelfleet.db).",
)


def existing_catalog_url(url: str | None) -> str:
    """The catalog URL to read (default: the settings'); a SQLite file must exist, so
    that a typo or the wrong folder is an error rather than a new, empty catalog."""
    url = url or get_settings().catalog_url
    if url.startswith("sqlite:///"):
        from pixelfleet.urls import sqlite_path

        path = sqlite_path(url)
        if path != ":memory:" and not os.path.exists(path):
            raise ConfigError(
                f"no catalog at {os.path.abspath(path)}; run a pipeline that has a [catalog]"
                " section (make demo does), or name one with --catalog or PIXELFLEET_CATALOG"
            )
    return url


def open_existing_catalog(url: str | None) -> Catalog:
    """Open the catalog to read from (see :func:`existing_catalog_url`)."""
    return open_catalog(existing_catalog_url(url))


@click.command()
@click.argument("text", required=False)
@click.option("--collection", "-c", "collections", multiple=True, help="Only this collection.")
@click.option("--bbox", metavar="W,S,E,N", help="Only items meeting this WGS84 box.")
@click.option(
    "--datetime", "when", metavar="START/END", help="Only items in this interval (.. = open)."
)
@click.option("--id", "ids", multiple=True, help="Only items with this id (repeatable).")
@click.option("--filter", "cql2", metavar="CQL2-JSON", help="A CQL2-JSON filter.")
@click.option("--sortby", default=None, metavar="FIELDS", help="e.g. -datetime or id.")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(1, MAX_LIMIT),
    default=10,
    show_default=True,
    help="How many items.",
)
@click.option("--token", default=None, help="Page token from a previous --json answer.")
@click.option("--json", "as_json", is_flag=True, help="Print a STAC FeatureCollection.")
@catalog_option
def search(
    text: str | None,
    collections: tuple[str, ...],
    bbox: str | None,
    when: str | None,
    ids: tuple[str, ...],
    cql2: str | None,
    sortby: str | None,
    limit: int,
    token: str | None,
    as_json: bool,
    catalog_url: str | None,
) -> None:
    """Search the catalog: TEXT matches titles, keys and labels (all its words)."""
    query = parse_query(
        q=text,
        collections=list(collections) or None,
        bbox=bbox,
        datetime=when,
        ids=list(ids) or None,
        filter=cql2,
        sortby=sortby,
        limit=limit,
        token=token,
    )
    with open_existing_catalog(catalog_url) as catalog:
        page = catalog.search(query)
    if as_json:
        body = {
            "type": "FeatureCollection",
            "features": page.items,
            "numberReturned": len(page.items),
            "numberMatched": page.matched,
            "next_token": page.next_token,
        }
        click.echo(json.dumps(body, indent=2))
        return
    if not page.items:
        click.echo("no items match")
        return
    for item in page.items:
        props = item.get("properties") or {}
        when_text = str(props.get("datetime") or props.get("start_datetime") or "")[:10]
        thumb = next(
            (
                a.get("href")
                for a in (item.get("assets") or {}).values()
                if "thumbnail" in (a.get("roles") or [])
            ),
            "",
        )
        collection = printable(str(item.get("collection", "")))
        click.echo(f"{when_text:<10}  {collection:<12} {printable(str(item['id']))}")
        labels = [lab for lab in props.get("labels") or [] if isinstance(lab, dict)]
        if labels:
            names = ", ".join(
                f"{lab.get('name')} {float(lab.get('confidence') or 0):.0f}%" for lab in labels[:4]
            )
            click.echo(f"{'':<10}  {'':<12} labels: {printable(names)}")
        if thumb:
            click.echo(f"{'':<10}  {'':<12} thumbnail: {printable(str(thumb))}")
    shown = len(page.items)
    total = "more than 10000" if page.matched is None else str(page.matched)
    click.echo(f"{shown} of {total} items")
    if page.next_token:
        click.echo(f"next page: --token {page.next_token}")
