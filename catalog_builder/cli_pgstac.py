"""``catalog-builder load-pgstac``: parse arguments, draw progress, call :func:`load_pgstac`."""

from __future__ import annotations

import sys

import click
from tqdm import tqdm


@click.command("load-pgstac")
@click.argument("catalog_url")
@click.option("--dsn", envvar="BIGEARTH_STAC_LOAD_DSN", required=True,
              help="PostgreSQL DSN of a user that may write (and, on first load, install pgstac): "
                   "postgresql://user:...@host:5432/db (default: $BIGEARTH_STAC_LOAD_DSN).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Items per committed transaction (a rerun resumes after the last whole chunk).")
@click.option("--label-index/--no-label-index", default=True, show_default=True,
              help="GIN indexes on bigearthnet:labels_19 and labels_43 (label queries use them).")
@click.option("--reader-role", default=None,
              help="Also create (or update) this login role with only pgstac_read, for `bigearth-stac serve`.")
@click.option("--reader-password", envvar="BIGEARTH_STAC_READER_PASSWORD", default=None,
              help="Its password (default: $BIGEARTH_STAC_READER_PASSWORD).")
@click.option("--allow", "allow", multiple=True,
              help="Another root the catalog's hrefs may point into (repeatable).")
@click.option("--endpoint-url", default=None, help="S3 endpoint for s3:// catalogs (default: AWS / $AWS_ENDPOINT_URL).")
def load_pgstac(catalog_url: str, dsn: str, chunk_size: int, label_index: bool, reader_role: str | None,
                reader_password: str | None, allow: tuple[str, ...], endpoint_url: str | None) -> None:
    """Load the published catalog at CATALOG_URL (folder, https:// or s3://) into pgstac.

    Reads the collections and the stac-geoparquet indexes (no item JSON is crawled), upserts
    every item in chunks (a rerun is idempotent and resumes an interrupted load), and registers
    queryables for both label sets, split, country, season and the snow and cloud flags.
    Exit code 1 names what failed.
    """
    from bigearth_stac.settings import StorageSettings
    from catalog_builder.pgstac_load import PgstacError, create_reader_role
    from catalog_builder.pgstac_load import load_pgstac as run_load

    if reader_role and not reader_password:
        raise click.BadParameter("--reader-role needs --reader-password (or $BIGEARTH_STAC_READER_PASSWORD)",
                                 param_hint="--reader-password")
    settings = StorageSettings.from_env(**({"endpoint_url": endpoint_url} if endpoint_url else {}))
    bars: dict[str, tqdm] = {}

    def progress(collection: str, done: int) -> None:
        bar = bars.get(collection)
        if bar is None:
            bar = bars[collection] = tqdm(total=None, unit="item", desc=collection, disable=None)
        bar.update(done - bar.n)

    try:
        report = run_load(catalog_url, dsn, settings, chunk_size=chunk_size, label_index=label_index,
                          allow=allow, progress=progress)
        reader_dsn = (create_reader_role(dsn, reader_role, reader_password)
                      if reader_role and reader_password else None)
    except (PgstacError, ValueError, OSError, ImportError) as exc:
        click.echo(f"load-pgstac: {exc}", err=True)
        sys.exit(1)
    finally:
        for bar in bars.values():
            bar.close()
    click.echo(report.describe())
    if reader_role:
        from bigearth_stac.serve import redact_dsn

        click.echo(f"read-only role {reader_role!r}: serve with --dsn {redact_dsn(reader_dsn or '')}")
