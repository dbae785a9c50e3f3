"""Listing through include/exclude globs."""

from __future__ import annotations

import pytest

from pixelfleet.errors import ConfigError
from pixelfleet.sources.listing import compile_globs, literal_prefix, select
from pixelfleet.storage.memory import MemoryStorage


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("**/*.tif", "x.tif", True),
        ("**/*.tif", "al/2013/x.tif", True),
        ("**/*.tif", "al/2013/x.tiff", False),
        ("*.tif", "al/x.tif", False),
        ("al/*/*.tif", "al/2013/x.tif", True),
        ("al/*/*.tif", "al/2013/sub/x.tif", False),
        ("al/**", "al/2013/sub/x.tif", True),
        ("m_?.tif", "m_1.tif", True),
        ("m_[0-9].tif", "m_a.tif", False),
        ("m_[!0-9].tif", "m_a.tif", True),
        ("a+b(1).tif", "a+b(1).tif", True),
    ],
)
def test_globs(pattern: str, key: str, matches: bool) -> None:
    assert compile_globs([pattern], ignore_case=False)(key) is matches


def test_globs_ignore_case_by_default() -> None:
    assert compile_globs(["**/*.tif"])("LC08_B4.TIF")
    assert not compile_globs(["**/*.tif"], ignore_case=False)("LC08_B4.TIF")


def test_unclosed_bracket_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"unclosed '\['"):
        compile_globs(["a[b"])


def test_literal_prefix() -> None:
    assert literal_prefix(["al/2013/*.tif"], ignore_case=False) == "al/2013/"
    assert literal_prefix(["al/2013/*.tif", "al/2015/*.tif"], ignore_case=False) == "al/"
    assert literal_prefix(["**/*.tif"]) == ""
    assert literal_prefix(["2013/*.tif"]) == "2013/"  # no cased letters: safe to narrow
    assert literal_prefix(["al/*.tif"]) == ""  # 'al' might also be 'AL'


def test_select_filters_and_keeps_key_order() -> None:
    store = MemoryStorage("memory://inventory-test")
    MemoryStorage.clear("inventory-test")
    for key in ["b/2.tif", "a/1.tif", "a/skip.tif", "a/notes.txt", "c/3.TIF"]:
        store.write(key, b"x")
    keys = [e.key for e in select(store, ["**/*.tif"], ["**/skip.*"])]
    assert keys == ["a/1.tif", "b/2.tif", "c/3.TIF"]
