"""Source objects from an S3 Inventory report instead of a listing.

An inventory report is a ``manifest.json`` (with ``manifest.checksum``, the MD5 of the
manifest, beside it) naming data files in CSV (gzip), Parquet or ORC whose columns
are the manifest's ``fileSchema``. Reading one:

1. ``manifest.checksum`` must match the manifest's MD5, or the report is refused
   (:class:`~pixelfleet.errors.InventoryError`); so must each data file's
   ``MD5checksum``.
2. Rows become entries (key, size, etag, modification time). CSV keys are
   URL-encoded by S3 and are decoded; Parquet and ORC keys are plain. Folder markers
   (``dir/``), delete markers and non-current versions are left out.
3. Keys must lie under the pipeline source's prefix (``s3://bucket/prefix``) and match
   its include/exclude globs and ``content_types`` (judged from the extension: an
   inventory has no content type; the bytes are sniffed when the object is read).

Objects listed but deleted by the time a worker reads them end up as
``skipped-missing``, not as failures.

Entries come out sorted by key within each data file (an inventory is not sorted
across files), so ``partition = { by = "prefix" }`` may split a prefix across tasks.
The manifest is read from any storage URL (``s3://``, ``file://``, ``memory://``);
its data files are found relative to the manifest's folder.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import posixpath
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pixelfleet.errors import InventoryError, MissingExtraError, ObjectNotFoundError
from pixelfleet.models import Entry
from pixelfleet.settings import Settings, get_settings
from pixelfleet.sources.base import Source
from pixelfleet.sources.listing import compile_globs, extensions_for
from pixelfleet.storage import open_storage
from pixelfleet.storage.base import Storage

FORMATS = ("CSV", "Parquet", "ORC")


@dataclass(frozen=True)
class DataFile:
    """One data file of a report: its key (relative to the report's root) and checksum."""

    key: str
    size: int
    md5: str


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says."""

    url: str
    source_bucket: str
    file_format: str
    columns: tuple[str, ...]
    files: tuple[DataFile, ...]
    created: float = 0.0


def split_url(url: str) -> tuple[str, str]:
    """``(folder URL, file name)`` of the manifest's URL."""
    folder, _, name = url.rstrip("/").rpartition("/")
    if not folder or not name:
        raise InventoryError(
            f"inventory {url!r} must name a manifest.json, e.g. "
            "s3://inv-bucket/src-bucket/daily/2026-11-20T00-00Z/manifest.json"
        )
    return folder, name


def read_manifest(url: str, settings: Settings | None = None) -> tuple[Manifest, Storage]:
    """Read and verify a manifest; return it and a storage rooted where its data files are."""
    settings = settings or get_settings()
    folder_url, name = split_url(url)
    folder = open_storage(folder_url, settings)
    try:
        raw = folder.read(name)
    except ObjectNotFoundError:
        raise InventoryError(f"inventory manifest {url} does not exist; check the URL") from None
    checksum_name = posixpath.splitext(name)[0] + ".checksum"
    try:
        expected = folder.read(checksum_name).decode("ascii", "replace").split()
    except ObjectNotFoundError:
        raise InventoryError(
            f"inventory manifest {url} has no {checksum_name} beside it: cannot verify it "
            "(S3 writes one with every report; copy it along with the manifest)"
        ) from None
    actual = hashlib.md5(raw).hexdigest()
    if not expected or expected[0].lower() != actual:
        raise InventoryError(
            f"inventory manifest {url} fails its checksum: {checksum_name} says "
            f"{expected[0] if expected else '(empty)'}, the manifest's MD5 is {actual}; "
            "the report is incomplete or was changed: use another day's report"
        )
    manifest = parse_manifest(raw, url)
    root = open_storage(report_root(folder_url, [f.key for f in manifest.files]), settings)
    return manifest, root


def parse_manifest(raw: bytes, url: str) -> Manifest:
    """Parse ``manifest.json`` text."""
    try:
        data = json.loads(raw)
        fmt = str(data["fileFormat"])
        files = tuple(
            DataFile(str(f["key"]), int(f.get("size", 0)), str(f.get("MD5checksum", "")).lower())
            for f in data["files"]
        )
        schema = str(data.get("fileSchema", ""))
        source_bucket = str(data["sourceBucket"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InventoryError(f"inventory manifest {url} is not valid: {exc!r}") from None
    match = {f.lower(): f for f in FORMATS}.get(fmt.lower())
    if match is None:
        raise InventoryError(
            f"inventory manifest {url}: fileFormat {fmt!r} is not one of {', '.join(FORMATS)}"
        )
    # Parquet/ORC schemas are message definitions; those files carry their own columns.
    columns = tuple(c.strip() for c in schema.split(",") if c.strip()) if match == "CSV" else ()
    if match == "CSV" and ("Key" not in columns or "Bucket" not in columns):
        raise InventoryError(
            f"inventory manifest {url}: fileSchema {schema!r} has no Bucket and Key columns"
        )
    created = float(data.get("creationTimestamp", 0) or 0) / 1000.0
    return Manifest(url, source_bucket, match, columns, files, created)


def report_root(folder_url: str, data_keys: Sequence[str]) -> str:
    """The URL data-file keys are relative to: the destination bucket's root, found as
    the part of the manifest's folder before the data keys' leading folders.

    ``s3://inv/pre/src/cfg/2026-11-20T00-00Z`` with data key ``pre/src/cfg/data/x.csv.gz``
    gives ``s3://inv``.
    """
    scheme, sep, path = folder_url.partition("://")
    if not sep:
        scheme, path = "", folder_url
    parts = path.rstrip("/").split("/")[:-1]  # without the date folder
    if not data_keys:
        return folder_url
    first = data_keys[0]
    for start in range(len(parts)):
        suffix = "/".join(parts[start:])
        if suffix and first.startswith(suffix + "/"):
            root = "/".join(parts[:start])
            return f"{scheme}{sep}{root}" if sep else (root or "/")
    return folder_url


def inventory_entries(
    manifest: Manifest,
    root: Storage,
    source_url: str,
    include: Sequence[str] = ("**/*",),
    exclude: Sequence[str] = (),
    ignore_case: bool = True,
    content_types: Sequence[str] = (),
) -> Iterator[Entry]:
    """The report's objects that belong to the pipeline's source, as entries."""
    _, prefix = source_bucket_prefix(source_url, manifest)
    wanted = compile_globs(include, ignore_case)
    unwanted = compile_globs(exclude, ignore_case)
    extensions = extensions_for(content_types)
    base = f"{prefix}/" if prefix else ""
    for data_file in manifest.files:
        rows = sorted(read_rows(manifest, root, data_file), key=lambda r: r[0])
        for key, size, etag, mtime in rows:
            if not key.startswith(base) or key.endswith("/"):
                continue
            rel = key[len(base) :]
            if not rel or not wanted(rel) or unwanted(rel):
                continue
            if extensions and posixpath.splitext(rel)[1].lower() not in extensions:
                continue
            yield Entry(rel, size, etag, mtime)


def source_bucket_prefix(source_url: str, manifest: Manifest) -> tuple[str, str]:
    """The source's bucket and prefix, checked against the report's source bucket."""
    scheme, sep, rest = source_url.partition("://")
    if sep and scheme.lower() == "s3":
        bucket, _, prefix = rest.partition("/")
        if bucket != manifest.source_bucket:
            raise InventoryError(
                f"the inventory {manifest.url} lists bucket {manifest.source_bucket!r}, but the "
                f"pipeline's source is {source_url!r}; use source.url = "
                f"'s3://{manifest.source_bucket}'"
            )
        return bucket, prefix.strip("/")
    # A local or in-memory mirror of the bucket: keys are relative to its root.
    return manifest.source_bucket, ""


def read_rows(
    manifest: Manifest, root: Storage, data_file: DataFile
) -> list[tuple[str, int, str, float]]:
    """``(key, size, etag, mtime)`` of a data file's current objects (checksum verified)."""
    try:
        blob = root.read(data_file.key)
    except ObjectNotFoundError:
        raise InventoryError(
            f"inventory data file {root.describe(data_file.key)} listed in {manifest.url} does "
            "not exist"
        ) from None
    if data_file.md5 and hashlib.md5(blob).hexdigest() != data_file.md5:
        raise InventoryError(
            f"inventory data file {root.describe(data_file.key)} fails its MD5 checksum in "
            f"{manifest.url}; the report is damaged: use another day's report"
        )
    if manifest.file_format == "CSV":
        return _csv_rows(blob, manifest.columns, root.describe(data_file.key))
    rows = []
    for rec in _columnar_records(blob, manifest.file_format):
        if str(rec.get("IsDeleteMarker", "false")).lower() == "true":
            continue
        if str(rec.get("IsLatest", "true")).lower() == "false":
            continue
        key = str(rec["Key"])
        rows.append(
            (
                key,
                int(rec.get("Size") or 0),
                str(rec.get("ETag") or "").strip('"'),
                _timestamp(rec.get("LastModifiedDate")),
            )
        )
    return rows


def _csv_rows(blob: bytes, columns: Sequence[str], where: str) -> list[tuple[str, int, str, float]]:
    """The current objects of a CSV data file, read by column position (a million rows
    of an inventory are planned in seconds, so no dict is made per row)."""
    at = {name: i for i, name in enumerate(columns)}
    if "Key" not in at:
        raise InventoryError(f"inventory data file {where}: the manifest's fileSchema has no Key")
    key_at, size_at, etag_at, time_at = (
        at.get(n) for n in ("Key", "Size", "ETag", "LastModifiedDate")
    )
    latest_at, deleted_at = at.get("IsLatest"), at.get("IsDeleteMarker")
    unquote = urllib.parse.unquote_plus
    stamps: dict[str, float] = {}  # reports repeat the same times many times over
    rows = []
    for rec in _csv_records(blob, columns, where):
        if deleted_at is not None and rec[deleted_at].lower() == "true":
            continue
        if latest_at is not None and rec[latest_at].lower() == "false":
            continue
        stamp = rec[time_at] if time_at is not None else ""
        mtime = stamps.get(stamp)
        if mtime is None:
            mtime = stamps[stamp] = _timestamp(stamp)
        key = rec[key_at]  # type: ignore[index]
        rows.append(
            (
                unquote(key) if "%" in key or "+" in key else key,
                int(rec[size_at] or 0) if size_at is not None else 0,
                rec[etag_at].strip('"') if etag_at is not None else "",
                mtime,
            )
        )
    return rows


def _csv_records(blob: bytes, columns: Sequence[str], where: str) -> Iterator[list[str]]:
    try:
        text = gzip.decompress(blob).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InventoryError(
            f"inventory data file {where} is not gzip-compressed CSV: {exc}"
        ) from None
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        if len(row) != len(columns):
            raise InventoryError(
                f"inventory data file {where}: a row has {len(row)} fields, the manifest's "
                f"fileSchema {len(columns)}"
            )
        yield row


def _columnar_records(blob: bytes, fmt: str) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow as pa
    except ImportError as exc:
        raise MissingExtraError(
            f"{fmt} inventory reports need pyarrow: pip install 'pixelfleet[parquet]'"
        ) from exc
    buffer = pa.BufferReader(blob)
    if fmt == "Parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(buffer)
    else:
        import pyarrow.orc as orc

        table = orc.ORCFile(buffer).read()
    names = {n.lower(): n for n in table.column_names}
    wanted = ["key", "size", "etag", "last_modified_date", "is_latest", "is_delete_marker"]
    alias = {
        "key": "Key",
        "size": "Size",
        "etag": "ETag",
        "last_modified_date": "LastModifiedDate",
        "is_latest": "IsLatest",
        "is_delete_marker": "IsDeleteMarker",
    }
    if "key" not in names:
        raise InventoryError(f"{fmt} inventory data file has no 'key' column")
    columns = {alias[w]: table.column(names[w]).to_pylist() for w in wanted if w in names}
    for i in range(table.num_rows):
        yield {name: values[i] for name, values in columns.items()}


def _timestamp(value: Any) -> float:
    if value is None or value == "":
        return 0.0
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value) / 1000.0 if value > 1e11 else float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


class InventorySource(Source):
    """The source's objects as an S3 Inventory report lists them (no bucket listing).

    The manifest is read and its checksum verified when the source is made, so a bad
    report fails before the run starts.
    """

    name = "s3-inventory"

    def __init__(
        self,
        manifest_url: str,
        source_url: str,
        include: Sequence[str] = ("**/*",),
        exclude: Sequence[str] = (),
        ignore_case: bool = True,
        content_types: Sequence[str] = (),
        settings: Settings | None = None,
    ):
        self.manifest_url = manifest_url
        self.source_url = source_url
        self._manifest, self._root = read_manifest(manifest_url, settings)
        self._filters = (list(include), list(exclude), ignore_case, list(content_types))
        source_bucket_prefix(source_url, self._manifest)  # the wrong bucket fails here

    def entries(self) -> Iterator[Entry]:
        """The report's objects under the source, through the globs and content types."""
        include, exclude, ignore_case, content_types = self._filters
        return inventory_entries(
            self._manifest, self._root, self.source_url, include, exclude, ignore_case,
            content_types,
        )  # fmt: skip

    def describe(self) -> str:
        """``S3 Inventory MANIFEST``."""
        return f"S3 Inventory {self.manifest_url}"
