"""Writing a streamed composite out: overviews, the Cloud Optimized GeoTIFF, the picture.

The composite is first streamed, full resolution and uncompressed, to a temporary
GeoTIFF. :func:`write_outputs` then

1. builds the overviews itself, each level from the one before by averaging 2 x 2
   pixels weighted by opacity (transparent pixels do not darken their neighbours),
   reading the level below in stripes: a few MB at a time;
2. hands GDAL's COG driver a VRT of the full-resolution file with those levels as its
   overviews, so the driver only tiles, compresses and orders the IFDs (computing the
   overviews itself costs about 40% more time and 40 MB more memory, measured);
3. renders the picture from the smallest level that is large enough.
"""

from __future__ import annotations

import html
import os
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from PIL import Image, ImageDraw, ImageFont
from rasterio.enums import Resampling
from rasterio.windows import Window

from pixelfleet.imagery.pictures import encode, fit_size
from pixelfleet.imagery.rasters import GDAL_OPTIONS

#: Compression names accepted for the COG, mapped to GDAL's.
COMPRESSIONS = {"deflate": "DEFLATE", "zstd": "ZSTD", "lzw": "LZW", "webp": "WEBP", "none": "NONE"}

# Rows of a level read at once to make the next one (even, so pairs never straddle).
_CHUNK_ROWS = 512


def write_outputs(
    path: str,
    workdir: str,
    *,
    cog: bool = True,
    compress: str = "deflate",
    blocksize: int = 512,
    image_size: int | None = 1024,
    image_format: str = "png",
    quality: int = 90,
    title: str | None = None,
    background: str = "black",
) -> tuple[str | None, bytes | None]:
    """Turn the streamed RGBA (or grey + alpha) file at ``path`` into a COG in
    ``workdir`` and an encoded picture; returns (COG path or None, picture or None).
    The temporary files, ``path`` included, are removed."""
    levels = build_overviews(path, workdir, blocksize)
    source = path if not levels else overview_vrt(path, levels, workdir)
    cog_path = None
    if cog:
        cog_path = os.path.join(workdir, "composite-cog.tif")
        options = cog_options(compress, blocksize)
        if levels:
            options["OVERVIEWS"] = "FORCE_USE_EXISTING"
        with rasterio.Env(**GDAL_OPTIONS):
            rasterio.shutil.copy(source, cog_path, driver="COG", **options)
    image = None
    if image_size:
        image = render_image(
            cog_path or source, image_size, image_format, quality, title, background
        )
    for name in [path, *levels] + ([source] if source != path else []):
        os.unlink(name)
    return cog_path, image


def cog_options(compress: str = "deflate", blocksize: int = 512) -> dict[str, Any]:
    """Creation options of GDAL's COG driver for a composite.

    DEFLATE and ZSTD at level 1: on Landsat composites, 1.5x faster than the default
    level with files under 1% larger (measured: docs/benchmarks.md). One thread: the
    extra compression threads cost more memory than they saved time on 2 cores, and
    workers run several tasks at once anyway.
    """
    options: dict[str, Any] = {
        "COMPRESS": COMPRESSIONS[compress],
        "BLOCKSIZE": blocksize,
        "OVERVIEW_RESAMPLING": "AVERAGE",
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": 1,
    }
    if compress in ("deflate", "zstd", "lzw"):
        options["PREDICTOR"] = "YES"
    if compress in ("deflate", "zstd"):
        options["LEVEL"] = 1
    if compress == "webp":
        options["QUALITY"] = 100
        options["LOSSLESS"] = "YES"
    return options


