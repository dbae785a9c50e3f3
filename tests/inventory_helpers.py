"""S3 Inventory reports written at test time: a manifest, its checksum and one data file."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json

from pixelfleet.storage.base import Storage

COLUMNS = ["Bucket", "Key", "Size", "LastModifiedDate", "ETag", "IsLatest", "IsDeleteMarker"]
DAY = "2026-11-20T00-00Z"


def row(
    key: str, size: int = 10, etag: str = "e1", latest: str = "true", deleted: str = "false"
) -> list[str]:
    return ["src-bucket", key, str(size), "2026-11-19T12:00:00.000Z", etag, latest, deleted]


def write_report(
    store: Storage, rows: list[list[str]], fmt: str = "CSV", prefix: str = "inv/src-bucket/daily"
) -> str:
    """Write a report whose data files are keyed from ``store``'s root; return the manifest key."""
    if fmt == "CSV":
        buf = io.StringIO()
        csv.writer(buf).writerows(rows)
        blob = gzip.compress(buf.getvalue().encode())
        data_key = f"{prefix}/data/part-0.csv.gz"
        schema = ", ".join(COLUMNS)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = [
            "bucket",
            "key",
            "size",
            "last_modified_date",
            "e_tag",
            "is_latest",
            "is_delete_marker",
        ]
        names[4] = "etag"
        cols = list(zip(*rows, strict=True))
        table = pa.table(
            {
                "bucket": list(cols[0]),
                "key": list(cols[1]),
                "size": [int(v) for v in cols[2]],
                "last_modified_date": list(cols[3]),
                "etag": list(cols[4]),
                "is_latest": [v == "true" for v in cols[5]],
                "is_delete_marker": [v == "true" for v in cols[6]],
            }
        )
        out = io.BytesIO()
        pq.write_table(table, out)
        blob = out.getvalue()
        data_key = f"{prefix}/data/part-0.parquet"
        schema = "message s3.inventory { required binary bucket (STRING); ... }"
    store.write(data_key, blob)
    manifest = {
        "sourceBucket": "src-bucket",
        "destinationBucket": "arn:aws:s3:::inv-bucket",
        "version": "2016-11-30",
        "creationTimestamp": "1795132800000",
        "fileFormat": fmt,
        "fileSchema": schema,
        "files": [
            {"key": data_key, "size": len(blob), "MD5checksum": hashlib.md5(blob).hexdigest()}
        ],
    }
    raw = json.dumps(manifest).encode()
    key = f"{prefix}/{DAY}/manifest.json"
    store.write(key, raw)
    store.write(f"{prefix}/{DAY}/manifest.checksum", hashlib.md5(raw).hexdigest().encode() + b"\n")
    return key
