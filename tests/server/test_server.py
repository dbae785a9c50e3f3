"""The server: STAC API through FastAPI's client and pystac-client, fuzzing, the pages."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixelfleet.server import create_app
from pixelfleet.settings import Settings
from server_helpers import fill_demo_catalog, live_server

NAIP = "va/2016/m_3607824_se_17_1_20160620_sub.tif"
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return fill_demo_catalog(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def app(urls: tuple[str, str]) -> Any:
    return create_app(Settings(api_token=TOKEN), catalog_url=urls[0], ledger_url=urls[1])


@pytest.fixture(scope="module")
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def test_landing_conformance_and_collections(client: TestClient) -> None:
    landing = client.get("/stac").json()
    assert landing["type"] == "Catalog" and landing["stac_version"] == "1.1.0"
    rels = {(link["rel"], link.get("method")) for link in landing["links"]}
    assert {("search", "GET"), ("search", "POST"), ("conformance", None), ("data", None)} <= rels
    assert (
        "https://api.stacspec.org/v1.0.0/item-search"
        in client.get("/stac/conformance").json()["conformsTo"]
    )
    collections = client.get("/stac/collections").json()["collections"]
    assert [c["id"] for c in collections] == ["demo"]
    assert collections[0]["extent"]["spatial"]["bbox"][0][0] < -100


def test_items_search_and_paging(client: TestClient) -> None:
    page = client.get("/stac/collections/demo/items", params={"limit": 4}).json()
    assert page["numberMatched"] == 15 and page["numberReturned"] == 4
    seen = [f["id"] for f in page["features"]]
    while nxt := next((link for link in page["links"] if link["rel"] == "next"), None):
        page = client.get(nxt["href"]).json()
        seen += [f["id"] for f in page["features"]]
    assert len(seen) == len(set(seen)) == 15
    item = client.get(f"/stac/collections/demo/items/{NAIP}").json()
    assert item["id"] == NAIP
    assert {link["rel"] for link in item["links"]} >= {"self", "parent", "collection", "root"}
    thumb = item["assets"]["thumbnail"]["href"]
    assert thumb.startswith("http://testserver/assets/demo/thumbnail/")
    image = client.get(thumb)
    assert image.status_code == 200 and image.content[:3] == b"\xff\xd8\xff"

    body = {"q": "cat", "limit": 5}
    found = client.post("/stac/search", json=body).json()
    assert [f["id"] for f in found["features"]] == ["photos/chelsea.png"]
    found = client.get("/stac/search", params={"bbox": "-79,36,-77,37", "datetime": "2016"})
    assert found.status_code == 400  # a bare year is not RFC 3339
    found = client.get(
        "/stac/search", params={"bbox": "-79,36,-77,37", "datetime": "2016-01-01/2016-12-31"}
    )
    assert found.status_code == 400  # bare dates neither: the API takes RFC 3339 only
    assert "2016-01-01" in found.json()["description"]
    found = client.get(
        "/stac/search",
        params={"bbox": "-79,36,-77,37", "datetime": "2016-01-01T00:00:00Z/2016-12-31T23:59:59Z"},
    ).json()
    assert [f["id"] for f in found["features"]] == [NAIP]
    cql = {"op": "=", "args": [{"property": "pixelfleet:datetime_source"}, "metadata"]}
    found = client.post("/stac/search", json={"filter": cql, "filter-lang": "cql2-json"}).json()
    assert [f["id"] for f in found["features"]] == ["photos/flower.jpg"]
    found = client.get("/stac/search", params={"filter": json.dumps(cql)}).json()
    assert [f["id"] for f in found["features"]] == ["photos/flower.jpg"]
    page = client.post("/stac/search", json={"limit": 10, "sortby": [{"field": "id"}]}).json()
    nxt = next(link for link in page["links"] if link["rel"] == "next")
    assert nxt["method"] == "POST" and nxt["body"]["token"]
    rest = client.post("/stac/search", json=nxt["body"]).json()
    assert [f["id"] for f in page["features"] + rest["features"]] == sorted(
        f["id"] for f in page["features"] + rest["features"]
    )


@pytest.mark.parametrize(
    ("method", "url", "payload", "message"),
    [
        ("GET", "/stac/search?bbox=1,2,3", None, "bbox"),
        ("GET", "/stac/search?bbox=a,b,c,d", None, "bbox"),
        ("GET", "/stac/search?limit=0", None, "limit"),
        ("GET", "/stac/search?limit=1.5", None, "limit"),
        ("GET", "/stac/search?datetime=tomorrow", None, "datetime"),
        ("GET", "/stac/search?filter={bad", None, "JSON"),
        ("GET", "/stac/search?sortby=colour", None, "sort"),
        ("GET", "/stac/search?bogus=1", None, "unknown search parameter"),
        ("GET", "/stac/search?token=abc", None, "token"),
        ("POST", "/stac/search", {"limit": -1}, "limit"),
        ("POST", "/stac/search", {"bbox": "x"}, "bbox"),
        ("POST", "/stac/search", {"filter": {"op": "not", "args": []}}, "args"),
        ("POST", "/stac/search", [1, 2], "JSON object"),
        ("POST", "/stac/search", {"intersects": {"type": "Polygon"}}, "coordinates"),
    ],
)
def test_bad_input_is_400_with_a_reason(
    client: TestClient, method: str, url: str, payload: Any, message: str
) -> None:
    response = client.request(method, url, json=payload)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["code"] == "BadRequest"
    assert message.lower() in error["description"].lower() == error["detail"].lower()


def test_huge_bodies_and_broken_json_are_400(client: TestClient) -> None:
    response = client.post("/stac/search", content=b"{" * 10, headers={"content-type": "x"})
    assert response.status_code == 400
    response = client.post("/stac/search", content=b" " * 300_000)
    assert response.status_code == 413 and "over" in response.json()["description"]
    assert response.json()["code"] == "PayloadTooLarge"
    deep = "[" * 5000 + "]" * 5000
    assert client.post("/stac/search", content=deep.encode()).status_code == 400
    for raw in (b'{"bbox": [NaN, 0, 1, 1]}', b'{"limit": Infinity}', b'{"q": 1e999}'):
        assert client.post("/stac/search", content=raw).status_code == 400


def test_missing_things_are_404(client: TestClient) -> None:
    assert client.get("/stac/collections/nope").status_code == 404
    assert client.get("/stac/collections/demo/items/nope.tif").status_code == 404
    assert client.get("/assets/demo/nothing/photos/flower.jpg").status_code == 404
    assert client.get("/items/demo/nope.tif").status_code == 404


def test_writes_need_the_token(client: TestClient, urls: tuple[str, str]) -> None:
    item = client.get("/stac/collections/demo/items/photos/rocket.jpg").json()
    item["properties"]["title"] = "rocket, relabelled"
    url = "/stac/collections/demo/items"
    assert client.post(url, json=item).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.post(url, json=item, headers=wrong).status_code == 401
    ok = client.post(url, json=item, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 201, ok.text
    assert client.get(f"{url}/photos/rocket.jpg").json()["properties"]["title"] == (
        "rocket, relabelled"
    )
    sneaky = {**item, "assets": {"thumbnail": {"href": "/etc/passwd", "roles": ["thumbnail"]}}}
    refused = client.post(url, json=sneaky, headers={"Authorization": f"Bearer {TOKEN}"})
    assert refused.status_code == 400 and "http(s)" in refused.json()["detail"]
    created = client.post(
        "/stac/collections", json={"id": "x"}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert created.status_code == 201
    closed = create_app(Settings(api_token=None), catalog_url=urls[0], ledger_url=urls[1])
    with TestClient(closed) as other:
        response = other.post(url, json=item, headers={"Authorization": "Bearer "})
        assert response.status_code == 401 and "PIXELFLEET_API_TOKEN" in response.json()["detail"]


def test_pages_render(client: TestClient) -> None:
    page = client.get("/", params={"q": "cat"})
    assert page.status_code == 200 and "chelsea.png" in page.text and "<img" in page.text
    page = client.get("/", params={"bbox": "1,2"})
    assert page.status_code == 400 and "bbox" in page.text
    page = client.get(
        "/", params={"collection": "demo", "start": "2016-01-01", "end": "2016-12-31"}
    )
    assert NAIP in page.text
    item = client.get(f"/items/demo/{NAIP}")
    assert item.status_code == 200 and 'id="item-map"' in item.text and "EPSG:26917" in item.text
    runs = client.get("/runs")
    assert runs.status_code == 200 and "done" in runs.text


def test_pages_link_only_to_this_server_and_hide_its_paths(
    client: TestClient, urls: tuple[str, str]
) -> None:
    folder = urls[0].removeprefix("sqlite:///").rsplit("/", 1)[0]
    for url in ["/", f"/items/demo/{NAIP}", "/items/demo/photos/chelsea.png"]:
        html = client.get(url).text
        # No CDN: every script and stylesheet is served by the package.
        for tag in re.findall(r"<(?:script|link)[^>]*>", html):
            ref = re.search(r'(?:src|href)="([^"]+)"', tag)
            assert ref is None or ref.group(1).startswith(("/static/", "data:")), tag
        assert folder not in html  # the server's own paths stay private
        assert ">None<" not in html
    for path in [
        "/static/vendor/leaflet/leaflet.js",
        "/static/vendor/leaflet/leaflet.css",
        "/static/vendor/world-atlas/countries-110m.geojson",
    ]:
        assert client.get(path).status_code == 200, path


def found(pattern: str, text: str) -> str:
    """The first group of ``pattern`` in ``text`` (HTML entities for & undone)."""
    match = re.search(pattern, text, re.S)
    assert match is not None, pattern
    return match.group(1).replace("&amp;", "&")


def test_search_page_chips_paging_and_map_data(client: TestClient) -> None:
    page = client.get("/", params={"collection": "demo", "start": "2013-01-01", "label": "x"})
    assert page.status_code == 200
    assert page.text.count('class="chip filter') == 3
    assert 'href="/?start=2013-01-01&amp;label=x"' in page.text  # the collection chip's ×
    assert json.loads(found(r'id="map-entries">(.*?)</script>', page.text)) == []
    page = client.get("/", params={"limit": "3", "sort": "id"})
    entries = json.loads(found(r'id="map-entries">(.*?)</script>', page.text))
    assert {"id", "title", "href", "thumb", "bbox", "geometry"} <= set(entries[0])
    second = client.get(found(r'href="([^"]+)" rel="next"', page.text))
    assert "showing 4–6" in second.text
    assert "showing 1–3" in client.get(found(r'href="([^"]+)" rel="prev"', second.text)).text


def test_basemap_setting_reaches_the_page(urls: tuple[str, str]) -> None:
    settings = Settings.from_env(
        {"PIXELFLEET_BASEMAP_URL": "https://tiles.example/{z}/{x}/{y}.png"}
    )
    app = create_app(settings, catalog_url=urls[0], ledger_url=urls[1])
    with TestClient(app) as other:
        assert 'data-basemap="https://tiles.example/{z}/{x}/{y}.png"' in other.get("/").text


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
param_names = st.sampled_from(
    ["bbox", "datetime", "ids", "collections", "q", "filter", "sortby", "limit", "token",
     "intersects", "filter-lang", "fields", "filter-crs"]
)  # fmt: skip
cql_ops = st.sampled_from(["and", "or", "not", "=", "<", "like", "in", "between", "isNull",
                           "s_intersects", "t_intersects", "x"])  # fmt: skip
cql = st.recursive(
    st.fixed_dictionaries({"property": st.text(max_size=10)}) | json_values,
    lambda children: st.fixed_dictionaries({"op": cql_ops, "args": st.lists(children, max_size=3)}),
    max_leaves=15,
)


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(param_names, st.text(max_size=40), max_size=5))
def test_fuzz_get_search_never_5xx(client: TestClient, params: dict[str, str]) -> None:
    response = client.get("/stac/search", params=params)
    assert response.status_code in (200, 400), response.text
    body = response.json()
    assert (
        body.get("code") == "BadRequest"
        and body["description"]
        or (body["type"] == "FeatureCollection")
    )


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(param_names, json_values | cql, max_size=5))
def test_fuzz_post_search_never_5xx(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post("/stac/search", json=body)
    assert response.status_code in (200, 400), response.text


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(cql)
def test_fuzz_filters_never_5xx(client: TestClient, expr: Any) -> None:
    response = client.post("/stac/search", json={"filter": expr})
    assert response.status_code in (200, 400), response.text


cql_text_tokens = st.sampled_from(
    ["cloud", "title", "datetime", "geometry", "\"eo:cloud_cover\"", "=", "<>", "<", ">=", "+",
     "-", "*", "1", "2.5", "'a'", "'it''s'", "AND", "OR", "NOT", "(", ")", ",", "[", "]",
     "BETWEEN", "IN", "LIKE", "IS", "NULL", "true", "S_INTERSECTS", "T_INTERSECTS", "CASEI",
     "POINT(1 2)", "BBOX(170,0,-170,1)", "GEOMETRYCOLLECTION(POINT(1 2))",
     "TIMESTAMP('2013-01-01T00:00:00Z')", "DATE('2013-01-01')", "INTERVAL('2013-01-01','..')"]
)  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(cql_text_tokens, max_size=14).map(" ".join))
def test_fuzz_cql2_text_never_5xx(client: TestClient, text: str) -> None:
    response = client.get("/stac/search", params={"filter": text, "filter-lang": "cql2-text"})
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.json()["description"]


def test_pystac_client_works_unchanged(app: Any) -> None:
    from pystac_client import Client

    with live_server(app) as base:
        client = Client.open(f"{base}/stac")
        assert [c.id for c in client.get_collections()] == ["demo", "x"] or [
            c.id for c in client.get_collections()
        ] == ["demo"]
        search = client.search(collections=["demo"], bbox=[-79, 36, -77, 37], max_items=10)
        assert [i.id for i in search.items()] == [NAIP]
        every = client.search(collections=["demo"], limit=4, method="POST")
        ids = [i.id for i in every.items()]
        assert len(ids) == len(set(ids)) == 15
        every = client.search(collections=["demo"], limit=4, method="GET", sortby="id")
        ids = [i.id for i in every.items()]
        assert ids == sorted(ids) and len(ids) == 15
        found = client.search(ids=["photos/coffee.png"], datetime="1900-01-01/2100-01-01")
        assert [i.id for i in found.items()] == ["photos/coffee.png"]
        assert found.items().__next__().properties["labels"][0]["name"] == "coffee"
        cql = {"op": "=", "args": [{"property": "pixelfleet:datetime_source"}, "metadata"]}
        found = client.search(filter=cql, filter_lang="cql2-json")
        assert [i.id for i in found.items()] == ["photos/flower.jpg"]
        item = client.get_collection("demo").get_item(NAIP)
        assert item is not None and item.bbox is not None
        assert item.assets["thumbnail"].href.startswith(base)
        import urllib.request

        with urllib.request.urlopen(item.assets["thumbnail"].href) as response:
            assert response.read(3) == b"\xff\xd8\xff"


def test_server_binds_loopback_by_default(tmp_path: Path) -> None:
    from pixelfleet.cli.serve import serve

    host = next(p for p in serve.params if p.name == "host")
    assert host.default == "127.0.0.1"


@pytest.mark.s3
def test_s3_thumbnails_are_relayed(s3_env: Any) -> None:
    from catalog_helpers import make_item
    from pixelfleet.catalog import new_collection
    from pixelfleet.catalog.memory import MemoryCatalog
    from pixelfleet.settings import get_settings

    jpeg = (Path(__file__).parents[1] / "data" / "flower.jpg").read_bytes()
    s3_env.client.put_object(Bucket=s3_env.bucket, Key="t/x.thumb.jpg", Body=jpeg)
    catalog = MemoryCatalog()
    catalog.save_collection(new_collection("s3"))
    item = make_item(1, "s3")
    item["assets"]["thumbnail"] = {
        "href": f"{s3_env.url}/t/x.thumb.jpg",
        "type": "image/jpeg",
        "roles": ["thumbnail"],
    }
    missing = make_item(2, "s3")
    missing["assets"]["thumbnail"]["href"] = f"{s3_env.url}/t/gone.jpg"
    catalog.upsert([item, missing])
    with TestClient(create_app(get_settings(), catalog=catalog)) as client:
        page = client.get("/")
        assert "/assets/s3/thumbnail/i0001" in page.text
        image = client.get("/assets/s3/thumbnail/i0001")
        assert image.status_code == 200 and image.content == jpeg
        assert image.headers["content-type"] == "image/jpeg"
        assert client.get("/assets/s3/thumbnail/i0002").status_code == 404