def build_overviews(path: str, workdir: str, blocksize: int = 512) -> list[str]:
    """Write overview levels 2, 4, 8... of an RGBA or grey + alpha file, until the
    level fits in one block, as uncompressed files in ``workdir``; returns their paths."""
    levels: list[str] = []
    previous = path
    with rasterio.Env(**GDAL_OPTIONS), rasterio.open(path) as full:
        width, height, count = full.width, full.height, full.count
        profile = {
            "driver": "GTiff",
            "count": count,
            "dtype": "uint8",
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "interleave": "pixel",
            "photometric": "RGB" if count == 4 else "MINISBLACK",
            "alpha": "YES",
            "crs": full.crs,
        }
        transform = full.transform
    factor = 1
    while max(-(-width // factor), -(-height // factor)) > blocksize:
        factor *= 2
        out_w, out_h = -(-width // factor), -(-height // factor)
        level = os.path.join(workdir, f"composite-ovr{factor}.tif")
        scale = transform @ Affine.scale(width / out_w, height / out_h)
        with (
            rasterio.Env(**GDAL_OPTIONS),
            rasterio.open(previous) as src,
            rasterio.open(level, "w", width=out_w, height=out_h, transform=scale, **profile) as dst,
        ):
            for r0 in range(0, src.height, _CHUNK_ROWS):
                rows = min(_CHUNK_ROWS, src.height - r0)
                halved = halve(src.read(window=Window(0, r0, src.width, rows)))
                out_rows = min(halved.shape[1], out_h - r0 // 2)
                dst.write(halved[:, :out_rows, :out_w], window=Window(0, r0 // 2, out_w, out_rows))
        levels.append(level)
        previous = level
    return levels


def halve(data: np.ndarray) -> np.ndarray:
    """Average 2 x 2 pixels of bands-first colour + alpha data, colour weighted by
    opacity; at odd edges, over the pixels that are there.

    Works on the four quarter-size sub-grids, so temporaries stay a quarter of the input.
    """
    bands, rows, cols = data.shape
    present: np.ndarray | None = None
    if rows % 2 or cols % 2:
        padded = np.zeros((bands, rows + rows % 2, cols + cols % 2), np.uint8)
        padded[:, :rows, :cols] = data
        present = np.zeros(padded.shape[1:], np.uint8)
        present[:rows, :cols] = 1
        data = padded
    quads = ((0, 0), (0, 1), (1, 0), (1, 1))
    alphas = [data[-1, dy::2, dx::2].astype(np.uint32) for dy, dx in quads]
    weight = alphas[0] + alphas[1] + alphas[2] + alphas[3]
    out = np.empty((bands, *weight.shape), np.uint8)
    divisor = np.maximum(weight, 1)
    for b in range(bands - 1):
        total = np.zeros(weight.shape, np.uint32)
        for (dy, dx), alpha in zip(quads, alphas, strict=True):
            total += data[b, dy::2, dx::2] * alpha
        out[b] = (total + weight // 2) // divisor
    if present is None:
        out[-1] = (weight + 2) // 4
    else:
        cells = sum(present[dy::2, dx::2].astype(np.uint32) for dy, dx in quads)
        out[-1] = (weight + cells // 2) // np.maximum(cells, 1)
    return out


def overview_vrt(path: str, levels: list[str], workdir: str) -> str:
    """A VRT of ``path`` whose bands list ``levels`` as their overviews."""
    with rasterio.Env(**GDAL_OPTIONS), rasterio.open(path) as src:
        count, width, height = src.count, src.width, src.height
        crs = html.escape(src.crs.to_wkt()) if src.crs else ""
        geotransform = ", ".join(repr(v) for v in src.transform.to_gdal())
    interps = ["Red", "Green", "Blue", "Alpha"] if count == 4 else ["Gray", "Alpha"]

    def source(name: str, band: int, tag: str) -> str:
        rel = html.escape(os.path.basename(name))
        return (
            f'<{tag}><SourceFilename relativeToVRT="1">{rel}</SourceFilename>'
            f"<SourceBand>{band}</SourceBand></{tag}>"
        )

    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><ColorInterp>{interps[b - 1]}</ColorInterp>'
        + source(path, b, "SimpleSource")
        + "".join(source(level, b, "Overview") for level in levels)
        + "</VRTRasterBand>"
        for b in range(1, count + 1)
    )
    vrt = os.path.join(workdir, "composite.vrt")
    with open(vrt, "w") as f:
        f.write(
            f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
            f"<SRS>{crs}</SRS><GeoTransform>{geotransform}</GeoTransform>{bands}</VRTDataset>"
        )
    return vrt


def render_image(
    path: str,
    size: int,
    fmt: str = "png",
    quality: int = 90,
    title: str | None = None,
    background: str = "black",
) -> bytes:
    """The picture with longest side ``size``, from the nearest overview (averaged);
    a scene smaller than that is enlarged, pixels kept square and sharp."""
    with rasterio.Env(**GDAL_OPTIONS), rasterio.open(path) as src:
        width, height = fit_size(src.width, src.height, size)
        data = src.read(out_shape=(src.count, height, width), resampling=Resampling.average)
        scale = size / max(src.width, src.height)
    mode = "RGBA" if data.shape[0] == 4 else "LA"
    image = Image.fromarray(np.ascontiguousarray(np.moveaxis(data, 0, -1)), mode)
    if scale > 1:
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(target, Image.Resampling.NEAREST)
    if title:
        image = draw_title(image, title)
    return encode(image, fmt, quality, background)


def draw_title(image: Image.Image, text: str) -> Image.Image:
    """Write ``text`` in white on a dark band above the picture (Pillow's built-in font):
    the canvas grows by the band's height, so no row of the picture is hidden."""
    image = image.convert("RGBA")
    size = max(11, round(image.width / 45))
    font = ImageFont.load_default(size=size)
    pad = max(3, size // 3)
    _left, _top, _right, bottom = ImageDraw.Draw(image).textbbox((pad, pad), text, font=font)
    band_height = round(bottom + pad)
    canvas = Image.new("RGBA", (image.width, image.height + band_height), (24, 24, 24, 255))
    canvas.paste(image, (0, band_height))
    ImageDraw.Draw(canvas).text((pad, pad), text, font=font, fill=(255, 255, 255, 255))
    return canvas
