"""``bigearth-stac search`` on the six real pairs: every output format, errors as messages."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from bigearth_stac import Catalog
from bigearth_stac.cli import main


@pytest.fixture(scope="module")
def cat(real_catalog: Path) -> Catalog:
    return Catalog.open(str(real_catalog))


def run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, ["search", *args])
    return res.exit_code, res.stdout, res.stderr


def test_ids_by_label(real_catalog: Path, cat: Catalog) -> None:
    code, out, _ = run(str(real_catalog), "--label", "Coniferous forest")
    assert code == 0
    assert out.split() == cat.search(labels="Coniferous forest").ids() and out.split()


def test_all_options_together(real_catalog: Path, cat: Catalog) -> None:
    args = ["--label", "Pastures", "--label", "Coniferous forest", "--match", "any", "--bbox", "-11,35,30,70",
            "--split", "train", "--exclude-snow", "--exclude-clouds", "--datetime", "2017-01-01/..",
            "--filter", "season in ('Summer', 'Fall', 'Winter')", "--limit", "10"]
    code, out, _ = run(str(real_catalog), *args)
    assert code == 0, out
    expected = cat.search(labels=["Pastures", "Coniferous forest"], bbox="-11,35,30,70", split="train",
                          exclude_snow=True, exclude_clouds=True, datetime="2017-01-01/..",
                          filter="season in ('Summer', 'Fall', 'Winter')", limit=10).ids()
    assert out.split() == expected


def test_formats(real_catalog: Path, tmp_path: Path, cat: Catalog) -> None:
    every = cat.search().ids()
    code, out, _ = run(str(real_catalog), "--format", "geojson")
    assert code == 0 and [f["id"] for f in json.loads(out)["features"]] == every
    code, out, err = run(str(real_catalog), "--format", "table", "--country", "Portugal", "--nomenclature", "43",
                         "--label", "Broad-leaved forest")
    assert code == 0 and out.splitlines()[0].startswith("id\t") and "Portugal" in out
    target = tmp_path / "hits.parquet"
    code, _, _ = run(str(real_catalog), "--format", "parquet", "--output", str(target), "--modality", "s1")
    assert code == 0 and pq.read_table(target).column("id").to_pylist() == cat.search(modality="s1").ids()
    code, _, err = run(str(real_catalog), "--format", "parquet")
    assert code != 0 and "--output" in err


def test_labels_of_either_nomenclature(real_catalog: Path, cat: Catalog) -> None:
    for name in ("Airports", "Broad-leaved forest", "Non-irrigated arable land", "Arable land"):
        code, out, err = run(str(real_catalog), "--label", name)  # 43-only names needed --nomenclature 43
        assert code == 0, err
        assert out.split() == cat.search(labels=name).ids()
    code, out, _ = run(str(real_catalog), "--label", "Non-irrigated arable land", "--label", "Coniferous forest",
                       "--match", "all")
    assert code == 0 and out.split() == cat.search(labels=["Non-irrigated arable land", "Coniferous forest"],
                                                   match="all").ids()


@pytest.mark.parametrize(("args", "message"), [
    (["--label", "Port area"], "Did you mean 'Port areas' (43)"),
    (["--label", "Coniferus forest"], "Did you mean 'Coniferous forest'"),
    (["--limit", str(2**63)], "9,223,372,036,854,775,808"),
    (["--filter", "id = labels_19"], "labels_19"),
    (["--filter", "NOT " * 13 + "id = 'x'"], "(the limit)"),
    (["--bbox", "1,2,3"], "four numbers"),
    (["--datetime", "last week"], "RFC 3339"),
    (["--filter", "s_within(geometry, BBOX(0,0,1,1))"], "s_within"),
])
def test_errors(real_catalog: Path, args: list[str], message: str) -> None:
    code, _, err = run(str(real_catalog), *args)
    assert code == 1 and message in err
