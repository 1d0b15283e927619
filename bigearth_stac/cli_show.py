"""``bigearth-stac show CATALOG ID --out patch.png``: render one patch with both label sets."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("show")
@click.argument("catalog")
@click.argument("patch_id")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG file to write.")
@click.option("--endpoint-url", default=None, help="S3 endpoint (default: AWS / $AWS_ENDPOINT_URL).")
@click.option("--dpi", type=int, default=110, show_default=True)
def show(catalog: str, patch_id: str, out: Path, endpoint_url: str | None, dpi: int) -> None:
    """Render patch PATCH_ID (an S2 or S1 id) of CATALOG: RGB, VV, VH and its 19/43 labels."""
    from bigearth_stac.catalog import Catalog
    from bigearth_stac.contract import prop
    from bigearth_stac.patch import read_patch
    from bigearth_stac.plot import plot_patch
    from bigearth_stac.settings import StorageSettings

    settings = StorageSettings.from_env(**({"endpoint_url": endpoint_url} if endpoint_url else {}))
    cat = Catalog.open(catalog, settings=settings)
    column = prop("s1_id") if patch_id.startswith("S1") else "id"
    found = cat.search(modality="pair", filter={"op": "=", "args": [{"property": column}, patch_id]}, limit=1)
    rows = found.sample_table().to_pylist()
    if not rows:
        raise click.ClickException(f"no patch {patch_id!r} in {catalog}")
    fig = plot_patch(read_patch(rows[0], settings, scope=cat.scope))
    fig.savefig(out, dpi=dpi)
    click.echo(f"wrote {out}")
