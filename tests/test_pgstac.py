"""The STAC API backend: pgstac + stac-fastapi-pgstac, searched through bigearth_stac and pystac-client.

A real server: the module starts its own PostgreSQL + PostGIS cluster and the API (uvicorn) on
loopback, by process id, and stops both at the end. It builds one catalog from the six real
pairs and the 40 synthetic pairs, loads it with ``load_pgstac`` (from the geoparquet index),
and checks that the same queries return the same id sets from the embedded index and from the
API, through :class:`bigearth_stac.api.ApiCatalog` and through plain pystac-client, with pages
small enough that every multi-item answer spans several. Skipped, naming what is missing, only
where PostgreSQL or PostGIS is not installed.
"""

from __future__ import annotations

import json
import shutil
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pystac_client
import pytest
from bigearth_devtools.postgres import (
    ApiServer,
    PostgresCluster,
    free_port,
    postgres_missing,
    start_api,
    start_postgres,
)
from click.testing import CliRunner

from bigearth_stac import Catalog
from bigearth_stac._predicates import LabelQueryError, QueryError
from bigearth_stac.api import ApiCatalog, is_stac_api
from bigearth_stac.catalog import CatalogError
from bigearth_stac.serve import (
    PgstacWriterError,
    check_database,
    expected_pgstac_version,
    writable_tables,
)
from catalog_builder.build import BuildOptions, build
from catalog_builder.pgstac_load import (
    NotACatalogError,
    PgstacConnectionError,
    PgstacVersionError,
    create_reader_role,
    install_pgstac,
    load_pgstac,
)
from catalog_builder.sources import open_source
from catalog_builder.store import LocalStore

MISSING = postgres_missing()
pytestmark = [
    pytest.mark.pgstac,
    pytest.mark.xdist_group("pgstac"),  # one cluster and one API per worker
    pytest.mark.skipif(MISSING is not None, reason=f"pgstac tests need PostgreSQL + PostGIS: {MISSING}"),
]

PAGE = 7  # items per API page: a 46-item answer takes 7 pages
READER, READER_PASSWORD = "bigearth_reader", "read only, spaces & symbols: %+@"
N_PAIRS = 46


# -- fixtures: one cluster, one combined catalog, one loaded database, one API -----------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with start_postgres() as c:
        yield c
    assert not c.alive()


