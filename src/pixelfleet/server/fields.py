"""The Fields extension: which parts of each item a search answer holds.

GET takes ``fields=properties.datetime,-assets`` (``+`` or no sign includes, ``-``
excludes); POST takes ``{"fields": {"include": [...], "exclude": [...]}}``. Names are
dotted paths into the item (``properties.eo:cloud_cover``). What comes back:

- no ``fields`` at all: the whole item;
- ``fields=`` (empty), ``{}``, or empty or null ``include`` and ``exclude``: the default
  set, :data:`DEFAULT` (``type``, ``stac_version``, ``id``, ``collection``, ``geometry``,
  ``bbox``, ``links``, ``assets`` and the item's datetime or start/end datetimes);
- only excludes (GET, or POST without an ``include`` key): the whole item less those;
- excludes with an empty or null ``include`` (POST): the default set less those;
- includes: those and :data:`IDENTITY` (what says which item this is), less the
  excludes, except that a field named in both, or an exclude that is a parent of an
  include (``-properties,+properties.gsd``), keeps the include.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from pixelfleet.errors import BadQueryError

#: What the default set holds (the STAC API's, and ``collection`` and the datetimes an item
#: without ``datetime`` needs to stay valid).
DEFAULT = (
    "type",
    "stac_version",
    "id",
    "collection",
    "geometry",
    "bbox",
    "links",
    "assets",
    "properties.datetime",
    "properties.start_datetime",
    "properties.end_datetime",
)
#: What an answer cut down to includes still holds, unless excluded by name.
IDENTITY = ("type", "id", "collection", "links")
MAX_FIELDS = 100
_EXAMPLE = "fields=id,properties.datetime,-assets or {'include': ['id'], 'exclude': ['assets']}"


@dataclass(frozen=True)
class Fields:
    """A client's choice of fields; :meth:`apply` cuts an item down to it."""

    start: Literal["all", "default", "none"]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def from_param(cls, text: str) -> Fields:
        """From GET's comma-separated ``fields`` (a ``+`` read as a space is a ``+``)."""
        include, exclude = [], []
        for part in text.split(","):
            name = part.strip()
            if not name:
                continue
            if name.startswith("-"):
                exclude.append(_path(name[1:], "fields"))
            else:
                include.append(_path(name.removeprefix("+"), "fields"))
        return cls._build(include, exclude, include_given=bool(include), text=text)

    @classmethod
    def from_body(cls, value: Any) -> Fields:
        """From POST's ``{"include": [...], "exclude": [...]}``."""
        if not isinstance(value, dict) or set(value) - {"include", "exclude"}:
            raise BadQueryError(
                f"fields {_short(value)} must be an object with 'include' and/or 'exclude'"
                f" lists of field names, e.g. {_EXAMPLE}"
            )
        lists = {}
        for key in ("include", "exclude"):
            names = value.get(key)
            if names is None:
                names = []
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise BadQueryError(
                    f"fields.{key} {_short(names)} must be a list of field names, e.g. {_EXAMPLE}"
                )
            lists[key] = [_path(n, f"fields.{key}") for n in names]
        return cls._build(
            lists["include"], lists["exclude"], include_given="include" in value, text=value
        )

    @classmethod
    def _build(
        cls, include: list[str], exclude: list[str], include_given: bool, text: Any
    ) -> Fields:
        if len(include) + len(exclude) > MAX_FIELDS:
            raise BadQueryError(f"fields {_short(text)} names more than {MAX_FIELDS} fields")
        if include:
            return cls("none", tuple(include), tuple(exclude))
        if exclude and not include_given:
            return cls("all", (), tuple(exclude))
        return cls("default", (), tuple(exclude))

    def apply(self, item: dict[str, Any]) -> dict[str, Any]:
        """The item cut down to these fields (the item itself may be changed)."""
        if self.start == "all":
            out = item
        else:
            out = {}
            for name in [*IDENTITY, *self.include] if self.include else DEFAULT:
                _copy(item, out, name.split("."))
        for name in self.exclude:
            if not any(i == name or i.startswith(name + ".") for i in self.include):
                _drop(out, name.split("."))
        return out


def _path(name: str, what: str) -> str:
    name = name.strip()
    parts = name.split(".")
    if not name or len(name) > 200 or not all(parts):
        raise BadQueryError(f"{what}: {name!r} is not a field name; use e.g. {_EXAMPLE}")
    return name


def _copy(source: dict[str, Any], target: dict[str, Any], path: list[str]) -> None:
    head, rest = path[0], path[1:]
    if head not in source:
        return
    if not rest:
        target[head] = source[head]
        return
    inner = source[head]
    if isinstance(inner, dict):
        branch = target.setdefault(head, {})
        if isinstance(branch, dict):
            _copy(inner, branch, rest)


def _drop(target: dict[str, Any], path: list[str]) -> None:
    head, rest = path[0], path[1:]
    if head not in target:
        return
    if not rest:
        del target[head]
        return
    inner = target[head]
    if isinstance(inner, dict):
        inner = target[head] = copy.copy(inner)  # never change a dict shared with the item
        _drop(inner, rest)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
