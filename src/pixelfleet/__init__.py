"""pixelfleet: turn a bucket of imagery into thumbnails and a catalog, resumably."""

__version__ = "0.1.0"