@pytest.fixture(scope="module")
def combined_catalog(real_raw: tuple[Path, Path], synthetic_raw: tuple[Path, Path],
                     tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The six real pairs and the 40 synthetic ones in one raw tree, built into one catalog."""
    raw = tmp_path_factory.mktemp("pgstac-raw")
    for (s2, s1) in (real_raw, synthetic_raw):
        for src, dst in ((s2, raw / "S2"), (s1, raw / "S1")):
            dst.mkdir(exist_ok=True)
            for patch in Path(src).iterdir():
                if patch.is_dir():
                    shutil.copytree(patch, dst / patch.name)
    out = tmp_path_factory.mktemp("pgstac-catalog")
    report = build(open_source(str(raw / "S2"), str(raw / "S1")), LocalStore(out),
                   BuildOptions(layout="stacked", scheduler="synchronous"))
    assert report.ok, report.describe()
    return out


@pytest.fixture(scope="module")
def loaded(cluster: PostgresCluster, combined_catalog: Path) -> dict[str, Any]:
    admin = cluster.create_database("bigearth")
    report = load_pgstac(str(combined_catalog), admin, chunk_size=16)
    reader = create_reader_role(admin, READER, READER_PASSWORD)
    return {"admin": admin, "reader": reader, "report": report}


@pytest.fixture(scope="module")
def api(loaded: dict[str, Any]) -> Iterator[ApiServer]:
    server = start_api(loaded["reader"])
    try:
        yield server
    finally:
        server.stop()
    assert not server.alive()


@pytest.fixture(scope="module")
def embedded(combined_catalog: Path) -> Catalog:
    return Catalog.open(str(combined_catalog))


@pytest.fixture(scope="module")
def remote(api: ApiServer) -> ApiCatalog:
    return ApiCatalog.open(api.url, page_size=PAGE)


def _items_md5(dsn: str, cluster: PostgresCluster) -> str:
    dbname = dsn.rsplit("/", 1)[1]
    rows = cluster.execute("SELECT md5(string_agg(collection || id || content::text || geometry::text, '|' "
                           "ORDER BY collection, id)) FROM pgstac.items", dbname=dbname)
    return str(rows[0][0])


# -- loading -------------------------------------------------------------------------------------


def test_load_counts_queryables_and_label_indexes(cluster: PostgresCluster, loaded: dict[str, Any]) -> None:
    report = loaded["report"]
    assert report.installed and report.pgstac_version == expected_pgstac_version()
    assert report.items == report.in_database == {"bigearthnet-s2": N_PAIRS, "bigearthnet-s1": N_PAIRS}
    assert "***" in report.dsn and cluster.password not in report.dsn
    names = {r[0]: r[1] for r in cluster.execute(
        "SELECT name, property_index_type FROM pgstac.queryables", dbname="bigearth")}
    for name in ("labels_19", "labels_43"):
        assert names[f"bigearthnet:{name}"] == "GIN"
    for name in ("split", "country", "season", "seasonal_snow", "cloud_or_shadow"):
        assert f"bigearthnet:{name}" in names
    indexes = [r[0] for r in cluster.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'pgstac' AND tablename LIKE '\\_items\\_%' "
        "AND indexdef LIKE '%USING gin%labels_%'", dbname="bigearth")]
    assert len([i for i in indexes if "labels_19" in i]) == 2  # one per collection partition
    assert len([i for i in indexes if "labels_43" in i]) == 2
    from bigearth_stac.serve import connect

    with connect(loaded["admin"]) as con:  # the operator pgstac emits for a_overlaps can use them
        con.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in con.execute(
            "EXPLAIN SELECT id FROM pgstac.items WHERE pgstac.to_text_array(content->'properties'->"
            "'bigearthnet:labels_19') && ARRAY['Arable land']").fetchall())
    assert "Bitmap Index Scan on _items_" in plan, plan


def test_assets_absolute_and_via_links(cluster: PostgresCluster, loaded: dict[str, Any],
                                       combined_catalog: Path) -> None:
    root = combined_catalog.resolve().as_uri()
    (content,) = cluster.execute("SELECT content FROM pgstac.items WHERE collection = 'bigearthnet-s2' LIMIT 1",
                                 dbname="bigearth")[0]
    hrefs = [a["href"] for a in content["assets"].values()]
    assert hrefs and all(h.startswith(root + "/bigearthnet-s2/") for h in hrefs)
    rels = {link["rel"]: link["href"] for link in content["links"]}
    assert set(rels) == {"related", "via"}
    assert rels["via"].startswith(root) and rels["related"].startswith(root + "/bigearthnet-s1/")
    (coll,) = cluster.execute("SELECT content FROM pgstac.collections WHERE id = 'bigearthnet-s2'",
                              dbname="bigearth")[0]
    assert {"rel": "via", "href": f"{root}/bigearthnet-s2/collection.json"}.items() <= next(
        link for link in coll["links"] if link["rel"] == "via").items()
    assert not {"root", "parent", "child", "self"} & {link["rel"] for link in coll["links"]}
    assert coll["assets"]["geoparquet-items"]["href"] == f"{root}/index/bigearthnet-s2.parquet"


def test_rerun_is_idempotent(cluster: PostgresCluster, loaded: dict[str, Any], combined_catalog: Path) -> None:
    before = _items_md5(loaded["admin"], cluster)
    again = load_pgstac(str(combined_catalog), loaded["admin"], chunk_size=16)
    assert not again.installed and again.queryables_changed == 0 < loaded["report"].queryables_changed
    assert again.in_database == loaded["report"].in_database
    assert _items_md5(loaded["admin"], cluster) == before


def _rows_md5(dsn: str, cluster: PostgresCluster) -> str:
    dbname = dsn.rsplit("/", 1)[1]
    rows = cluster.execute("SELECT md5(string_agg(concat_ws('|', collection, id, datetime, end_datetime, content::text, "
                           "private::text, ST_AsEWKB(geometry)::text), '|' ORDER BY collection, id)) FROM pgstac.items",
                           dbname=dbname)
    return str(rows[0][0])


@pytest.mark.parametrize("which", ["v1", "v2"])
def test_columnwise_rows_equal_pypgstac_rows(cluster: PostgresCluster, loaded: dict[str, Any], combined_catalog: Path,
                                             v2_catalog: Path, which: str) -> None:
    """The column-wise load writes exactly the rows pypgstac writes from the item dicts."""
    root = str(combined_catalog if which == "v1" else v2_catalog)
    fast_dsn = loaded["admin"] if which == "v1" else cluster.create_database("fast_v2")
    fast = loaded["report"] if which == "v1" else load_pgstac(root, fast_dsn, chunk_size=16)
    assert fast.row_wise == 0 and sum(fast.in_database.values()) > 0
    ref_dsn = cluster.create_database(f"reference_{which}")
    ref = load_pgstac(root, ref_dsn, chunk_size=16, columnwise=False)
    assert ref.in_database == fast.in_database
    assert _rows_md5(ref_dsn, cluster) == _rows_md5(fast_dsn, cluster)
    hydrated = cluster.execute("SELECT pgstac.get_item(id, collection) FROM pgstac.items ORDER BY id LIMIT 1",
                               dbname=fast_dsn.rsplit("/", 1)[1])[0][0]
    assert hydrated["assets"] and all(a["href"].startswith("file://") for a in hydrated["assets"].values())
    for name in {ref_dsn.rsplit("/", 1)[1], fast_dsn.rsplit("/", 1)[1]} - {loaded["admin"].rsplit("/", 1)[1]}:
        cluster.drop_database(name)


def test_interrupted_load_resumes(cluster: PostgresCluster, loaded: dict[str, Any], combined_catalog: Path) -> None:
    dsn = cluster.create_database("resume")

    class Interrupted(Exception):
        pass

    def stop_after_20(collection: str, done: int) -> None:
        if collection == "bigearthnet-s2" and done == 20:
            raise Interrupted

    with pytest.raises(Interrupted):
        load_pgstac(str(combined_catalog), dsn, chunk_size=8, progress=stop_after_20)
    partial = cluster.execute("SELECT count(*) FROM pgstac.items", dbname="resume")[0][0]
    assert 0 < partial < N_PAIRS  # whole chunks committed, the rest not
    report = load_pgstac(str(combined_catalog), dsn, chunk_size=8)
    assert report.in_database == {"bigearthnet-s2": N_PAIRS, "bigearthnet-s1": N_PAIRS}
    assert _items_md5(dsn, cluster) == _items_md5(loaded["admin"], cluster)
    cluster.drop_database("resume")


def test_load_from_s3(cluster: PostgresCluster, combined_catalog: Path, s3_server: Any, s3_bucket: str) -> None:
    """A catalog published to S3 (the loopback moto server): only its JSON and indexes are read."""
    client = s3_server.client()
    for path in [combined_catalog / "catalog.json", *combined_catalog.glob("*/collection.json"),
                 *combined_catalog.glob("index/*.parquet")]:
        client.put_object(Bucket=s3_bucket, Key=f"bigearthnet/{path.relative_to(combined_catalog).as_posix()}",
                          Body=path.read_bytes())
    dsn = cluster.create_database("froms3")
    report = load_pgstac(f"s3://{s3_bucket}/bigearthnet", dsn, settings=s3_server.settings)
    assert report.in_database == {"bigearthnet-s2": N_PAIRS, "bigearthnet-s1": N_PAIRS}
    (content,) = cluster.execute("SELECT content FROM pgstac.items WHERE collection = 'bigearthnet-s1' LIMIT 1",
                                 dbname="froms3")[0]
    root = f"s3://{s3_bucket}/bigearthnet/"
    assert all(a["href"].startswith(root + "bigearthnet-s1/") for a in content["assets"].values())
    assert {link["rel"]: link["href"][: len(root)] for link in content["links"]} == {"related": root, "via": root}
    cluster.drop_database("froms3")


def test_cli_load_pgstac(cluster: PostgresCluster, loaded: dict[str, Any], combined_catalog: Path) -> None:
    from catalog_builder.cli_pgstac import load_pgstac as command

    result = CliRunner().invoke(command, [str(combined_catalog), "--chunk-size", "50"],
                                env={"BIGEARTH_STAC_LOAD_DSN": loaded["admin"]})
    assert result.exit_code == 0, result.output
    assert f"bigearthnet-s2: {N_PAIRS} items" in result.output and cluster.password not in result.output
    bad = CliRunner().invoke(command, [str(combined_catalog / "nowhere"), "--dsn", loaded["admin"]])
    assert bad.exit_code == 1 and "nowhere" in bad.output and "not a BigEarthNet catalog" in bad.output


# -- bad input -----------------------------------------------------------------------------------


def test_not_a_catalog(cluster: PostgresCluster, loaded: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "catalog.json").write_text(json.dumps({"type": "Catalog", "id": "x", "links": []}))
    for url in (str(tmp_path), str(tmp_path / "missing")):
        with pytest.raises(NotACatalogError, match=str(tmp_path)):
            load_pgstac(url, loaded["admin"])


def test_dsn_that_does_not_answer(combined_catalog: Path) -> None:
    port = free_port()
    dsn = f"postgresql://someone:hunter2@127.0.0.1:{port}/nothing"
    with pytest.raises(PgstacConnectionError, match=f"127.0.0.1:{port}/nothing") as info:
        load_pgstac(str(combined_catalog), dsn)
    assert "hunter2" not in str(info.value)
    with pytest.raises(PgstacConnectionError, match=f"127.0.0.1:{port}"):
        check_database(dsn)
    with pytest.raises(PgstacConnectionError, match="not a PostgreSQL DSN"):
        check_database("postgresql://[::1")


def test_pgstac_of_another_version(cluster: PostgresCluster, combined_catalog: Path) -> None:
    dsn = cluster.create_database("oldpgstac")
    install_pgstac(dsn)
    cluster.execute("INSERT INTO pgstac.migrations (version, datetime) VALUES ('0.9.8', now() + interval '1 day')",
                    dbname="oldpgstac")
    with pytest.raises(PgstacVersionError, match=r"pgstac 0\.9\.8.*pgstac " + expected_pgstac_version()):
        load_pgstac(str(combined_catalog), dsn)
    with pytest.raises(PgstacVersionError, match=r"0\.9\.8"):
        check_database(dsn)
    assert cluster.execute("SELECT count(*) FROM pgstac.items", dbname="oldpgstac")[0][0] == 0  # untouched
    cluster.drop_database("oldpgstac")
    empty = cluster.create_database("nopgstac")
    with pytest.raises(PgstacVersionError, match="no pgstac schema"):
        check_database(empty)
    cluster.drop_database("nopgstac")


def test_api_url_errors(api: ApiServer, tmp_path: Path) -> None:
    assert is_stac_api(api.url)
    assert not is_stac_api(api.url + "collections/bigearthnet-s2")
    assert not is_stac_api(str(tmp_path))
    assert not is_stac_api(f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(CatalogError, match=api.url + "collections"):
        ApiCatalog.open(api.url + "collections/bigearthnet-s2/items")
    nowhere = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(CatalogError, match=nowhere):
        ApiCatalog.open(nowhere, timeout=5)


def test_query_errors_as_embedded(embedded: Catalog, remote: ApiCatalog) -> None:
    for kwargs in ({"labels": "Arable lnd"}, {"split": "training"}, {"bbox": (10, 5, 0, 100)},
                   {"filter": "a_overlaps(labels_19, ('Forest'))"}, {"filter": "nonsense = 1"},
                   {"lables": ["Arable land"]}, {"modality": "s3"}):
        with pytest.raises(QueryError) as want:
            embedded.search(**kwargs).ids()
        with pytest.raises(type(want.value)) as got:
            remote.search(**kwargs)
        assert str(got.value) == str(want.value)
    with pytest.raises(LabelQueryError, match="Arable land"):
        remote.search(labels=["Arable lnd"])


# -- read only, loopback only ----------------------------------------------------------------------


def _listening(port: int) -> list[str]:
    """Local addresses listening on TCP ``port`` (from /proc/net/tcp and tcp6)."""
    out = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if int(p, 16) == port and state == "0A":  # LISTEN
                if len(addr) == 8:
                    out.append(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]))
                else:
                    out.append(socket.inet_ntop(socket.AF_INET6, b"".join(
                        bytes.fromhex(addr[i:i + 8])[::-1] for i in range(0, 32, 8))))
    return out


def test_read_only_and_loopback_only(cluster: PostgresCluster, loaded: dict[str, Any], api: ApiServer) -> None:
    assert "STAC API (read-only) at " + api.url in api.output()
    if Path("/proc/net/tcp").exists():
        assert _listening(api.port) == ["127.0.0.1"]
        assert _listening(cluster.port) == ["127.0.0.1"]
    for method, path in (("POST", "collections"), ("POST", "collections/bigearthnet-s2/items"),
                         ("DELETE", "collections/bigearthnet-s2/items/S2A_MSIL2A_20170613T101031_87_48")):
        req = urllib.request.Request(api.url + path, data=b"{}" if method == "POST" else None, method=method,
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        assert info.value.code in (404, 405), (method, path, info.value.code)
    from bigearth_stac.serve import connect

    with connect(loaded["reader"]) as con:
        assert writable_tables(con) == []
    with pytest.raises(PgstacWriterError, match="can write to pgstac.items"):
        check_database(loaded["admin"])
    assert check_database(loaded["admin"], allow_writer=True) == expected_pgstac_version()
    assert READER_PASSWORD not in api.output()


# -- the same answers from both backends -----------------------------------------------------------

POLYGON = {"type": "Polygon", "coordinates": [[[-10.0, 35.0], [5.0, 35.0], [5.0, 45.0], [-10.0, 45.0], [-10.0, 35.0]]]}

QUERIES: list[dict[str, Any]] = [
    {},
    {"labels": "Arable land"},
    {"labels": ["Coniferous forest", "Mixed forest"], "match": "all"},
    {"labels": ["Coniferous forest", "Mixed forest", "Urban fabric"]},
    {"labels": ["Non-irrigated arable land", "Pastures"], "nomenclature": "43"},
    {"labels": ["Coniferous forest", "Transitional woodland/shrub"], "match": "all", "nomenclature": "43"},
    {"labels": ["Olive groves", "Permanent crops"]},  # one name of each nomenclature
    {"bbox": (-10.6, 51.3, -5.9, 55.5)},
    {"bbox": "170,-10,-170,10"},  # across the antimeridian
    {"intersects": POLYGON},
    {"datetime": "2017-06-01/2017-08-31"},
    {"datetime": "2018-01-01/.."},
    {"datetime": "2017-06-13"},
    {"split": ["train", "test"]},
    {"split": "validation", "modality": "s1"},
    {"exclude_snow": True, "exclude_clouds": True},
    {"countries": ["portugal", "Ireland"], "seasons": ["Summer", "fall"]},
    {"labels": "Arable land", "split": "train", "exclude_snow": True, "bbox": (-11, 35, 30, 70)},
    {"modality": "pair", "labels": "Pastures"},
    {"filter": "a_overlaps(labels_19, ('Arable land')) and not split = 'train'"},
    {"filter": {"op": "a_containedBy", "args": [{"property": "labels_19"}, ["Arable land", "Pastures"]]}},
    {"filter": "a_equals(bigearthnet:labels_43, ('Non-irrigated arable land'))"},
    {"filter": "s_intersects(geometry, bbox(-10, 35, 5, 45))"},
    {"filter": "t_intersects(datetime, interval('2017-06-01', '2017-08-31'))"},
    {"filter": "split IS NULL or country IN ('Serbia', 'Kosovo')"},
    {"filter": "id LIKE 'S2A%' and proj:epsg BETWEEN 32629 AND 32633"},
    {"filter": True},
    {"filter": False},
]


@pytest.mark.parametrize("query", QUERIES, ids=[json.dumps(q, sort_keys=True)[:60] for q in QUERIES])
def test_same_ids_through_bigearth_stac(embedded: Catalog, remote: ApiCatalog, query: dict[str, Any]) -> None:
    want = embedded.search(**query).ids()
    result = remote.search(**query)
    got = result.ids()
    assert len(got) == len(set(got)) == len(result)
    assert set(got) == set(want)


def test_queries_cover_the_ground(embedded: Catalog) -> None:
    sizes = [len(embedded.search(**q)) for q in QUERIES]
    assert sum(s > PAGE for s in sizes) >= 5, "several answers must span more than one page"
    assert sum(0 < s < N_PAIRS for s in sizes) >= 15, "most queries must select a proper subset"


def _pystac_ids(client: pystac_client.Client, pages: list[int] | None = None, **kwargs: Any) -> list[str]:
    search = client.search(limit=5, **kwargs)
    ids: list[str] = []
    for page in search.pages_as_dicts():
        ids += [f["id"] for f in page["features"]]
        if pages is not None:
            pages.append(len(page["features"]))
    return ids


def test_same_ids_through_plain_pystac_client(embedded: Catalog, api: ApiServer) -> None:
    """What a STAC user writes: pystac-client, CQL2-JSON, standard search parameters."""
    client = pystac_client.Client.open(api.url)
    s2 = ["bigearthnet-s2"]

    def labels(op: str, nomenclature: str, names: list[str]) -> dict[str, Any]:
        return {"op": op, "args": [{"property": f"bigearthnet:labels_{nomenclature}"}, names]}

    pages: list[int] = []
    assert set(_pystac_ids(client, pages, collections=s2)) == set(embedded.search().ids())
    assert len(pages) == 10  # 46 items, 5 per page
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"filter": labels("a_overlaps", "19", ["Arable land", "Pastures"]), "filter_lang": "cql2-json"},
         {"labels": ["Arable land", "Pastures"]}),
        ({"filter": labels("a_contains", "19", ["Coniferous forest", "Mixed forest"]), "filter_lang": "cql2-json"},
         {"labels": ["Coniferous forest", "Mixed forest"], "match": "all"}),
        ({"filter": labels("a_overlaps", "43", ["Non-irrigated arable land", "Pastures"]),
          "filter_lang": "cql2-json"}, {"labels": ["Non-irrigated arable land", "Pastures"], "nomenclature": "43"}),
        ({"filter": labels("a_contains", "43", ["Coniferous forest", "Transitional woodland/shrub"]),
          "filter_lang": "cql2-json"},
         {"labels": ["Coniferous forest", "Transitional woodland/shrub"], "match": "all", "nomenclature": "43"}),
        ({"bbox": [-10.6, 51.3, -5.9, 55.5]}, {"bbox": (-10.6, 51.3, -5.9, 55.5)}),
        ({"intersects": POLYGON}, {"intersects": POLYGON}),
        ({"datetime": "2017-06-01/2017-08-31"}, {"datetime": "2017-06-01/2017-08-31"}),
        ({"filter": {"op": "in", "args": [{"property": "bigearthnet:split"}, ["train", "test"]]},
          "filter_lang": "cql2-json"}, {"split": ["train", "test"]}),
        ({"filter": {"op": "and", "args": [
            {"op": "=", "args": [{"property": "bigearthnet:seasonal_snow"}, False]},
            {"op": "=", "args": [{"property": "bigearthnet:cloud_or_shadow"}, False]}]}, "filter_lang": "cql2-json"},
         {"exclude_snow": True, "exclude_clouds": True}),
        ({"filter": "bigearthnet:split = 'validation' AND a_overlaps(bigearthnet:labels_19, ('Arable land'))",
          "filter_lang": "cql2-text", "method": "GET"}, {"split": "validation", "labels": "Arable land"}),
    ]
    for params, ours in cases:
        got = _pystac_ids(client, collections=s2, **params)
        assert len(got) == len(set(got))
        assert set(got) == set(embedded.search(**ours).ids()), params


def test_paging_past_several_pages(embedded: Catalog, api: ApiServer) -> None:
    small = ApiCatalog.open(api.url, page_size=3)
    for query in ({}, {"split": ["train", "test"]}, {"modality": "s1"}):
        got = small.search(**query).ids()
        assert len(got) > 3 * 5
        assert len(got) == len(set(got)) and set(got) == set(embedded.search(**query).ids())
    limited = small.search(limit=10)
    assert len(limited) == 10 and set(limited.ids()) <= set(embedded.search().ids())
    assert len(small.search(limit=0)) == 0


# -- the same items, samples, tensors and cubes ------------------------------------------------------


def _without_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def test_same_items_and_rows(embedded: Catalog, remote: ApiCatalog) -> None:
    query = {"labels": "Arable land"}
    want = {d["id"]: d for d in embedded.search(**query).item_dicts()}
    got = {d["id"]: d for d in remote.search(**query).item_dicts()}
    assert set(got) == set(want)
    for key, item in got.items():
        assert _without_none(item["properties"]) == _without_none(want[key]["properties"])
        assert item["assets"] == want[key]["assets"]
        assert item["geometry"] == want[key]["geometry"] and item["bbox"] == want[key]["bbox"]
        related = [link["href"] for link in item["links"] if link["rel"] == "related"]
        assert related == [link["href"] for link in want[key]["links"] if link["rel"] == "related"]
    rows = {r["id"]: r for r in remote.search(**query)}
    assert rows == {r["id"]: r for r in embedded.search(**query)}
    items = remote.search(**query).to_item_collection()
    assert len(items) == len(want)
    assert all(isinstance(i.properties.get("proj:epsg"), int) for i in items)


@pytest.mark.parametrize("modality", ["s2", "s1", "pair"])
def test_same_sample_table(embedded: Catalog, remote: ApiCatalog, modality: str) -> None:
    want = embedded.search(modality=modality, split=["train", "validation"]).sample_table().sort_by("id")
    got = remote.search(modality=modality, split=["train", "validation"]).sample_table().sort_by("id")
    assert got.num_rows == want.num_rows > PAGE
    assert got.select(want.column_names).equals(want)
    assert got.schema.metadata == want.schema.metadata  # the same scope travels with it
    assert "bbox" in got.column_names


def test_torch_and_xarray_through_the_api(embedded: Catalog, remote: ApiCatalog) -> None:
    from bigearth_stac.torch_dataset import BigEarthNetStream
    from bigearth_stac.xarray_view import to_xarray

    query = {"labels": ["Arable land", "Pastures"], "split": "test"}
    a = next(iter(BigEarthNetStream(embedded.search(**query), shuffle=False)))
    ids = remote.search(**query).ids()
    stream = BigEarthNetStream(remote.search(**query), shuffle=False)
    assert len(stream) == len(ids) > 0
    b = next(s for s in stream if s["id"] == a["id"])
    assert (a["label"] == b["label"]).all()
    for key in a["s2"]:
        assert (a["s2"][key] == b["s2"][key]).all()
    cube_a = to_xarray(embedded.search(**query))
    cube_b = to_xarray(remote.search(**query))
    first = cube_a.patch.values[0]
    assert np.array_equal(cube_a.s2.sel(patch=first).values, cube_b.s2.sel(patch=first).values)
    assert np.array_equal(cube_a.labels_19.sel(patch=first).values, cube_b.labels_19.sel(patch=first).values)
    assert "center_lon" in cube_b.coords


# -- both releases through the API ------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_catalog(combined_catalog: Path, v2_raw: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The v1 catalog with the v2 collections built beside it, in one root."""
    from tests.conftest import open_v2_source

    out = tmp_path_factory.mktemp("pgstac-mixed")
    shutil.copytree(combined_catalog, out, dirs_exist_ok=True)
    report = build(open_v2_source(v2_raw), LocalStore(out), BuildOptions(layout="stacked", scheduler="synchronous"))
    assert report.ok, report.describe()
    return out


def test_both_releases_load_and_search_alike(cluster: PostgresCluster, mixed_catalog: Path) -> None:
    dsn = cluster.create_database("mixed")
    report = load_pgstac(str(mixed_catalog), dsn, chunk_size=16)
    embedded = Catalog.open(str(mixed_catalog))
    assert set(report.in_database) == {"bigearthnet-s2", "bigearthnet-s1", "bigearthnet-v2-s2", "bigearthnet-v2-s1"}
    assert report.row_wise == 0
    reader = create_reader_role(dsn, "mixed_reader", "mixed-reader-pw")
    server = start_api(reader)
    try:
        remote = ApiCatalog.open(server.url, page_size=PAGE)
        assert remote.releases == embedded.releases == ("v1.0", "v2.0") and remote.release == embedded.release == "v2.0"
        for release in ("v1", "v2"):
            for query in ({}, {"labels": ["Coniferous forest"], "nomenclature": "43"}, {"split": "test"},
                          {"modality": "s1", "exclude_snow": True}):
                want = set(embedded.search(release=release, **query).ids())
                assert set(remote.search(release=release, **query).ids()) == want, (release, query)
        want = embedded.search(release="v2", split=["train", "validation"]).sample_table().sort_by("id")
        got = remote.search(release="v2", split=["train", "validation"]).sample_table().sort_by("id")
        assert got.num_rows == want.num_rows > 0
        assert "reference_map" in want.column_names and "release" in want.column_names
        assert got.select(want.column_names).equals(want)
        v2 = remote.search(release="v2", split="test")
        sample = next(iter(v2.to_torch(shuffle=False, mask="19")))
        assert sample["mask"].shape == (120, 120)
        with pytest.raises(CatalogError, match="v1.0, v2.0"):
            ApiCatalog.open(server.url, release="v3")
        assert embedded.search(release="v2", min_fractions={"Coniferous forest": 0.3}).ids() is not None
        with pytest.raises(QueryError, match="no queryable pixel fractions"):
            remote.search(release="v2", min_fractions={"Coniferous forest": 0.3})
    finally:
        server.stop()
        cluster.drop_database("mixed")


@pytest.mark.parametrize("href", ["file:///etc/hostname", "http://169.254.169.254/latest/meta-data/",
                                  "s3://another-bucket/x.tif"])
def test_an_api_item_pointing_outside_the_catalog_is_refused(cluster: PostgresCluster, loaded: dict[str, Any],
                                                             remote: ApiCatalog, href: str) -> None:
    """An item in the database whose asset leaves the published catalog: every reader refuses it."""
    from bigearth_stac.hrefs import HrefError

    victim = remote.search(labels="Arable land").ids()[0]
    db = loaded["admin"].rsplit("/", 1)[1]
    before = cluster.execute("SELECT content FROM pgstac.items WHERE id = %s", dbname=db, params=(victim,))[0][0]
    cluster.execute("UPDATE pgstac.items SET content = jsonb_set(content, '{assets,s2_10m,href}', to_jsonb(%s::text)) "
                    "WHERE id = %s", dbname=db, params=(href, victim))
    try:
        for read in (lambda r: list(r.item_dicts()), lambda r: r.sample_table(), lambda r: list(r)):
            with pytest.raises(HrefError) as err:
                read(remote.search(labels="Arable land"))
            assert href in str(err.value)
    finally:
        cluster.execute("UPDATE pgstac.items SET content = %s WHERE id = %s", dbname=db,
                        params=(json.dumps(before), victim))
