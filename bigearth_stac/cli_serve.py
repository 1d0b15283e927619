"""``bigearth-stac serve``: parse, then call :func:`bigearth_stac.serve.serve` (a thin layer).

Also runnable alone (``python -m bigearth_stac.cli_serve --dsn ...``), which the dev tools use to
start the API as its own process.
"""

from __future__ import annotations

import logging
import sys

import click


@click.command("serve")
@click.option("--dsn", envvar="BIGEARTH_STAC_DSN", required=True,
              help="PostgreSQL DSN of the pgstac database, as a read-only user "
                   "(postgresql://reader:...@host:5432/db; default: $BIGEARTH_STAC_DSN, which keeps the "
                   "password off the command line).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The one address to listen on (0.0.0.0 exposes the API on every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="TCP port (0: any free port).")
@click.option("--allow-writer", is_flag=True, default=False,
              help="Serve even when the database user can change items or collections (not recommended).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="warning", show_default=True, help="uvicorn's log level.")
def serve(dsn: str, host: str, port: int, allow_writer: bool, log_level: str) -> None:
    """Serve a pgstac database as a read-only STAC API (filter, sort, fields, pagination).

    Load a catalog into the database first with `catalog-builder load-pgstac`. Prints the URL
    once the API answers; stop it with Ctrl-C.
    """
    from bigearth_stac.serve import PgstacError
    from bigearth_stac.serve import serve as run

    try:
        run(dsn, host, port, allow_writer=allow_writer, log_level=log_level,
            on_ready=lambda url: click.echo(f"STAC API (read-only) at {url}"))
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it handled: a normal stop
        pass
    except (PgstacError, OSError, ImportError) as exc:
        click.echo(f"serve: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    serve()
