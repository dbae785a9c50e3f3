"""Scenes: band files grouped by a file-name pattern such as ``{scene}_B{band}.TIF``.

A pattern is matched against an object's file name (against the whole key when
the pattern holds a ``/``). ``{scene}`` names the scene, ``{band}`` the band (letters
and digits: ``4``, ``10``, ``8A``), ``*`` matches any run of characters within a
name; everything else is literal. Matching ignores case unless told otherwise,
because archives mix ``.TIF`` and ``.tif``. A pattern without ``{band}`` describes
multi-band files: each file is a scene and its bands are inside it.

A scene's id is its folder and its ``{scene}`` value (``landsat/LC08..._T1``), so
two scenes of the same name in different folders stay apart.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pixelfleet.errors import ConfigError

_FIELD = re.compile(r"\{(\w*)\}")
_FIELDS = {"scene": r"(?P<scene>[^/]+)", "band": r"(?P<band>[A-Za-z0-9]+)"}

#: The pattern of Landsat Collection 1 and 2 band files (``..._B4.TIF``).
LANDSAT_PATTERN = "{scene}_B{band}.TIF"


@dataclass(frozen=True)
class SceneMatch:
    """Where an object belongs: its scene's id, the scene's name, and its band (if any)."""

    group: str
    scene: str
    band: str | None


def pattern_regex(pattern: str) -> str:
    """Translate one scene pattern into a regular expression; bad patterns raise ConfigError."""
    fields = _FIELD.findall(pattern)
    unknown = sorted({f for f in fields if f not in _FIELDS})
    if unknown:
        raise ConfigError(
            f"scene pattern {pattern!r} has unknown field(s) {unknown}; use {{scene}} and "
            "{band}, e.g. '{scene}_B{band}.TIF'"
        )
    if fields.count("scene") != 1 or fields.count("band") > 1:
        raise ConfigError(
            f"scene pattern {pattern!r} must hold {{scene}} once and {{band}} at most once, "
            "e.g. '{scene}_B{band}.TIF' (band files) or '{scene}.tif' (multi-band files)"
        )
    out = []
    pos = 0
    for m in _FIELD.finditer(pattern):
        out.append(_literal(pattern[pos : m.start()]))
        out.append(_FIELDS[m.group(1)])
        pos = m.end()
    out.append(_literal(pattern[pos:]))
    return "".join(out)


def _literal(text: str) -> str:
    return "[^/]*".join(re.escape(part) for part in text.split("*"))


class ScenePattern:
    """One or more scene patterns; the first that matches an object's name wins."""

    def __init__(self, patterns: str | Sequence[str], ignore_case: bool = True):
        self.patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        if not self.patterns:
            raise ConfigError("a scene partition needs a pattern, e.g. '{scene}_B{band}.TIF'")
        flags = re.IGNORECASE if ignore_case else 0
        self._regexes = [(p, re.compile(pattern_regex(p), flags)) for p in self.patterns]

    def match(self, key: str) -> SceneMatch | None:
        """The scene ``key`` belongs to, or None when no pattern matches it."""
        folder, name = posixpath.split(key)
        for pattern, regex in self._regexes:
            m = regex.fullmatch(key if "/" in pattern else name)
            if m is None:
                continue
            scene = m.group("scene")
            band = m.groupdict().get("band")
            group = f"{folder}/{scene}" if folder else scene
            return SceneMatch(group=group, scene=scene, band=band)
        return None


def band_number(band: str) -> int | str:
    """``"04"`` -> 4; names that are not numbers (``8A``) stay text."""
    return int(band) if band.isdigit() else band.upper()


def scene_name(group: str) -> str:
    """The scene's own name: the last part of its id."""
    return group.rsplit("/", 1)[-1]
