"""``bigearth-stac search``: parse options, call :meth:`Catalog.search`, print the result."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from bigearth_stac._predicates import QueryError
from bigearth_stac.catalog import Catalog, CatalogError
from bigearth_stac.search import SearchResult
from bigearth_stac.settings import StorageSettings
from bigearth_stac.vocab import UnknownLabelError

FORMATS = ("ids", "geojson", "parquet", "table")
TABLE_COLUMNS = ("id", "datetime", "split", "country", "season", "labels_19")


def _min_fractions(values: tuple[str, ...]) -> dict[str, float] | None:
    """``("Coniferous forest=0.3", "312=0.1")`` -> ``{"Coniferous forest": 0.3, "312": 0.1}``."""
    if not values:
        return None
    out: dict[str, float] = {}
    for text in values:
        name, sep, number = text.rpartition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(number)
        except ValueError:
            raise QueryError(f"--min-fraction {text!r}: write CLASS=FRACTION, e.g. 'Coniferous forest=0.3' or "
                             "312=0.3 (a 43-class name or CLC code, a fraction from 0 to 1)") from None
    return out


def _write_geojson(result: SearchResult, out: Any) -> None:
    # One item at a time: never a list of every item in memory.
    out.write('{"type": "FeatureCollection", "features": [')
    first = True
    for item in result.to_item_collection().items:
        out.write(("" if first else ",") + "\n" + json.dumps(item.to_dict(transform_hrefs=False)))
        first = False
    out.write("\n]}\n")


def _write_table(result: SearchResult, out: Any) -> None:
    rows = 0
    out.write("\t".join(TABLE_COLUMNS) + "\n")
    for row in result:
        cells = [row["id"], row["datetime"].isoformat() if row["datetime"] else "", row["split"] or "",
                 row["country"] or "", row["season"] or "", "; ".join(row["labels_19"] or [])]
        out.write("\t".join(cells) + "\n")
        rows += 1
    click.echo(f"{rows} patches", err=True)


@click.command("search")
@click.argument("catalog")
@click.option("--label", "labels", multiple=True,
              help="Class name of either nomenclature, e.g. 'Olive groves' (43) or 'Permanent crops' (19); "
                   "repeat for several.")
@click.option("--match", type=click.Choice(["any", "all"]), default="any", show_default=True,
              help="A patch needs any / all of the labels.")
@click.option("--nomenclature", type=click.Choice(["19", "43"]), default="19", show_default=True,
              help="Where a class name of both nomenclatures is searched (the same patches either way).")
@click.option("--bbox", help="W,S,E,N in degrees.")
@click.option("--datetime", "datetime_", help="Timestamp, date or interval start/end ('..' open).")
@click.option("--split", "splits", multiple=True, type=click.Choice(["train", "validation", "test"]))
@click.option("--country", "countries", multiple=True)
@click.option("--season", "seasons", multiple=True)
@click.option("--exclude-snow", is_flag=True, help="Drop patches with seasonal snow.")
@click.option("--exclude-clouds", is_flag=True, help="Drop patches with clouds or shadow.")
@click.option("--modality", type=click.Choice(["s2", "s1", "pair"]), default="s2", show_default=True)
@click.option("--min-fraction", "min_fractions", multiple=True, metavar="CLASS=FRACTION",
              help="BigEarthNet v2.0: at least this share of the reference map, e.g. 'Coniferous forest=0.3' "
                   "or 312=0.3 (43-class name or CLC code); repeat for several (all must hold).")
@click.option("--release", help="v1.0 or v2.0 (v1, v2) in a catalog holding both; default: the only one, "
                                "or v2.0.")
@click.option("--filter", "filter_", help="CQL2 text (or JSON) filter.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="ids", show_default=True)
@click.option("--limit", type=int, help="At most this many patches.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write here instead of stdout "
              "(required for parquet).")
@click.option("--endpoint-url", help="S3 endpoint for s3:// catalogs (default: AWS / $AWS_ENDPOINT_URL).")
def search(catalog: str, labels: tuple[str, ...], match: str, nomenclature: str, bbox: str | None,
           datetime_: str | None, splits: tuple[str, ...], countries: tuple[str, ...], seasons: tuple[str, ...],
           exclude_snow: bool, exclude_clouds: bool, modality: str, min_fractions: tuple[str, ...],
           release: str | None, filter_: str | None, fmt: str, limit: int | None, output: str | None,
           endpoint_url: str | None) -> None:
    """Search CATALOG (a path, http(s):// or s3:// URL of its root) by label, region, time, split..."""
    settings = StorageSettings.from_env(**({"endpoint_url": endpoint_url} if endpoint_url else {}))
    try:
        cat = Catalog.open(catalog, settings=settings)
        fractions = _min_fractions(min_fractions)
        result = cat.search(
            labels=list(labels) or None, match=match, nomenclature=nomenclature, bbox=bbox,
            datetime=datetime_, split=list(splits) or None, countries=list(countries) or None,
            seasons=list(seasons) or None, exclude_snow=exclude_snow, exclude_clouds=exclude_clouds,
            modality=modality, limit=limit, filter=filter_, min_fractions=fractions, release=release,
        )
        if fmt == "parquet":
            if not output:
                raise click.UsageError("--format parquet needs --output FILE")
            import pyarrow.parquet as pq

            with pq.ParquetWriter(output, result.index.schema, compression="zstd") as writer:
                for batch in result.batches():
                    writer.write_batch(batch)
            return
        out = open(output, "w") if output else sys.stdout  # noqa: SIM115
        try:
            if fmt == "ids":
                for batch in result.batches(["id"]):
                    for i in batch.column(0).to_pylist():
                        out.write(i + "\n")
            elif fmt == "geojson":
                _write_geojson(result, out)
            else:
                _write_table(result, out)
        finally:
            if output:
                out.close()
    except (QueryError, UnknownLabelError, CatalogError) as exc:
        raise click.ClickException(str(exc)) from None
