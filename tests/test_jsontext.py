"""JSON text by orjson, with the json module for what orjson refuses."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pixelfleet import jsontext


def test_what_orjson_refuses_to_read_is_read_by_json() -> None:
    """NaN (which the json module writes) and lone surrogates, which orjson refuses, are
    read all the same."""
    assert jsontext.loads('{"a": [1, "b"]}') == {"a": [1, "b"]}
    assert math.isnan(jsontext.loads('{"a": NaN}')["a"])
    assert jsontext.loads('{"a": "bad \\udcff"}') == {"a": "bad \udcff"}


@dataclass
class _Pair:
    name: str
    size: int


def test_what_orjson_refuses_to_write_is_written_by_json() -> None:
    fields = lambda obj: obj.__dict__  # noqa: E731 - json's default for the dataclass
    assert jsontext.loads(jsontext.dumps({"p": _Pair("a", 1)}, fields)) == {
        "p": {"name": "a", "size": 1}
    }
    for value in ({"big": 2**70}, {"bad": "x \udcff"}, {1: "a key that is not text"}):
        assert jsontext.loads(jsontext.dumps(value)) == {str(k): v for k, v in value.items()}
