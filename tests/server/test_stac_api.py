"""The STAC API as validators and clients use it: limits, RFC 3339, bbox and intersects,
the OpenAPI document and Allow, queryables and CQL2 text, fields, sorting, summaries,
titled links, composed searches with their next links, and no server paths.

A synthetic catalog (in memory and in SQLite) holds items built to tell each rule apart;
the demo catalog (a real pipeline run) checks what only real items have.
"""

from __future__ import annotations

import json
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from catalog_helpers import make_item
from pixelfleet.catalog import Catalog, new_collection, open_catalog
from pixelfleet.catalog.memory import MemoryCatalog
from pixelfleet.server import create_app
from pixelfleet.settings import Settings
from server_helpers import fill_demo_catalog, live_server

TOKEN = "s3cret-token"
N = 60
SOURCE = "/srv/private/images/bucket"


def synthetic_items() -> list[dict[str, Any]]:
    """Items i0000..i0059 (see make_item) with: no cloud every 7th; a year range instead
    of a datetime every 9th; a gsd on every 4th; a local source in every one."""
    items = []
    for n in range(N):
        props: dict[str, Any] = {
            "pixelfleet:source": SOURCE,
            "description": f"k/{n}.tif ({SOURCE})",
            "labels": [{"name": ["dog", "cat"][n % 2], "confidence": 90.0}],
        }
        if n % 7 == 0:
            props["cloud"] = None
        if n % 9 == 0:
            props.update(datetime=None, start_datetime="2013-03-01T00:00:00Z",
                         end_datetime="2013-03-31T23:59:59Z")  # fmt: skip
        if n % 4 == 0:
            props["gsd"] = 0.5 + n % 3
        item = make_item(n, "syn", **props)
        if props.get("cloud", 0) is None:
            del item["properties"]["cloud"]
        items.append(item)
    return items


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def syn(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """A client of a server over the synthetic catalog."""
    catalog: Catalog
    if request.param == "memory":
        catalog = MemoryCatalog()
    else:
        catalog = open_catalog(f"sqlite:///{tmp_path_factory.mktemp('syn') / 'c.db'}")
    catalog.save_collection(new_collection("syn", "Synthetic"))
    catalog.upsert(synthetic_items())
    with TestClient(create_app(Settings(api_token=TOKEN), catalog=catalog)) as client:
        yield client
    catalog.close()


@pytest.fixture(scope="module")
def demo_urls(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    folder = tmp_path_factory.mktemp("demo")
    catalog_url, ledger_url = fill_demo_catalog(folder)
    return catalog_url, ledger_url, folder


@pytest.fixture(scope="module")
def demo_app(demo_urls: tuple[str, str, Path]) -> Any:
    return create_app(Settings(api_token=TOKEN), catalog_url=demo_urls[0], ledger_url=demo_urls[1])


@pytest.fixture(scope="module")
def demo(demo_app: Any) -> Iterator[TestClient]:
    with TestClient(demo_app) as client:
        yield client


def ids_of(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [f["id"] for f in response.json()["features"]]


def all_pages(client: TestClient, method: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page of a search, following next links (GET hrefs, POST bodies)."""
    if method == "GET":
        response = client.get("/stac/search", params=params)
    else:
        response = client.post("/stac/search", json=params)
    pages = []
    for _ in range(100):
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        nxt = next((link for link in page["links"] if link["rel"] == "next"), None)
        if nxt is None:
            return pages
        assert nxt["method"] == method
        if method == "GET":
            response = client.get(nxt["href"])
        else:
            response = client.post(nxt["href"], json=nxt["body"])
    raise AssertionError("paging never ended")


def bad(response: Any, *words: str) -> str:
    """Assert a 400-class JSON error naming each word; return its description."""
    assert 400 <= response.status_code < 500, response.text
    error = response.json()
    assert error["code"] and error["description"] == error["detail"]
    for word in words:
        assert word.lower() in error["description"].lower(), (word, error["description"])
    return str(error["description"])


# -- 1. limit ---------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [10_000, 100_000, 1_000_000, 10**30])
def test_a_limit_above_the_maximum_is_cut_to_it(syn: TestClient, limit: int) -> None:
    for response in (
        syn.get("/stac/search", params={"limit": limit}),
        syn.post("/stac/search", json={"limit": limit}),
        syn.get("/stac/collections/syn/items", params={"limit": limit}),
    ):
        assert response.status_code == 200, response.text
        assert response.json()["numberReturned"] == N


@pytest.mark.parametrize("limit", [-1, 0, "ten", 1.5, "", "1e3", True])
def test_a_bad_limit_is_400(syn: TestClient, limit: Any) -> None:
    if limit not in ("",):  # an empty GET parameter is no limit
        bad(syn.get("/stac/search", params={"limit": limit}), "limit")
    if limit != "":
        bad(syn.post("/stac/search", json={"limit": limit}), "limit")


# -- 2. datetime ------------------------------------------------------------------------------

VALID_DATETIMES = [
    "2013-01-05T00:00:00Z",
    "2013-01-05T00:00:00.000001Z",
    "2013-01-05T01:00:00+01:00",
    "2013-01-04T16:00:00-08:00",
    "2013-01-05t00:00:00z",
    "2013-01-05T00:00:00.123456789Z",
    "2012-12-31T23:59:60Z",  # a leap second
    "2013-01-01T00:00:00Z/2013-01-31T00:00:00Z",
    "../2013-01-31T00:00:00Z",
    "2013-01-01T00:00:00Z/..",
    "/2013-01-31T00:00:00Z",
    "2013-01-01T00:00:00Z/",
]
INVALID_DATETIMES = [
    "1985-04-12",
    "1985-04-12T23:20:27.87+0100",
    "1985-04-12T23:20:50.52",
    "1985-04-12T23:20:50.Z",
    "1985-04-12T23:20:50,Z",
    "1985-04-12T23:20:50,52Z",
    "85-04-12T23:20:50Z",
    "1985-13-12T23:20:50Z",
    "1985-02-30T23:20:50Z",
    "1985-04-12T24:20:50Z",
    "1985-04-12T23:60:50Z",
    "1985-04-12T23:20:61Z",
    "/",
    "../..",
    "..",
    "a/b/c",
    "1986-04-12T23:20:50Z/1985-04-12T23:20:50Z",
    "2013",
]


@pytest.mark.parametrize("value", VALID_DATETIMES)
def test_rfc3339_datetimes_are_taken(syn: TestClient, value: str) -> None:
    assert syn.get("/stac/search", params={"datetime": value}).status_code == 200
    assert syn.post("/stac/search", json={"datetime": value}).status_code == 200


@pytest.mark.parametrize("value", INVALID_DATETIMES)
def test_other_datetimes_are_400_with_an_example(syn: TestClient, value: str) -> None:
    text = bad(syn.get("/stac/search", params={"datetime": value}), "datetime")
    bad(syn.post("/stac/search", json={"datetime": value}), "datetime")
    if value not in ("/", "../..", ".."):  # those say an end is needed
        assert value.split("/")[0] in text or value in text
    assert "2013-06-20T00:00:00Z" in text or "start" in text


def test_an_instant_and_an_interval_find_their_items(syn: TestClient) -> None:
    # i0001 is 2013-01-02; i0009 (a year range for March) meets any March instant.
    assert ids_of(syn.get("/stac/search", params={"datetime": "2013-01-02T00:00:00Z"})) == ["i0001"]
    march = syn.get("/stac/search", params={"datetime": "2013-03-15T12:00:00+02:00", "limit": 100})
    assert {"i0009", "i0018"} <= set(ids_of(march))


def test_the_search_page_still_takes_bare_dates(syn: TestClient) -> None:
    page = syn.get("/", params={"start": "2013-01-02", "end": "2013-01-02"})
    assert page.status_code == 200 and "i0001" in page.text


# -- 3. bbox ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bbox",
    ["100.0, 0.0, 105.0, 1.0", "100,0,105,1", {"w": 1}, 5],
)
def test_a_post_bbox_must_be_an_array(syn: TestClient, bbox: Any) -> None:
    bad(syn.post("/stac/search", json={"bbox": bbox}), "bbox", "array")


@pytest.mark.parametrize(
    "bbox", ["[100.0, 0.0, 105.0, 1.0]", "100.0,1.0,105.0,0.0", "0", "0,0", "0,0,0", "0,0,0,1,1",
             "0,0,0,1,1,1,1", "-181,0,0,1"],
)  # fmt: skip
def test_bad_get_bboxes_are_400(syn: TestClient, bbox: str) -> None:
    bad(syn.get("/stac/search", params={"bbox": bbox}), "bbox")
    if not bbox.startswith("["):  # as numbers, that one is a good bbox
        numbers = [float(v) for v in bbox.split(",")]
        bad(syn.post("/stac/search", json={"bbox": numbers}), "bbox")


def test_a_bbox_across_the_antimeridian_finds_both_sides(syn: TestClient) -> None:
    # Items span lon (n % 40) - 100 .. +1: east of 170 there is none; west of -99.5 only
    # the boxes starting at -100 (n % 40 == 0).
    want = sorted(f"i{n:04d}" for n in range(N) if n % 40 == 0)
    got = ids_of(syn.get("/stac/search", params={"bbox": "170,-90,-99.5,90", "limit": 100}))
    assert sorted(got) == want
    got = ids_of(syn.post("/stac/search", json={"bbox": [170, -90, -99.5, 90], "limit": 100}))
    assert sorted(got) == want
    got = ids_of(syn.post("/stac/search", json={"bbox": [170, -90, 0, 0, 90, 0], "limit": 100}))
    assert len(got) == N


# -- 4. intersects ----------------------------------------------------------------------------

POINT = {"type": "Point", "coordinates": [-99.5, 20.5]}  # in i0000 (and i0040, lat 20)
BOX_77 = {"type": "Polygon", "coordinates": [[[-77, 23], [-76, 23], [-76, 24], [-77, 23]]]}
GEOMETRIES = [
    POINT,
    {"type": "MultiPoint", "coordinates": [[-99.5, 20.5], [0, 0]]},
    {"type": "LineString", "coordinates": [[-99.5, 20.5], [-99.4, 20.6]]},
    {"type": "MultiLineString", "coordinates": [[[-99.5, 20.5], [-99.4, 20.6]]]},
    BOX_77,
    {"type": "MultiPolygon", "coordinates": [BOX_77["coordinates"]]},
    {"type": "GeometryCollection", "geometries": [POINT, BOX_77]},
]


def test_ids_do_not_override_the_other_parameters(syn: TestClient) -> None:
    # What stac-api-validator checks with an item in bbox 20,20,21,21 (neither the demo
    # nor the 100,000-item catalog has one, so it only warns there): every parameter
    # applies alongside ids.
    item = syn.get("/stac/search", params={"ids": "i0003"}).json()["features"][0]
    w, s, e, n = item["bbox"]
    away = [e + 1, n + 1, e + 2, n + 2]
    assert ids_of(syn.get("/stac/search", params={"ids": "i0003", "collections": "syn"})) == [
        "i0003"
    ]
    got = syn.get("/stac/search", params={"ids": "i0003", "collections": "syn",
                                          "bbox": ",".join(map(str, away))})  # fmt: skip
    assert ids_of(got) == []
    body = {"ids": ["i0003"], "collections": ["syn"], "bbox": away}
    assert ids_of(syn.post("/stac/search", json=body)) == []
    assert ids_of(syn.post("/stac/search", json={**body, "bbox": [w, s, e, n]})) == ["i0003"]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: g["type"])
def test_every_geometry_type_is_an_intersects(syn: TestClient, geometry: dict[str, Any]) -> None:
    got = ids_of(syn.get("/stac/search", params={"intersects": json.dumps(geometry)}))
    assert got == ids_of(syn.post("/stac/search", json={"intersects": geometry}))
    assert got


def test_a_geometry_collection_matches_items_meeting_any_member(syn: TestClient) -> None:
    def found(geometry: dict[str, Any]) -> set[str]:
        body = {"intersects": geometry, "limit": 100}
        return set(ids_of(syn.post("/stac/search", json=body)))

    both = found({"type": "GeometryCollection", "geometries": [POINT, BOX_77]})
    assert both == found(POINT) | found(BOX_77) and found(POINT) and found(BOX_77)
    assert found({"type": "GeometryCollection", "geometries": []}) == set()
    nested = {"type": "GeometryCollection", "geometries": [
        {"type": "GeometryCollection", "geometries": [POINT]}, BOX_77]}  # fmt: skip
    assert found(nested) == both
    bad(syn.post("/stac/search", json={"intersects": {"type": "GeometryCollection"}}), "geometries")
    bad(syn.post("/stac/search", json={"intersects": "POINT(1 2)"}), "intersects")
    bad(syn.get("/stac/search", params={"intersects": "{nope"}), "intersects")
    body = {"bbox": [0, 0, 1, 1], "intersects": POINT}
    bad(syn.post("/stac/search", json=body), "not both")


# -- 5. the OpenAPI document and Allow --------------------------------------------------------


def test_the_openapi_document_matches_the_server(syn: TestClient) -> None:
    landing = syn.get("/stac").json()
    desc = next(link for link in landing["links"] if link["rel"] == "service-desc")
    response = syn.get(desc["href"], headers={"Accept": desc["type"]})
    assert response.status_code == 200
    assert response.headers["content-type"] == desc["type"]
    assert desc["type"] == "application/vnd.oai.openapi+json;version=3.1"
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(doc)
    paths = doc["paths"]
    search = paths["/stac/search"]
    assert set(search["get"]["responses"]) == {"200", "400"}
    assert set(search["post"]["responses"]) == {"200", "400", "413"}
    pages = [
        search["get"],
        search["post"],
        paths["/stac/collections/{collection_id}/items"]["get"],
        paths["/stac/collections/{collection_id}/items/{item_id}"]["get"],
    ]
    for op in pages:
        assert list(op["responses"]["200"]["content"]) == ["application/geo+json"]
    assert {"400", "401", "404", "413"} <= set(
        paths["/stac/collections/{collection_id}/items"]["post"]["responses"]
    )
    assert "404" in paths["/stac/collections/{collection_id}/items/{item_id}"]["get"]["responses"]
    assert (
        "application/schema+json" in paths["/stac/queryables"]["get"]["responses"]["200"]["content"]
    )
    names = {p["name"] for p in search["get"]["parameters"]}
    assert {"bbox", "datetime", "filter", "filter-lang", "sortby", "fields", "q", "limit"} <= names
    for path, methods in paths.items():
        for method, op in methods.items():
            assert "422" not in op["responses"], (path, method)
            if method == "post":
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                assert schema["$ref"].split("/")[-1] in doc["components"]["schemas"], path
    docs = next(link for link in landing["links"] if link["rel"] == "service-doc")
    assert syn.get(docs["href"]).headers["content-type"].startswith("text/html")


def test_options_and_allow_list_the_methods_each_path_takes(syn: TestClient) -> None:
    doc = syn.get("/stac/openapi.json").json()
    samples = {"{collection_id}": "syn", "{item_id}": "i0001", "{asset}": "thumbnail"}
    for path, methods in doc["paths"].items():
        url = path
        for name, value in samples.items():
            url = url.replace(name, value)
        response = syn.options(url)
        assert response.status_code == 204, (url, response.text)
        allowed = set(response.headers["allow"].split(", "))
        assert allowed == {m.upper() for m in methods} | {"OPTIONS"}, url
        for method in {"GET", "POST", "PUT", "DELETE"} - allowed:
            refused = syn.request(method, url)
            assert refused.status_code == 405, (method, url)
            assert set(refused.headers["allow"].split(", ")) == allowed
            bad(refused, method, "not allowed")
    assert syn.options("/stac/nowhere/at/all").status_code == 404
    bad(syn.get("/stac/nowhere"), "/stac/nowhere")


# -- 6. queryables and CQL2 -------------------------------------------------------------------


def test_queryables_are_linked_and_typed(syn: TestClient) -> None:
    rel = "http://www.opengis.net/def/rel/ogc/1.0/queryables"
    landing = syn.get("/stac").json()
    conforms = set(landing["conformsTo"])
    assert {
        "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
        "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
        "https://api.stacspec.org/v1.0.0/item-search#filter",
        "https://api.stacspec.org/v1.0.0/item-search#fields",
        "https://api.stacspec.org/v1.0.0/item-search#sort",
        "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    } <= conforms
    assert conforms == set(syn.get("/stac/conformance").json()["conformsTo"])
    for owner in (landing, syn.get("/stac/collections/syn").json()):
        href = next(link["href"] for link in owner["links"] if link["rel"] == rel)
        response = syn.get(href)
        assert response.headers["content-type"] == "application/schema+json"
        schema = response.json()
        assert schema["$id"] == href and schema["type"] == "object"
        assert schema["$schema"] == "https://json-schema.org/draft/2019-09/schema"
        props = schema["properties"]
        assert props["datetime"] == {**props["datetime"], "type": "string", "format": "date-time"}
        assert props["cloud"]["type"] == "integer" and props["gsd"]["type"] == "number"
        assert props["kind"]["type"] == "string" and props["id"]["type"] == "string"
        assert props["start_datetime"]["format"] == "date-time"
        assert "labels" not in props  # a list: no filter compares it
    assert (
        syn.get("/stac/collections/syn/queryables").json()["properties"]["collection"]["const"]
        == "syn"
    )
    assert syn.get("/stac/collections/nope/queryables").status_code == 404


def expected(predicate: Any) -> list[str]:
    return sorted(i["id"] for i in synthetic_items() if predicate(i["properties"]))


@pytest.mark.parametrize(
    ("text", "predicate"),
    [
        ("cloud >= 5 AND kind = 'raster'",
         lambda p: p.get("cloud") is not None and p["cloud"] >= 5 and p["kind"] == "raster"),
        ("cloud BETWEEN 2 AND 4", lambda p: p.get("cloud") is not None and 2 <= p["cloud"] <= 4),
        ("cloud NOT BETWEEN 2 AND 4",
         lambda p: p.get("cloud") is not None and not 2 <= p["cloud"] <= 4),
        ("cloud IS NULL", lambda p: p.get("cloud") is None),
        ("title LIKE 'scene 1%' OR id IN ('i0002', 'i0003')",
         lambda p: p["title"].startswith("scene 1") or p["title"].split()[1] in ("2", "3")),
        ("properties.gsd > 1", lambda p: p.get("gsd", 0) > 1),
        ("\"pixelfleet:source\" = 'x'", lambda p: False),
        ("datetime < TIMESTAMP('2013-01-05T00:00:00Z')",
         lambda p: (p["datetime"] or p["start_datetime"]) < "2013-01-05"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)  # fmt: skip
def test_cql2_text_filters(syn: TestClient, text: str, predicate: Any) -> None:
    want = expected(predicate)
    for params in ({"filter": text}, {"filter": text, "filter-lang": "cql2-text"}):
        got = ids_of(syn.get("/stac/search", params={**params, "limit": 100}))
        assert sorted(got) == want
    body = {"filter": text, "filter-lang": "cql2-text", "limit": 100}
    assert sorted(ids_of(syn.post("/stac/search", json=body))) == want


@pytest.mark.parametrize(
    "between",
    [
        {"op": "between", "args": [{"property": "cloud"}, 2, 4]},
        {"op": "between", "args": [{"property": "cloud"}, [2, 4]]},
        {"op": "between", "args": [{"property": "cloud"}, {"lower": 2, "upper": 4}]},
    ],
)
def test_between_in_the_forms_clients_send(syn: TestClient, between: dict[str, Any]) -> None:
    want = expected(lambda p: p.get("cloud") is not None and 2 <= p["cloud"] <= 4)
    body = {"filter": between, "filter-lang": "cql2-json", "limit": 100}
    assert sorted(ids_of(syn.post("/stac/search", json=body))) == want
    params = {"filter": json.dumps(between), "filter-lang": "cql2-json", "limit": 100}
    assert sorted(ids_of(syn.get("/stac/search", params=params))) == want


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"filter": "cloud >"}, ["cloud >", "CQL2 text", "column"]),
        ({"filter": "cloud = 1", "filter-lang": "cql2-json"}, ["cloud = 1", "JSON"]),
        ({"filter": '{"op": "="', "filter-lang": "cql2-json"}, ["CQL2 JSON"]),
        ({"filter": "cloud = 1", "filter-lang": "ecql"}, ["ecql", "cql2-text"]),
        ({"filter": "s_within(geometry, POINT(1 1))"}, ["s_within", "not supported"]),
        ({"filter": "datetime > TIMESTAMP('2013')"}, ["2013", "RFC 3339"]),
        ({"filter": "a = 1", "filter-crs": "EPSG:3857"}, ["EPSG:3857", "CRS84"]),
        ({"filter": "a = " + "(" * 200 + "1" + ")" * 200}, ["deeper"]),
        ({"sortby": "colour"}, ["colour", "sort by one of", "cloud"]),
    ],
)
def test_bad_filters_are_400_naming_the_expression(
    syn: TestClient, params: dict[str, str], words: list[str]
) -> None:
    bad(syn.get("/stac/search", params=params), *words)


# -- 7. fields and sortby ---------------------------------------------------------------------


def first(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    feature: dict[str, Any] = response.json()["features"][0]
    return feature


def test_fields_include_and_exclude(syn: TestClient) -> None:
    one = {"ids": "i0001", "collections": "syn"}
    full = first(syn.get("/stac/search", params=one))
    ident = {k: full[k] for k in ("type", "id", "collection", "links")}
    assert first(
        syn.get("/stac/search", params={**one, "fields": "properties.datetime,-assets"})
    ) == {**ident, "properties": {"datetime": full["properties"]["datetime"]}}
    default = first(syn.get("/stac/search", params={**one, "fields": ""}))
    assert set(default) == {"type", "stac_version", "id", "collection", "geometry", "bbox",
                            "links", "assets", "properties"}  # fmt: skip
    assert default["properties"] == {"datetime": full["properties"]["datetime"]}
    for fields in ({}, {"include": None, "exclude": None}, {"include": [], "exclude": []}):
        assert first(syn.post("/stac/search", json={**one, "fields": fields})) == default
    no_geometry = first(syn.get("/stac/search", params={**one, "fields": "-geometry"}))
    assert no_geometry == {k: v for k, v in full.items() if k != "geometry"}
    body = {**one, "fields": {"exclude": ["geometry"]}}
    assert first(syn.post("/stac/search", json=body)) == no_geometry
    body = {**one, "fields": {"exclude": ["geometry"], "include": []}}
    assert first(syn.post("/stac/search", json=body)) == {
        k: v for k, v in default.items() if k != "geometry"
    }
    nested = first(
        syn.get("/stac/search", params={**one, "fields": "-properties,+properties.kind"})
    )
    assert nested == {**ident, "properties": {"kind": full["properties"]["kind"]}}
    body = {**one, "fields": {"include": ["id", "properties.kind"], "exclude": ["properties.kind"]}}
    assert first(syn.post("/stac/search", json=body)) == {**ident, "properties": {"kind": "raster"}}
    assert first(syn.get("/stac/search", params={**one, "fields": "+geometry,-geometry"})) == {
        **ident,
        "geometry": full["geometry"],
    }
    body = {**one, "fields": {"include": ["id"], "exclude": ["links", "collection"]}}
    assert first(syn.post("/stac/search", json=body)) == {"type": "Feature", "id": "i0001"}
    for fields in (None, "id", {"include": "id"}, {"only": ["id"]}, {"include": [""]}):
        bad(syn.post("/stac/search", json={**one, "fields": fields}), "fields")
    # the item itself is untouched by a search that cut it down
    assert first(syn.get("/stac/search", params=one)) == full


def test_items_with_a_year_range_keep_their_datetimes_in_the_default_fields(
    syn: TestClient,
) -> None:
    item = first(syn.get("/stac/search", params={"ids": "i0009", "fields": ""}))
    assert item["properties"] == {
        "datetime": None,
        "start_datetime": "2013-03-01T00:00:00Z",
        "end_datetime": "2013-03-31T23:59:59Z",
    }


@pytest.mark.parametrize("sortby", ["cloud", "-cloud", "gsd,-id", "-properties.gsd", "title"])
def test_sort_by_any_queryable_no_value_last_ties_by_id(syn: TestClient, sortby: str) -> None:
    pages = all_pages(syn, "GET", {"sortby": sortby, "limit": 7})
    got = [f["id"] for page in pages for f in page["features"]]
    name, desc = (
        sortby.split(",")[0].lstrip("-").removeprefix("properties."),
        sortby.startswith("-"),
    )
    items = {i["id"]: i["properties"] for i in synthetic_items()}
    with_value = sorted(
        (i for i in items if items[i].get(name) is not None),
        key=lambda i: (items[i][name], i if not desc else ""),
        reverse=desc,
    )
    if sortby == "-properties.gsd":  # ties (equal gsd) by collection and id, ascending
        with_value = sorted(with_value, key=lambda i: (-items[i]["gsd"], i))
    without = sorted(i for i in items if items[i].get(name) is None)
    if sortby == "gsd,-id":
        with_value = sorted(with_value, key=lambda i: (items[i]["gsd"], [-ord(c) for c in i]))
        without = sorted(without, reverse=True)
    assert got == with_value + without
    post = all_pages(syn, "POST", {"sortby": [{"field": sortby.split(",")[0].lstrip("-"),
                                              "direction": "desc" if desc else "asc"}],
                                   "limit": 7})  # fmt: skip
    if "," not in sortby:
        assert [f["id"] for page in post for f in page["features"]] == got


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    "sortby", ["properties.datetime", "+properties.datetime", "-properties.datetime", "-datetime"]
)
def test_sorting_by_datetime_sorts_by_the_property_with_year_ranges_last(
    syn: TestClient, method: str, sortby: str
) -> None:
    # stac-api-validator's sort check (0.6.8) found year-range items (datetime null) sorted
    # by their start among the dated ones: sortby names the property, whose value is null.
    desc = sortby.startswith("-")
    field = sortby.lstrip("+-")
    given: Any = sortby
    if method == "POST":
        given = [{"field": field, "direction": "desc" if desc else "asc"}]
    features = [f for page in all_pages(syn, method, {"sortby": given, "limit": 7})
                for f in page["features"]]  # fmt: skip
    dated = [f["properties"]["datetime"] for f in features]
    present = [v for v in dated if v is not None]
    assert len(features) == len({f["id"] for f in features}) == N
    assert dated == sorted(present, reverse=desc) + [None] * (N // 9 + 1)
    # the year ranges: by their start in the same direction, then by id
    ranges = [(f["properties"]["start_datetime"], f["id"]) for f in features[len(present) :]]
    assert ranges == sorted(ranges)
    one_page = syn.get("/stac/search", params={"sortby": sortby, "limit": 100}).json()
    assert [f["id"] for f in one_page["features"]] == [f["id"] for f in features]


# -- 8. collections: summaries, extents, titled links -----------------------------------------


def test_collections_carry_summaries_and_extents_from_their_items(syn: TestClient) -> None:
    collection = syn.get("/stac/collections/syn").json()
    assert collection == next(
        c for c in syn.get("/stac/collections").json()["collections"] if c["id"] == "syn"
    )
    interval = collection["extent"]["temporal"]["interval"][0]
    summaries = collection["summaries"]
    assert summaries["datetime"] == {"minimum": interval[0], "maximum": interval[1]}
    assert interval[0].startswith("2013-01-02") and interval[1].startswith("2013-03-31")
    assert summaries["labels"] == ["cat", "dog"]
    assert summaries["gsd"] == {"minimum": 0.5, "maximum": 2.5}
    assert collection["extent"]["spatial"]["bbox"] == [[-100.0, 20.0, -60.0, 40.0]]


def test_demo_collection_summarises_labels_and_bands(demo: TestClient) -> None:
    summaries = demo.get("/stac/collections/demo").json()["summaries"]
    assert summaries["labels"] == ["cat", "coffee"]
    assert {"data_type": "uint8"} in summaries["bands"]
    assert summaries["datetime"]["minimum"] < summaries["datetime"]["maximum"]


def test_collections_and_items_are_valid_stac(demo: TestClient) -> None:
    pytest.importorskip("jsonschema")
    from pystac.validation import validate_dict

    for collection in demo.get("/stac/collections").json()["collections"]:
        validate_dict(collection)
    for item in demo.get("/stac/search", params={"limit": 100}).json()["features"]:
        item["stac_extensions"] = []  # their schemas are on the internet; the core ships
        validate_dict(item)


def every_link(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "links" and isinstance(inner, list):
                yield from inner
            else:
                yield from every_link(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from every_link(inner)


def test_every_link_has_a_title(syn: TestClient) -> None:
    answers = [
        syn.get(url).json()
        for url in ("/stac", "/stac/collections", "/stac/collections/syn",
                    "/stac/collections/syn/items?limit=2", "/stac/search?limit=2",
                    "/stac/collections/syn/items/i0001")
    ]  # fmt: skip
    answers.append(syn.post("/stac/search", json={"limit": 2}).json())
    links = [link for body in answers for link in every_link(body)]
    assert len(links) > 30 and {"next", "self", "root", "child"} <= {link["rel"] for link in links}
    for link in links:
        assert link.get("title"), link
        assert link.get("type"), link


# -- 9. everything in one request, and next links keep it all ---------------------------------


def test_text_filter_sort_fields_and_paging_compose(syn: TestClient) -> None:
    params = {
        "q": "scene",
        "filter": "cloud >= 2",
        "sortby": "-cloud,id",
        "fields": "id,properties.cloud",
        "datetime": "2013-01-01T00:00:00Z/2013-12-31T23:59:59Z",
        "collections": "syn",
        "limit": 4,
    }
    items = {i["id"]: i["properties"] for i in synthetic_items()}
    want = sorted((i for i in items if items[i].get("cloud", -1) >= 2),
                  key=lambda i: (-items[i]["cloud"], i))  # fmt: skip
    pages = all_pages(syn, "GET", params)
    assert len(pages) == -(-len(want) // 4)
    for page in pages[:-1]:
        nxt = next(link for link in page["links"] if link["rel"] == "next")
        kept = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(nxt["href"]).query))
        assert kept.pop("token") and kept == {k: str(v) for k, v in params.items()}
    features = [f for page in pages for f in page["features"]]
    assert [f["id"] for f in features] == want
    assert all(
        set(f) == {"type", "id", "collection", "links", "properties"}
        and set(f["properties"]) == {"cloud"}
        for f in features
    )
    body = {**params, "collections": ["syn"], "sortby": [{"field": "cloud", "direction": "desc"}],
            "fields": {"include": ["id", "properties.cloud"]}}  # fmt: skip
    pages = all_pages(syn, "POST", body)
    for page in pages[:-1]:
        nxt = next(link for link in page["links"] if link["rel"] == "next")
        assert {k: v for k, v in nxt["body"].items() if k != "token"} == body
    assert [f["id"] for page in pages for f in page["features"]] == want


# -- 10. no server paths ----------------------------------------------------------------------


def test_items_show_keys_relative_to_their_source_not_server_paths(syn: TestClient) -> None:
    item = syn.get("/stac/collections/syn/items/i0003").json()
    assert item["properties"]["pixelfleet:source"] == "bucket"
    assert item["properties"]["description"] == "k/3.tif (bucket)"
    page = syn.get("/stac/search", params={"limit": 100}).text
    assert "/srv/private" not in page and "/srv/private" not in syn.get("/stac/collections").text


def test_the_demo_catalog_shows_no_path_of_the_server(
    demo: TestClient, demo_urls: tuple[str, str, Path]
) -> None:
    folder = str(demo_urls[2])
    item = demo.get("/stac/collections/demo/items/photos/flower.jpg").json()
    assert item["properties"]["pixelfleet:source"] == "bucket"
    assert item["properties"]["description"].startswith("photos/flower.jpg (bucket)")
    for url in ("/stac/search?limit=100", "/stac/collections", "/stac/queryables", "/stac"):
        assert folder not in demo.get(url).text, url
    body = demo.post("/stac/search", json={"limit": 100, "fields": {"exclude": ["assets"]}})
    assert folder not in body.text


# -- errors and clients -----------------------------------------------------------------------


def test_errors_are_json_with_code_and_description(syn: TestClient) -> None:
    for response in (
        syn.get("/stac/collections/nope"),
        syn.get("/stac/collections/syn/items/nope"),
        syn.post("/stac/collections/syn/items", json={}),
        syn.post("/stac/search", content=b"x" * 300_000),
        syn.post("/stac/search", content=b"{"),
        syn.get("/stac/search", params={"unknown": "1"}),
    ):
        text = bad(response)
        assert response.headers["content-type"] == "application/json"
        assert len(text) > 10
    assert syn.post("/stac/search", content=b"x" * 300_000).status_code == 413
    assert syn.post("/stac/collections/syn/items", json={}).status_code == 401


def test_pystac_client_filters_sorts_cuts_and_pages_without_warnings(demo_app: Any) -> None:
    from pystac_client import Client
    from pystac_client.warnings import DoesNotConformTo

    with live_server(demo_app) as base, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = Client.open(f"{base}/stac")
        for method in ("GET", "POST"):
            search = client.search(
                collections=["demo"],
                filter="pixelfleet:size > 1000",
                filter_lang="cql2-text",
                sortby="-pixelfleet:size",
                fields=["id", "properties.pixelfleet:size", "properties.datetime"],
                limit=4,
                method=method,
            )
            found = list(search.items_as_dicts())
            sizes = [f["properties"]["pixelfleet:size"] for f in found]
            assert len(found) == 15 and sizes == sorted(sizes, reverse=True)
            assert all(set(f) == {"type", "id", "collection", "links", "properties"} for f in found)
        assert client.get_merged_queryables(["demo"])["properties"]["pixelfleet:size"] == {
            "title": "pixelfleet:size",
            "type": "integer",
        }
        cql = {"op": "=", "args": [{"property": "pixelfleet:datetime_source"}, "metadata"]}
        found = client.search(filter=cql, sortby="id", max_items=5)
        assert [i.id for i in found.items()] == ["photos/flower.jpg"]
        # by datetime over pages: the demo's year-range items (datetime null) come last
        newest = client.search(collections=["demo"], sortby="-properties.datetime", limit=4)
        dated = [i["properties"]["datetime"] for i in newest.items_as_dicts()]
        present = [d for d in dated if d is not None]
        assert len(dated) == 15 and dated == sorted(present, reverse=True) + [None] * 8
    unconforming = [w for w in caught if issubclass(w.category, DoesNotConformTo)]
    assert not unconforming, [str(w.message) for w in unconforming]
