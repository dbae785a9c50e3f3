"""``GET /stac/search`` on SQLite is answered by the shortcut middleware before FastAPI's
routing (issue 13: 40% of a search's server CPU): it must answer exactly as the route."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from pixelfleet.catalog import new_collection, open_catalog
from pixelfleet.server import create_app
from pixelfleet.server.shortcut import SearchShortcut
from pixelfleet.settings import Settings

QUERIES = [
    "",
    "?limit=3",
    "?limit=2&sortby=-datetime&fields=id,properties.datetime",
    "?bbox=0,0,50,50&limit=4",
    "?datetime=2020-01-01T00:00:00Z/..&limit=5",
    "?q=tile&limit=2",
    "?filter=%22n%22%20%3E%205&filter-lang=cql2-text&limit=3",
    "?bbox=1,2,3",  # 400
    "?datetime=1985-04-12",  # 400
    "?limit=ten",  # 400
    "?filter=n%20%3E&filter-lang=cql2-text",  # 400
    "?sortby=nope",  # 400
    "?collections=missing",
]


def items() -> list[dict[str, Any]]:
    out = []
    for n in range(12):
        x = n * 4.0
        out.append(
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "id": f"tile-{n:02d}",
                "collection": "c",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[x, x], [x + 1, x], [x + 1, x + 1], [x, x + 1], [x, x]]],
                },
                "bbox": [x, x, x + 1, x + 1],
                "properties": {"datetime": f"20{10 + n}-06-01T00:00:00Z", "n": n},
                "links": [],
                "assets": {},
            }
        )
    return out


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A client of the app as built (with the shortcut) and one of the same app with the
    shortcut taken out, so that the route answers."""
    url = f"sqlite:///{tmp_path_factory.mktemp('shortcut') / 'c.db'}"
    with open_catalog(url) as catalog:
        catalog.save_collection(new_collection("c"))
        catalog.upsert(items())
    routed = create_app(Settings(), catalog_url=url)
    routed.user_middleware = [m for m in routed.user_middleware if m.cls is not SearchShortcut]
    with TestClient(create_app(Settings(), catalog_url=url)) as fast, TestClient(routed) as slow:
        yield fast, slow


def test_the_app_has_the_shortcut() -> None:
    app = create_app(Settings(), catalog_url="sqlite:///:memory:")
    app.state.catalog.close()
    assert any(m.cls is SearchShortcut for m in app.user_middleware)


@pytest.mark.parametrize("params", QUERIES)
def test_the_shortcut_answers_as_the_route(clients: Any, params: str) -> None:
    fast, slow = clients
    a, b = fast.get(f"/stac/search{params}"), slow.get(f"/stac/search{params}")
    assert (a.status_code, a.headers["content-type"]) == (b.status_code, b.headers["content-type"])
    assert a.json() == b.json()
    assert a.status_code < 500


def test_the_next_link_keeps_every_parameter(clients: Any) -> None:
    fast, _slow = clients
    page = fast.get("/stac/search?limit=2&bbox=0,0,50,50&fields=id").json()
    (nxt,) = [link for link in page["links"] if link["rel"] == "next"]
    assert "bbox=0%2C0%2C50%2C50" in nxt["href"] and "fields=id" in nxt["href"]
    second = fast.get(nxt["href"].split("testserver", 1)[1]).json()
    assert [f["id"] for f in second["features"]] != [f["id"] for f in page["features"]]


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
def test_other_methods_go_on_to_the_app(clients: Any, method: str) -> None:
    fast, slow = clients
    a, b = fast.request(method, "/stac/search"), slow.request(method, "/stac/search")
    assert (a.status_code, a.headers.get("allow")) == (b.status_code, b.headers.get("allow"))


def test_a_post_search_goes_on_to_the_route(clients: Any) -> None:
    fast, slow = clients
    a = fast.post("/stac/search", json={"limit": 2})
    assert a.status_code == 200 and a.json() == slow.post("/stac/search", json={"limit": 2}).json()
