"""``catalog-builder publish``: parse arguments, draw a progress bar, call :func:`publish`."""

from __future__ import annotations

import sys
from dataclasses import replace

import click
from tqdm import tqdm


@click.command("publish")
@click.argument("local_catalog", type=click.Path(exists=True, file_okay=False))
@click.argument("dest")
@click.option("--endpoint-url", default=None,
              help="S3 endpoint (default: AWS / $AWS_ENDPOINT_URL), e.g. http://127.0.0.1:9000.")
@click.option("--workers", type=int, default=16, show_default=True, help="Concurrent uploads within a stage.")
@click.option("--verify", type=click.Choice(["head", "get"]), default="head", show_default=True,
              help="head: check size, type and sha256 metadata after each upload; get: also download and hash.")
@click.option("--checksums", type=click.Choice(["when_required", "when_supported"]), default=None,
              help="boto3 flexible checksums (when_supported on AWS; when_required for MinIO/Ceph/moto). "
                   "Default: when_required with --endpoint-url, when_supported otherwise.")
def publish(local_catalog: str, dest: str, endpoint_url: str | None, workers: int, verify: str,
            checksums: str | None) -> None:
    """Publish a local catalog to s3://bucket/prefix: COGs, items, index and collections, root last.

    Every object is verified after upload; objects already published and intact are skipped, so
    a rerun resumes an interrupted publish. Exit code 1 names the object that failed.
    """
    from bigearth_stac.settings import StorageSettings
    from catalog_builder.publish import PublishError, PublishOptions
    from catalog_builder.publish import publish as run_publish

    if not dest.startswith("s3://"):
        raise click.BadParameter("the destination must be s3://bucket/prefix", param_hint="DEST")
    settings = StorageSettings.from_env(**({"endpoint_url": endpoint_url} if endpoint_url else {}))
    default_checksums = "when_required" if settings.endpoint_url else "when_supported"
    settings = replace(settings, checksums=checksums or default_checksums)  # type: ignore[arg-type]
    options = PublishOptions(workers=workers, verify=verify)  # type: ignore[arg-type]
    with tqdm(total=None, unit="obj", desc="publish", disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            report = run_publish(local_catalog, dest, settings, options, progress=progress)
        except PublishError as exc:
            bar.close()
            click.echo(f"publish failed: {exc}", err=True)
            sys.exit(1)
    click.echo(report.describe())
