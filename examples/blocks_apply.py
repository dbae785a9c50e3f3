"""NDVI and a 5 x 5 focal mean of the sample Landsat bands, with ``blocks.apply``.

    .venv/bin/python examples/blocks_apply.py          # writes demo-output/blocks/

The same two examples docs/blocks.md ports from RIOS.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # blocks_examples, for this script and its worker processes

from blocks_examples import focal_mean, ndvi  # noqa: E402

from pixelfleet import blocks  # noqa: E402

SCENE = HERE.parent / "demo" / "bucket" / "landsat" / "sr_20200829"
OUT = HERE.parent / "demo-output" / "blocks"


def main() -> None:
    """Write both products into demo-output/blocks."""
    OUT.mkdir(parents=True, exist_ok=True)
    result = blocks.apply(
        ndvi,
        inputs={"red": str(SCENE / "sr_b4_20200829.tif"), "nir": str(SCENE / "sr_b5_20200829.tif")},
        outputs={"ndvi": blocks.Output(str(OUT / "ndvi.tif"), dtype="float32", nodata=-9999)},
        block_size=64,
        executor="local",
        workers=2,
        progress=True,
    )
    stats = result.outputs["ndvi"].statistics[0]
    print(f"ndvi: {OUT / 'ndvi.tif'}, mean {stats.mean:.3f}, {stats.valid_percent:.0f}% valid")
    result = blocks.apply(
        focal_mean,
        inputs={"image": str(SCENE / "sr_b5_20200829.tif")},
        outputs={"mean": str(OUT / "nir_mean5.tif")},
        args={"size": 5},
        block_size=64,
        overlap=2,
        executor="inline",
    )
    print(f"focal mean: {OUT / 'nir_mean5.tif'} ({result.blocks} blocks)")


if __name__ == "__main__":
    main()
