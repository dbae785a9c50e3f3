"""The ``pixelfleet`` command: one module per subcommand, assembled in :mod:`.main`."""

__all__: list[str] = []  # the command line is the interface: ``pixelfleet --help``
