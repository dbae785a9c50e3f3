"""Named registries of implementations (storages, executors, ops), extendable by entry points.

Each registry maps an explicit name to a ``"package.module:Name"`` reference that is
imported only when used, so heavy optional backends cost nothing until chosen.
Third parties add names through the entry-point group given to the registry, or use
a ``"package.module:Name"`` reference directly where a name is expected.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

from pixelfleet.errors import ConfigError, MissingExtraError, UnknownNameError


def load_reference(ref: str) -> Any:
    """Import ``"package.module:attr"`` and return the attribute."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"reference {ref!r} must look like 'package.module:name'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UnknownNameError(f"cannot import {module_name!r} for {ref!r}: {exc}") from exc
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise UnknownNameError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


class Registry:
    """A kind of pluggable thing: name -> reference, plus an entry-point group."""

    def __init__(self, kind: str, group: str, builtins: dict[str, str], extras: dict[str, str]):
        self.kind = kind
        self.group = group
        self._refs = dict(builtins)
        self._extras = extras  # name -> extra that provides its dependencies
        self._loaded_entry_points = False

    def _load_entry_points(self) -> None:
        if self._loaded_entry_points:
            return
        self._loaded_entry_points = True
        # Imported here: importlib.metadata (and the email package it brings) is a
        # fifth of a worker's imports, and a built-in name never needs it.
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.group):
            self._refs.setdefault(ep.name, ep.value)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._load_entry_points()
        return sorted(self._refs)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Any:
        """Load the implementation registered under ``name``.

        A name that is not registered but looks like ``package.module:Name`` is loaded
        by reference, so a plug-in works without an entry point (it must be importable
        wherever it runs, workers included). An unknown name raises
        :class:`UnknownNameError` listing the valid names; a missing optional
        dependency raises :class:`MissingExtraError` naming the extra.
        """
        ref = self._refs.get(name)  # a built-in name wins over an entry point's
        if ref is None:
            self._load_entry_points()
            ref = self._refs.get(name)
        if ref is None and ":" in name:
            ref = name
        if ref is None:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            )
        try:
            return load_reference(ref)
        except UnknownNameError as exc:
            extra = self._extras.get(name)
            if extra and isinstance(exc.__cause__, ModuleNotFoundError):
                raise MissingExtraError(
                    f"{self.kind} {name!r} needs optional dependencies: "
                    f"pip install 'pixelfleet[{extra}]'"
                ) from exc
            raise
