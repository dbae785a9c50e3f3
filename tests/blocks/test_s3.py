"""``blocks.apply`` reading inputs from S3 and writing outputs to S3 (moto server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from blocks_helpers import NIR, RED

from pixelfleet import blocks

pytestmark = pytest.mark.s3


def test_inputs_from_s3_outputs_to_s3(s3_env: Any, tmp_path: Path) -> None:
    client = s3_env.client
    client.put_object(Bucket=s3_env.bucket, Key="in/red.tif", Body=RED.read_bytes())
    client.put_object(Bucket=s3_env.bucket, Key="in/nir.tif", Body=NIR.read_bytes())
    output = {"tile_size": 32, "dtype": "float32", "nodata": -9999, "overviews": [2]}
    common: dict[str, Any] = {"block_size": 32, "executor": "threads", "workers": 2}
    blocks.apply(
        "blocks_testfns:ndvi",
        {"red": f"{s3_env.url}/in/red.tif", "nir": f"{s3_env.url}/in/nir.tif"},
        {"ndvi": blocks.Output(f"{s3_env.url}/out/ndvi.tif", **output)},
        **common,
    )
    local = tmp_path / "ndvi.tif"
    blocks.apply(
        "blocks_testfns:ndvi",
        {"red": str(RED), "nir": str(NIR)},
        {"ndvi": blocks.Output(str(local), **output)},
        **common,
    )
    body = client.get_object(Bucket=s3_env.bucket, Key="out/ndvi.tif")["Body"].read()
    assert body == local.read_bytes()
    listed = client.list_objects_v2(Bucket=s3_env.bucket, Prefix="out/")["Contents"]
    assert [o["Key"] for o in listed] == ["out/ndvi.tif"]
