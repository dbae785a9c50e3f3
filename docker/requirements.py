"""Print pixelfleet's requirements for a set of extras, one per line, from pyproject.toml.

The worker image installs these in a layer of their own before the project's wheel, so
that the layer (hundreds of megabytes: rasterio, numpy, boto3...) is rebuilt only when
pyproject.toml changes, not with every change to the code. The image then installs the
wheel itself with ``pip install --no-index``: a requirement missing from this list fails
the build there instead of going unnoticed.

    python requirements.py pyproject.toml s3,aws,postgres > requirements.txt

Standard library only (it runs in a bare ``python:3.11-slim`` stage).
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: An extra that names others of the same project, e.g. ``pixelfleet[catalog]``.
_SELF = re.compile(r"^\s*(?P<name>[A-Za-z0-9._-]+)\s*\[(?P<extras>[^\]]*)\]\s*$")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(project: Mapping[str, Any], extras: Iterable[str]) -> list[str]:
    """The project's dependencies and those of ``extras``, without duplicates, in order.

    An extra's ``project[other]`` entries are replaced by the other extras' requirements.
    Raises ``LookupError`` naming the valid extras when one is unknown.
    """
    name = _normal(str(project["name"]))
    optional: Mapping[str, Sequence[str]] = project.get("optional-dependencies") or {}
    out: list[str] = list(project.get("dependencies") or [])
    seen: set[str] = set()

    def add(extra: str) -> None:
        if extra in seen:
            return
        if extra not in optional:
            raise LookupError(
                f"unknown extra {extra!r}; pyproject.toml has: {', '.join(sorted(optional))}"
            )
        seen.add(extra)
        for requirement in optional[extra]:
            match = _SELF.match(requirement)
            if match and _normal(match["name"]) == name:
                for other in match["extras"].split(","):
                    if other.strip():
                        add(other.strip())
            elif requirement not in out:
                out.append(requirement)

    for extra in extras:
        if extra.strip():
            add(extra.strip())
    return out


def main(argv: Sequence[str]) -> int:
    """``requirements.py PYPROJECT EXTRAS``: print the requirements, exit 2 on a bad extra."""
    if len(argv) != 2:
        print("usage: requirements.py PYPROJECT EXTRA[,EXTRA...]", file=sys.stderr)
        return 2
    with open(argv[0], "rb") as f:
        project = tomllib.load(f)["project"]
    try:
        lines = requirements(project, argv[1].split(","))
    except LookupError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    print(f"# {project['name']} {project['version']} with [{argv[1]}]: docker/requirements.py")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
