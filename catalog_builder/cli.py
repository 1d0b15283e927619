"""``catalog-builder``: a thin command line over the library (parse, call, draw progress)."""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import click
from tqdm import tqdm

from bigearth_stac.vocab import LAYOUTS


@click.group()
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Build BigEarthNet into COGs + STAC + a stac-geoparquet index, and publish it."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # Dask's loggers are set to INFO when distributed is imported; import it now, then quiet them.
    import distributed  # noqa: F401

    logging.getLogger("distributed").setLevel(level)


@main.command()
@click.option("--s2", "s2_root", required=True, help="Raw S2 root (local folder or s3://).")
@click.option("--s1", "s1_root", required=True, help="Raw S1 root (local folder or s3://).")
@click.option("--out", required=True, help="Output catalog root (local folder or s3://bucket/prefix).")
@click.option("--layout", type=click.Choice(LAYOUTS), default="stacked", show_default=True,
              help="stacked: one COG per S2 resolution group + one S1 COG; per-band: one COG per band.")
@click.option("--compress", type=click.Choice(["DEFLATE", "ZSTD"]), default="DEFLATE", show_default=True)
@click.option("--scheduler", default=None,
              help="Dask scheduler address (tcp://host:8786); 'synchronous' to run in this process; "
                   "default: a LocalCluster.")
@click.option("--workers", type=int, default=None, help="Workers of the LocalCluster (default: one per core).")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Pairs per Dask task.")
@click.option("--limit", type=int, default=None, help="Build only the first N pairs.")
@click.option("--tables", default=None, help="v1: folder with the official tables (default: bigearthnet-common).")
@click.option("--metadata", "metadata", multiple=True,
              help="v2: a metadata table (metadata.parquet; repeat for the snow/cloud table). Default: the "
                   "official tables beside the S2 root. Giving one selects v2.")
@click.option("--reference-maps", default=None,
              help="v2: the reference-map root (default: Reference_Maps beside the S2 root, when present; "
                   "'' for none).")
@click.option("--release", type=click.Choice(["auto", "v1", "v2"]), default="auto", show_default=True,
              help="Raw layout: auto recognises v2 by its product folders (or --metadata).")
@click.option("--endpoint-url", default=None, help="S3 endpoint for s3:// input/output (default: AWS / $AWS_ENDPOINT_URL).")
@click.option("--base-url", default=None,
              help="Public URL the catalog will be served from (https://host/prefix): items then list the "
                   "extension schema the catalog publishes, <base-url>/schema/v1.0.0/schema.json, so any "
                   "validator resolves it. Default: the extension's canonical identifier, which "
                   "'bigearth-stac validate' maps to the schema shipped in the package.")
@click.option("--schema-url", default=None,
              help="The extension schema URL items list, when it is not under --base-url.")
def build(s2_root: str, s1_root: str, out: str, layout: str, compress: str, scheduler: str | None,
          workers: int | None, batch_size: int, limit: int | None, tables: str | None,
          metadata: tuple[str, ...], reference_maps: str | None, release: str,
          endpoint_url: str | None, base_url: str | None, schema_url: str | None) -> None:
    """Build (or resume) a catalog from BigEarthNet v1 or v2 (reBEN) raw folders.

    Pairs with bad inputs are listed at the end; exit code 2 then. v2 pairs whose reference map
    disagrees with their official labels are built and listed as warnings. Building one release
    into the folder of another's catalog adds its collections to it.
    """
    from bigearth_stac.settings import StorageSettings
    from bigearth_stac.validate import schema_url_for
    from catalog_builder.build import BuildOptions
    from catalog_builder.build import build as run_build
    from catalog_builder.cog import CogOptions
    from catalog_builder.sources import open_source
    from catalog_builder.store import open_store

    if base_url and schema_url:
        raise click.UsageError("give --base-url or --schema-url, not both")
    if schema_url and "://" not in schema_url:
        raise click.BadParameter("must be an absolute URL", param_hint="--schema-url")
    try:
        extension_url = schema_url_for(base_url) if base_url else schema_url
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--base-url") from None
    settings = StorageSettings.from_env(**({"endpoint_url": endpoint_url} if endpoint_url else {}))
    try:
        source = open_source(s2_root, s1_root, release=release, tables=tables, settings=settings,
                             metadata=metadata, reference_maps=reference_maps)
    except (ValueError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from None
    store = open_store(out, settings=settings)
    options = BuildOptions(layout=layout, cog=CogOptions(compress=compress), scheduler=scheduler,  # type: ignore[arg-type]
                           n_workers=workers, batch_size=batch_size, limit=limit, schema_url=extension_url)
    with tqdm(total=None, unit="pair", desc="build", disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report = run_build(source, store, options, progress=progress)
    click.echo(report.describe())
    if not report.ok:
        sys.exit(2)


@main.command("examples")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
def examples(dest: Path) -> None:
    """Unpack the six real v1 pairs from bigearthnet-common into DEST (raw layout)."""
    from catalog_builder.examples import unpack_examples

    s2, s1 = unpack_examples(dest)
    click.echo(f"S2 root: {s2}\nS1 root: {s1}")


@main.command("synthetic")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("-n", "count", type=int, default=100, show_default=True, help="Number of pairs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--release", type=click.Choice(["v1", "v2"]), default="v1", show_default=True,
              help="v1: the BigEarthNet-MM layout; v2: the reBEN layout with reference maps and metadata tables.")
@click.option("--disagree", type=int, default=2, show_default=True,
              help="v2: pairs whose labels hold a class their reference map does not.")
def synthetic(dest: Path, count: int, seed: int, release: str, disagree: int) -> None:
    """Write N synthetic pairs in the exact raw layout of a release into DEST (real names and tables)."""
    if release == "v2":
        from catalog_builder.synthetic_v2 import generate_v2

        tree = generate_v2(dest, count, seed, disagree=disagree)
        click.echo(f"S2 root: {tree.s2}\nS1 root: {tree.s1}\nReference maps: {tree.maps}\n"
                   + "".join(f"Metadata: {m}\n" for m in tree.metadata).rstrip())
        return
    from catalog_builder.synthetic import generate

    s2, s1 = generate(dest, count, seed)
    click.echo(f"S2 root: {s2}\nS1 root: {s1}")


def _register_optional() -> None:
    """Commands that live in their own modules (publish, load-pgstac); absent extras hide them."""
    for module, name in (("catalog_builder.cli_publish", "publish"), ("catalog_builder.cli_pgstac", "load_pgstac")):
        try:
            command = getattr(importlib.import_module(module), name)
        except ImportError:
            continue
        main.add_command(command)


_register_optional()

if __name__ == "__main__":
    main()
