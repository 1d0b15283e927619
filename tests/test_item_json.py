"""Column-wise item documents (:mod:`bigearth_stac.item_json`) equal stac-geoparquet's row-wise items."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import stac_geoparquet.arrow as sga

from bigearth_stac import Catalog
from bigearth_stac.contract import LABEL_MASK_COLUMNS
from bigearth_stac.hrefs import HrefError
from bigearth_stac.item_json import item_batch, item_json, iter_item_dicts, resolve_batch


def reference_items(catalog: Catalog, modality: str, release: str | None = None) -> list[dict[str, Any]]:
    """The items as stac-geoparquet builds them row by row, hrefs resolved one by one."""
    result = catalog.search(modality=modality, release=release)
    scope = catalog.scope
    out = []
    for batch in result.batches(batch_size=4096):
        for d in sga.stac_table_to_items(pa.Table.from_batches([batch])):
            for column in LABEL_MASK_COLUMNS.values():
                d["properties"].pop(column, None)
            for asset in d.get("assets", {}).values():
                asset["href"] = scope.resolve(result.index.url, asset["href"])
            for link in d.get("links", []):
                link["href"] = scope.resolve_link(result.index.url, link)
            out.append(d)
    return out


@pytest.mark.parametrize("modality", ["s2", "s1"])
def test_items_equal_stac_geoparquet_v1(synthetic_catalog: Path, modality: str) -> None:
    catalog = Catalog.open(str(synthetic_catalog))
    want = reference_items(catalog, modality)
    got = list(catalog.search(modality=modality).item_dicts())
    assert len(got) == len(want) > 0
    assert got == want


@pytest.mark.parametrize("modality", ["s2", "s1"])
def test_items_equal_stac_geoparquet_v2(v2_catalog: Path, modality: str) -> None:
    catalog = Catalog.open(str(v2_catalog), release="v2")
    want = reference_items(catalog, modality, "v2")
    got = list(catalog.search(modality=modality).item_dicts())
    assert len(got) == len(want) > 0
    assert got == want
    assert all("bigearthnet:label_mask_19" not in d["properties"] for d in got)


def test_real_items_match_their_json_files(real_catalog: Path) -> None:
    """The index's items are the item files the builder wrote, hrefs made absolute."""
    catalog = Catalog.open(str(real_catalog))
    for d in catalog.search(modality="s2").item_dicts():
        on_disk = json.loads(next(real_catalog.rglob(f"{d['id']}.json")).read_text())
        assert d["properties"]["bigearthnet:labels_43"] == on_disk["properties"]["bigearthnet:labels_43"]
        assert d["geometry"] == on_disk["geometry"]
        assert d["bbox"] == on_disk["bbox"]
        for key, asset in d["assets"].items():
            assert Path(asset["href"]).is_file()
            assert Path(asset["href"]).name == Path(on_disk["assets"][key]["href"]).name


def test_null_asset_takes_the_row_wise_path(synthetic_catalog: Path) -> None:
    catalog = Catalog.open(str(synthetic_catalog))
    result = catalog.search(modality="s2")
    batch = next(iter(result.batches(batch_size=4096)))
    assets = batch.column("assets")
    key = assets.type.field(0).name
    first = assets.field(0)
    holed = pa.StructArray.from_arrays(
        [first.field(i) for i in range(first.type.num_fields)],
        fields=[first.type.field(i) for i in range(first.type.num_fields)],
        mask=pa.array([True] + [False] * (len(first) - 1)))
    new_assets = pa.StructArray.from_arrays([holed, *[assets.field(i) for i in range(1, assets.type.num_fields)]],
                                            fields=[assets.type.field(i) for i in range(assets.type.num_fields)])
    batch = batch.set_column(batch.schema.get_field_index("assets"), "assets", new_assets)
    assert item_json(item_batch(resolve_batch(batch, result.index.url, catalog.scope))) is None
    items = list(iter_item_dicts(iter([batch]), result.index.url, catalog.scope))
    assert key not in items[0]["assets"] and key in items[1]["assets"]
    assert items[0]["geometry"]["type"] == "Polygon"


def test_an_href_leaving_the_catalog_is_refused(synthetic_catalog: Path) -> None:
    catalog = Catalog.open(str(synthetic_catalog))
    result = catalog.search(modality="s2")
    batch = next(iter(result.batches(batch_size=4096)))
    links = batch.column("links")
    flat = links.values
    hrefs = flat.field("href").to_pylist()
    hrefs[-1] = "../../../../../../etc/passwd"
    new_flat = pa.StructArray.from_arrays(
        [pa.array(hrefs) if flat.type.field(i).name == "href" else flat.field(i) for i in range(flat.type.num_fields)],
        fields=[flat.type.field(i) for i in range(flat.type.num_fields)])
    batch = batch.set_column(batch.schema.get_field_index("links"), "links",
                             pa.ListArray.from_arrays(links.offsets, new_flat))
    with pytest.raises(HrefError, match="passwd"):
        resolve_batch(batch, result.index.url, catalog.scope)
