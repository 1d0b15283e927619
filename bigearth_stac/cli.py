"""``bigearth-stac``: search a catalog, show a patch, validate a catalog (a thin layer over the library)."""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys

import click


@click.group()
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Search and read BigEarthNet STAC catalogs (local, http(s) or s3://)."""
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), format="%(levelname)s %(name)s: %(message)s")


# Each command lives in its own module, next to the library code it drives.
for _module, _name in (("bigearth_stac.cli_search", "search"), ("bigearth_stac.cli_show", "show"),
                       ("bigearth_stac.cli_serve", "serve")):
    with contextlib.suppress(ImportError):  # a command whose module is absent is simply not offered
        main.add_command(getattr(importlib.import_module(_module), _name))


@main.command("validate")
@click.argument("catalog")
@click.option("--schemas", "schema_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="A local mirror of https://stac-extensions.github.io/ (<ext>/<version>/schema.json) "
                   "for extensions the package does not ship.")
@click.option("--max-items", type=click.IntRange(min=0), default=None,
              help="Validate at most N items of each tile catalog (a quick check of a large catalog).")
@click.option("--endpoint-url", default=None, help="S3 endpoint for s3:// catalogs (default: AWS / $AWS_ENDPOINT_URL).")
def validate(catalog: str, schema_dir: str | None, max_items: int | None, endpoint_url: str | None) -> None:
    """Validate every document of CATALOG (a folder, https:// or s3://) offline, by crawling its links.

    Schemas come from the package (STAC core, the extensions the builder writes, the bigearthnet:
    extension); nothing is fetched. Exit code 1 when a document is invalid or unreachable, each
    named with its error.
    """
    from bigearth_stac.settings import StorageSettings
    from bigearth_stac.validate import validate_catalog

    settings = StorageSettings.from_env(**({"endpoint_url": endpoint_url} if endpoint_url else {}))
    count, problems = validate_catalog(catalog, schema_dir, settings=settings, max_items=max_items)
    for problem in problems:
        click.echo(f"invalid: {problem}", err=True)
    click.echo(f"{count} documents validated offline: {len(problems)} problems")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
