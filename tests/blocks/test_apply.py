"""``blocks.apply`` on real Landsat bands and tiny made-up rasters: values, the file
written (tiles, overviews, statistics, COG layout), nodata, footprints, the block
object, and errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from blocks_helpers import NIR, NODATA, RED, numpy_ndvi, read

from pixelfleet import blocks
from pixelfleet.blocks.tiff import read_directories
from pixelfleet.errors import ConfigError, InputError


def run_ndvi(path: Path, executor: str = "inline", **kw: Any) -> blocks.ApplyResult:
    output = blocks.Output(str(path), dtype="float32", nodata=NODATA, tile_size=32, **kw)
    return blocks.apply(
        "blocks_testfns:ndvi",
        {"red": str(RED), "nir": str(NIR)},
        {"ndvi": output},
        block_size=32,
        executor=executor,
        workers=2,
    )


def test_ndvi_of_real_landsat_bands_equals_the_whole_array_computation(tmp_path: Path) -> None:
    result = run_ndvi(tmp_path / "ndvi.tif", overviews=[2, 4])
    want = numpy_ndvi()
    with rasterio.open(tmp_path / "ndvi.tif") as out, rasterio.open(RED) as red:
        assert out.read(1).tobytes() == want.tobytes()
        assert out.transform == red.transform and out.crs == red.crs
        assert out.profile["tiled"] and out.block_shapes == [(32, 32)]
        assert out.compression.name == "deflate" and out.nodata == NODATA
        assert out.overviews(1) == [2, 4]
        # Overviews: the pixel at the centre of each cell (RIOS's "nearest").
        level = out.read(1, out_shape=(math.ceil(out.height / 4), math.ceil(out.width / 4)))
        rows = (
            np.arange(level.shape[0]) * 4
            + np.minimum(4, out.height - np.arange(level.shape[0]) * 4) // 2
        )
        cols = (
            np.arange(level.shape[1]) * 4
            + np.minimum(4, out.width - np.arange(level.shape[1]) * 4) // 2
        )
        assert np.array_equal(level, want[rows][:, cols])
        tags = out.tags(1)
    valid = want[want != NODATA].astype(np.float64)
    assert float(tags["STATISTICS_MINIMUM"]) == valid.min()
    assert float(tags["STATISTICS_MAXIMUM"]) == valid.max()
    assert float(tags["STATISTICS_MEAN"]) == pytest.approx(valid.mean(), rel=1e-12)
    assert float(tags["STATISTICS_STDDEV"]) == pytest.approx(valid.std(), rel=1e-9)
    stats = result.outputs["ndvi"].statistics[0]
    assert stats.count == valid.size and stats.total == want.size
    assert result.blocks == math.ceil(149 / 32) * math.ceil(112 / 32)


def test_the_output_is_a_cloud_optimized_geotiff(tmp_path: Path) -> None:
    from rio_cogeo.cogeo import cog_validate

    run_ndvi(tmp_path / "ndvi.tif", overviews=[2, 4])
    valid, errors, warnings = cog_validate(str(tmp_path / "ndvi.tif"))
    assert valid, errors
    directories = read_directories(str(tmp_path / "ndvi.tif"))
    assert [(d.width, d.height) for d in directories] == [(149, 112), (75, 56), (38, 28)]
    # Smallest overview's tiles first, full resolution last.
    firsts = [d.tiles[0][0] for d in directories]
    assert firsts == sorted(firsts, reverse=True)


def test_executors_and_worker_counts_write_the_same_bytes(tmp_path: Path) -> None:
    run_ndvi(tmp_path / "inline.tif", "inline", overviews=[2, 4])
    run_ndvi(tmp_path / "threads.tif", "threads", overviews=[2, 4])
    first = (tmp_path / "inline.tif").read_bytes()
    assert (tmp_path / "threads.tif").read_bytes() == first


def test_average_overviews_leave_nodata_out(
    tmp_path: Path, make_raster: Callable[..., Path]
) -> None:
    data = np.arange(64, dtype="int16").reshape(8, 8)
    data[0, 0] = data[0, 1] = data[1, 0] = -1  # three of the top-left cell's four
    data[6:8, 6:8] = -1  # the whole bottom-right cell
    src = make_raster("in.tif", data, Affine(10, 0, 0, 0, -10, 80), nodata=-1)
    out = blocks.Output(
        str(tmp_path / "out.tif"),
        nodata=-1,
        overviews=[2],
        overview_resampling="average",
        tile_size=16,
    )
    blocks.apply(
        "blocks_testfns:stack", {"a": str(src)}, {"a": out}, block_size=3, executor="inline"
    )
    with rasterio.open(out.url) as dst:
        level = dst.read(1, out_shape=(4, 4))
    expected = data.astype(np.float64).reshape(4, 2, 4, 2).transpose(0, 2, 1, 3).reshape(4, 4, 4)
    masked = np.ma.masked_equal(expected, -1).mean(axis=2).filled(-1)
    assert np.array_equal(level, masked.astype("f4"))
    assert level[0, 0] == 9 and level[3, 3] == -1


def test_nodata_reaches_the_function_and_the_output(
    tmp_path: Path, make_raster: Callable[..., Path]
) -> None:
    t = Affine(10, 0, 0, 0, -10, 100)
    a = np.full((10, 10), 7, "uint8")
    a[2, 3] = 255
    b = np.ones((10, 10), "float32")
    b[5, 5] = np.nan
    seen: list[dict[str, Any]] = []
    out = blocks.Output(str(tmp_path / "out.tif"), dtype="float32", nodata=NODATA, overviews=[])
    result = blocks.apply(
        "blocks_testfns:describe",
        {"a": str(make_raster("a.tif", a, t, nodata=255)), "b": str(make_raster("b.tif", b, t))},
        {"out": out},
        args={"seen": seen},
        block_size=5,
        executor="inline",
    )
    assert all(s["nodata"] == {"a": 255.0, "b": None} for s in seen)
    got = read(out.url, 1)
    assert got[2, 3] == NODATA and got[5, 5] == NODATA and got[0, 0] == 7
    assert (got == NODATA).sum() == 2
    with rasterio.open(out.url) as dst:
        assert dst.nodata == NODATA
    stats = result.outputs["out"].statistics[0]
    assert (stats.count, stats.minimum, stats.maximum) == (98, 7.0, 7.0)


def test_union_and_intersection_footprints(
    tmp_path: Path, make_raster: Callable[..., Path]
) -> None:
    # a: 10 x 10 pixels from (0, 100); b: 10 x 10 pixels from (50, 70), same grid.
    a = make_raster("a.tif", np.full((10, 10), 1, "uint8"), Affine(10, 0, 0, 0, -10, 100), nodata=0)
    b = make_raster("b.tif", np.full((10, 10), 2, "uint8"), Affine(10, 0, 50, 0, -10, 70), nodata=0)
    grids = {}
    for footprint in ("intersection", "union"):
        out = blocks.Output(str(tmp_path / f"{footprint}.tif"), dtype="float32", nodata=NODATA)
        result = blocks.apply(
            "blocks_testfns:describe",
            {"a": str(a), "b": str(b)},
            {"out": out},
            footprint=footprint,
            block_size=4,
            executor="inline",
        )
        grids[footprint] = (result.grid.transform, result.grid.width, result.grid.height)
        data = read(out.url, 1)
        if footprint == "intersection":
            assert data.shape == (7, 5) and (data == 1).all()
        else:
            assert data.shape == (13, 15)
            assert (data[3:10, 5:10] == 1).all()  # where both have data
            assert (data == NODATA).sum() == data.size - 35
    assert grids["intersection"] == (Affine(10, 0, 50, 0, -10, 70), 5, 7)
    assert grids["union"] == (Affine(10, 0, 0, 0, -10, 100), 15, 13)


def test_the_block_object(tmp_path: Path, make_raster: Callable[..., Path]) -> None:
    data = np.arange(100, dtype="uint16").reshape(10, 10)
    big = np.arange(144, dtype="uint16").reshape(12, 12) + 1000
    # a is the reference; big extends one pixel beyond it on every side.
    a = make_raster("a.tif", data, Affine(10, 0, 0, 0, -10, 100), nodata=None)
    b = make_raster("b.tif", big, Affine(10, 0, -10, 0, -10, 110), nodata=None)
    seen: list[dict[str, Any]] = []
    out = blocks.Output(str(tmp_path / "o.tif"), overviews=[])
    blocks.apply(
        "blocks_testfns:describe",
        {"a": str(a), "b": str(b)},
        {"out": out},
        args={"seen": seen},
        grid="a",
        footprint="reference",
        block_size=(4, 6),
        overlap=2,
        executor="inline",
    )
    assert [s["index"] for s in seen] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    first = seen[0]
    assert first["shape"] == (10, 8)
    assert first["transform"] == Affine(10, 0, -20, 0, -10, 120)
    arr_a, arr_b = first["arrays"]["a"][0], first["arrays"]["b"][0]
    # The edge rule: past an input's extent the margin is its nodata value, or 0.
    assert (arr_a[:2] == 0).all() and (arr_a[:, :2] == 0).all()
    assert np.array_equal(arr_a[2:, 2:], data[:8, :6])
    # Where an input has pixels beyond the grid, the margin holds them.
    assert np.array_equal(arr_b[1:, 1:], big[:9, :7]) and (arr_b[0] == 0).all()
    last = seen[-1]
    assert last["window"].col_off == 8 and last["window"].width == 2
    assert last["shape"] == (8, 6)
    assert np.array_equal(read(out.url, 1), data.astype("f4"))


def test_block_coordinates_and_masks() -> None:
    block = blocks.Block(
        inputs={"x": np.array([[[1, 0], [3, 4]]], "int16")},
        nodata={"x": 0},
        window=rasterio.windows.Window(0, 0, 2, 2),
        index=(0, 0),
        overlap=0,
        transform=Affine(30, 0, 1000, 0, -30, 2000),
        crs=None,
    )
    x, y = block.coords()
    assert x.tolist() == [[1015, 1045], [1015, 1045]] and y.tolist() == [[1985, 1985], [1955, 1955]]
    assert block.mask("x").tolist() == [[[True, False], [True, True]]]
    assert block.valid().tolist() == [[True, False], [True, True]]


def test_args_reach_worker_processes_as_json() -> None:
    from pixelfleet.blocks.spec import decode_args, encode_args

    value = SimpleNamespace(table=np.arange(6, dtype="u2").reshape(2, 3), scale=0.5, names=["a"])
    back = decode_args(encode_args(value))
    assert isinstance(back, SimpleNamespace) and back.scale == 0.5 and back.names == ["a"]
    assert back.table.dtype == np.uint16 and back.table.tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(
        ConfigError, match="args\\['f'\\]: a builtin_function_or_method cannot be sent"
    ):
        encode_args({"f": len})


def test_a_raising_function_fails_with_its_message_and_the_block_window(tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    with pytest.raises(blocks.BlockFunctionError) as caught:
        blocks.apply(
            "blocks_testfns:raise_on_block",
            {"red": str(RED)},
            {"out": str(out)},
            args={"index": [1, 2]},
            block_size=32,
            executor="inline",
        )
    message = str(caught.value)
    assert "blocks_testfns:raise_on_block failed on block (1, 2)" in message
    assert "rows 32-64, columns 64-96" in message
    assert "ZeroDivisionError: no good at (1, 2)" in message
    assert not out.exists()
    assert isinstance(caught.value, InputError)  # permanent: a retry would fail the same way


def test_a_wrong_output_shape_names_the_shapes_that_would_do(tmp_path: Path) -> None:
    with pytest.raises(blocks.BlockFunctionError, match=r"return \(bands, 32, 32\)"):
        blocks.apply(
            "blocks_testfns:wrong_shape",
            {"red": str(RED)},
            {"out": str(tmp_path / "o.tif")},
            block_size=32,
            executor="inline",
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grid": "green"}, "grid 'green' is not an input; choose one of: red"),
        ({"footprint": "both"}, "footprint 'both' is not known"),
        ({"resampling": "fancy"}, "resampling 'fancy' is not known"),
        ({"executor": "cloud"}, "executor 'cloud' is not known"),
        ({"block_size": 0}, "block_size 0 must be"),
        ({"overlap": -1}, "overlap -1 must be"),
    ],
)
def test_bad_settings_are_refused_with_the_valid_choices(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        blocks.apply(
            "blocks_testfns:ndvi", {"red": str(RED)}, {"o": str(tmp_path / "o.tif")}, **kwargs
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compress": "jpeg"}, "compress 'jpeg' is not supported"),
        ({"tile_size": 100}, "tile_size 100 must be a multiple of 16"),
        ({"creation_options": {"tiled": "NO"}}, "TILED are set by pixelfleet"),
        ({"overviews": [4, 6]}, "must rise, each a multiple of the one before"),
        ({"dtype": "complex64"}, "dtype 'complex64' is not supported"),
    ],
)
def test_bad_outputs_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        blocks.Output("x.tif", **kwargs)


def test_inputs_that_do_not_overlap(tmp_path: Path, make_raster: Callable[..., Path]) -> None:
    a = make_raster("a.tif", np.ones((4, 4), "uint8"), Affine(10, 0, 0, 0, -10, 40))
    b = make_raster("b.tif", np.ones((4, 4), "uint8"), Affine(10, 0, 100, 0, -10, 40))
    with pytest.raises(InputError, match="the inputs do not overlap"):
        blocks.apply(
            "blocks_testfns:stack", {"a": str(a), "b": str(b)}, {"a": str(tmp_path / "x.tif")}
        )


def test_a_missing_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.tif: input not found"):
        blocks.apply("blocks_testfns:stack", {"a": str(tmp_path / "nope.tif")}, {"a": "x.tif"})


def test_functions_that_cannot_travel_to_processes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="define it at the top level"):
        blocks.apply(
            lambda block, args: {},  # noqa: ARG005
            {"red": str(RED)},
            {"o": str(tmp_path / "o.tif")},
            executor="local",
        )


def test_a_run_without_outputs_gathers_in_args_inline() -> None:
    # RIOS's "accumulate in otherArgs" example: no output rasters, the mean of a band.
    from blocks_testfns import accumulate

    totals = {"sum": 0.0, "count": 0}
    result = blocks.apply(
        accumulate, {"red": str(RED)}, {}, args=totals, block_size=50, executor="inline"
    )
    assert result.outputs == {} and result.blocks == 9
    with rasterio.open(RED) as src:
        assert totals["sum"] / totals["count"] == pytest.approx(src.read(1).mean())


def test_boolean_arrays_are_written_as_bytes(tmp_path: Path) -> None:
    out = tmp_path / "mask.tif"
    blocks.apply(
        "blocks_testfns:bright", {"red": str(RED)}, {"mask": str(out)}, args={"over": 1000}
    )
    with rasterio.open(out) as dst, rasterio.open(RED) as src:
        assert dst.dtypes == ("uint8",)
        assert np.array_equal(dst.read(1), (src.read(1) > 1000).astype("uint8"))


def test_two_outputs_to_one_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="outputs 'a' and 'b' both go to"):
        blocks.apply("blocks_testfns:stack", {"a": str(RED)}, {"a": "x.tif", "b": "x.tif"})
