"""The ``pixelfleet`` command: one module per subcommand, assembled in :mod:`.main`."""
