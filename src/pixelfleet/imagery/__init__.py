"""Rendering without a pipeline: plain options in, image bytes out.

- :mod:`~pixelfleet.imagery.reading`: sniffing formats from bytes, size guards before
  decoding, file objects served to GDAL (used by every stage that opens a source image);
- :mod:`~pixelfleet.imagery.pictures`: :class:`ThumbnailOptions`, sizes and encoding;
- :mod:`~pixelfleet.imagery.thumbnails`: :func:`render_thumbnail` and
  :func:`render_object`, dispatching to :mod:`.rasters` (rasterio) and :mod:`.photos`
  (Pillow);
- :mod:`~pixelfleet.imagery.composite`: scene composites streamed to a COG, with
  :mod:`.bands`, :mod:`.stretch`, :mod:`.bandmath`, :mod:`.cogs` and :mod:`.histograms`.

Nothing here imports pipeline steps (:mod:`pixelfleet.ops`); ``make lint`` checks it.
Submodules are imported on their own, so that using one does not load the others.
"""

__all__: list[str] = []
