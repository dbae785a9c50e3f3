"""pixelfleet: turn a bucket of imagery into derived products and a searchable STAC
catalog, resumably, and keep both current as the bucket changes.

The public API is what each package's ``__all__`` lists; start with
:class:`pixelfleet.runner.Runner`, :func:`pixelfleet.pipeline.load_pipeline` and the
interfaces :class:`~pixelfleet.sources.Source`, :class:`~pixelfleet.storage.Storage`,
:class:`~pixelfleet.executors.Executor`, :class:`~pixelfleet.ledger.Ledger`,
:class:`~pixelfleet.catalog.Catalog`, :class:`~pixelfleet.ops.Op` and
:class:`~pixelfleet.labelers.Labeler`. The command line is ``pixelfleet --help``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
