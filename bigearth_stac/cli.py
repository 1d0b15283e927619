"""``bigearth-stac``: search a catalog, show a patch (a thin layer over the library)."""

from __future__ import annotations

import contextlib
import importlib
import logging

import click


@click.group()
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Search and read BigEarthNet STAC catalogs (local, http(s) or s3://)."""
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), format="%(levelname)s %(name)s: %(message)s")


# Each command lives in its own module, next to the library code it drives.
for _module, _name in (("bigearth_stac.cli_search", "search"), ("bigearth_stac.cli_show", "show")):
    with contextlib.suppress(ImportError):  # a command whose module is absent is simply not offered
        main.add_command(getattr(importlib.import_module(_module), _name))

if __name__ == "__main__":
    main()
