"""Serve a pgstac database as a read-only STAC API: stac-fastapi-pgstac under uvicorn.

:func:`serve` checks the database first (it answers, holds a pgstac schema of the version this
installation speaks, and the user it connects as cannot change items or collections), then
serves the STAC API with the filter (CQL2), sort, fields and pagination extensions on the one
address it is given, and prints the URL once the API is ready. There is no transactions
extension: the API cannot write, and the database user behind it should not be able to either
(``catalog-builder load-pgstac --reader-role`` makes such a user).

The database helpers here (:func:`connect`, :func:`check_pgstac`, :func:`redact_dsn` and the
errors) are shared with the loader (``catalog_builder.pgstac_load``). Everything that imports
the server stack (psycopg, pypgstac, stac-fastapi, uvicorn) does so inside the functions that
need it: install it with ``pip install 'bigearth-stac[server]'``.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg
    from fastapi import FastAPI

log = logging.getLogger(__name__)

#: The STAC API extensions served (stac-fastapi-pgstac's names); never ``transactions``.
EXTENSIONS: tuple[str, ...] = ("filter", "sort", "fields", "pagination")

#: Tables a read-only API user must not be able to change.
GUARDED_TABLES: tuple[str, ...] = ("pgstac.items", "pgstac.collections", "pgstac.queryables")

SERVER_EXTRA = "pip install 'bigearth-stac[server]'"


class PgstacError(RuntimeError):
    """A pgstac database that cannot be used as asked."""


class PgstacConnectionError(PgstacError):
    """The DSN does not answer (or is not a DSN)."""


class PgstacVersionError(PgstacError):
    """The database has no pgstac schema, or one of a version this installation does not speak."""


class PgstacWriterError(PgstacError):
    """The API would connect as a user that can change items or collections."""


def redact_dsn(dsn: str) -> str:
    """``dsn`` without its password (for messages and logs), even when it is malformed."""
    text = str(dsn)
    if "://" in text:
        # scheme://user:password@host...: everything between the first ':' after '//' and the last '@'
        head, _, rest = text.partition("://")
        at = rest.rfind("@")
        userinfo = rest[:at] if at >= 0 else ""
        if ":" in userinfo:
            rest = f"{userinfo.split(':', 1)[0]}:***@{rest[at + 1:]}"
        return f"{head}://" + re.sub(r"([?&]password=)[^&]*", r"\1***", rest)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", text)


def _need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"the STAC API backend needs {module.split('.')[0]}: {SERVER_EXTRA} ({exc})") from None


def connect(dsn: str, connect_timeout: int = 10) -> psycopg.Connection[Any]:
    """An autocommit psycopg connection to ``dsn``, or :class:`PgstacConnectionError` naming it."""
    psycopg = _need("psycopg")
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout)
    except psycopg.ProgrammingError as exc:
        raise PgstacConnectionError(f"{redact_dsn(dsn)} is not a PostgreSQL DSN: {_first_line(exc)}") from None
    except psycopg.OperationalError as exc:
        raise PgstacConnectionError(f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1].strip() if text else type(exc).__name__


def expected_pgstac_version() -> str:
    """The pgstac version of the installed pypgstac (``0.10.0``)."""
    return str(_need("pypgstac.version").__version__)


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def pgstac_version(con: psycopg.Connection[Any]) -> str | None:
    """The pgstac version installed in the connected database, ``None`` when there is none."""
    row = con.execute("SELECT to_regclass('pgstac.migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    row = con.execute("SELECT version FROM pgstac.migrations ORDER BY datetime DESC, version DESC LIMIT 1").fetchone()
    return str(row[0]) if row else None


def check_pgstac(con: psycopg.Connection[Any], dsn: str) -> str:
    """The pgstac version of the database, checked against pypgstac's (major.minor must agree)."""
    expected = expected_pgstac_version()
    found = pgstac_version(con)
    if found is None:
        raise PgstacVersionError(f"the database at {redact_dsn(dsn)} has no pgstac schema: load a catalog into it "
                                 f"first (catalog-builder load-pgstac CATALOG --dsn ...), which installs pgstac "
                                 f"{expected}")
    if found != "unreleased" and _major_minor(found) != _major_minor(expected):
        raise PgstacVersionError(
            f"the database at {redact_dsn(dsn)} has pgstac {found}, but this installation speaks pgstac {expected} "
            f"(pypgstac {expected}): migrate the database with `pypgstac migrate --dsn ...` "
            f"or install pypgstac=={found}")
    return found


def writable_tables(con: psycopg.Connection[Any]) -> list[str]:
    """The tables of :data:`GUARDED_TABLES` the connected user may insert into, update or delete from."""
    out = []
    for table in GUARDED_TABLES:
        row = con.execute(
            "SELECT has_table_privilege(%s, 'INSERT') OR has_table_privilege(%s, 'UPDATE') "
            "OR has_table_privilege(%s, 'DELETE')", (table, table, table)).fetchone()
        if row and row[0]:
            out.append(table)
    return out


def check_database(dsn: str, allow_writer: bool = False) -> str:
    """Check that ``dsn`` answers with a usable pgstac, as a user that cannot write; its version.

    A user that can write raises :class:`PgstacWriterError` unless ``allow_writer`` (then it is
    logged as a warning): the API has no transactions extension, but a read-only user also
    keeps a flaw in the stack from changing the catalog.
    """
    with connect(dsn) as con:
        version = check_pgstac(con, dsn)
        user = con.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]
        writable = writable_tables(con)
    if writable:
        message = (f"the database user {user!r} of {redact_dsn(dsn)} can write to {', '.join(writable)}; serve "
                   f"through a read-only user (catalog-builder load-pgstac --reader-role NAME creates one with "
                   f"only pgstac_read)")
        if not allow_writer:
            raise PgstacWriterError(message + ", or allow a writer explicitly (--allow-writer)")
        log.warning("%s", message)
    return version


def postgres_settings(dsn: str) -> Any:
    """stac-fastapi-pgstac's ``PostgresSettings`` from a DSN (URL or ``key=value`` form)."""
    conninfo = _need("psycopg.conninfo")
    from urllib.parse import quote

    from stac_fastapi.pgstac.config import PostgresSettings

    class Settings(PostgresSettings):
        @property
        def connection_string(self) -> str:
            # stac-fastapi-pgstac 7.2 encodes the password with quote_plus, which asyncpg does
            # not decode (a space becomes '+'); percent-encode user and password instead.
            host = f"[{self.pghost}]" if ":" in self.pghost else self.pghost
            return (f"postgresql://{quote(self.pguser, safe='')}:{quote(self.pgpassword, safe='')}@{host}:"
                    f"{self.pgport}/{quote(self.pgdatabase, safe='')}")

    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except Exception as exc:  # psycopg.ProgrammingError
        raise PgstacConnectionError(f"{redact_dsn(dsn)} is not a PostgreSQL DSN: {_first_line(exc)}") from None
    return Settings(
        pguser=str(parts.get("user") or "postgres"),
        pgpassword=str(parts.get("password") or ""),
        pghost=str(parts.get("host") or "localhost"),
        pgport=int(parts.get("port") or 5432),
        pgdatabase=str(parts.get("dbname") or parts.get("user") or "postgres"),
    )


def create_app(dsn: str, on_ready: Callable[[], None] | None = None, title: str = "BigEarthNet STAC API") -> FastAPI:
    """The read-only stac-fastapi-pgstac application for ``dsn`` (not started).

    Extensions: :data:`EXTENSIONS` (filter, sort, fields, pagination); no transactions, no
    catalogs extension, whatever the environment says. ``on_ready`` is called once the
    connection pool is open.
    """
    # stac_fastapi.types.core builds default ApiSettings at import and logs a warning that the
    # default title, id and version are used; this app sets its own (below), so it is noise.
    logging.getLogger("stac_fastapi.types.config").setLevel(logging.ERROR)
    _need("stac_fastapi.pgstac")
    from stac_fastapi.pgstac.app import instantiate_api
    from stac_fastapi.pgstac.config import Settings
    from stac_fastapi.pgstac.db import close_db_connection, connect_to_db
    from stac_fastapi.pgstac.models.extensions import Extensions

    pg = postgres_settings(dsn)
    settings = Settings(
        enabled_extensions=list(EXTENSIONS),
        enable_transactions_extensions=False,
        enable_catalogs_extension=False,
        stac_fastapi_title=title,
        stac_fastapi_landing_id="bigearth-stac",
        stac_fastapi_version=_package_version(),
        stac_fastapi_description="BigEarthNet (Sentinel-2 and Sentinel-1 patches, 19- and 43-class labels) "
                                 "served from pgstac by bigearth-stac",
        enable_metrics=False,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        await connect_to_db(app, postgres_settings=pg, add_write_connection_pool=False)
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            await close_db_connection(app)

    api = instantiate_api(extensions=Extensions(settings=settings), lifespan=lifespan, settings=settings)
    return api.app


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bigearth-stac")
    except PackageNotFoundError:
        return "0"


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket bound to exactly ``host:port`` (``port=0``: the OS picks)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve the address {host!r}: {exc}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def url_of(host: str, port: int) -> str:
    h = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{h}:{port}/"


def serve(dsn: str, host: str = "127.0.0.1", port: int = 8080, *, allow_writer: bool = False,
          on_ready: Callable[[str], None] | None = None, log_level: str = "warning") -> None:
    """Serve the pgstac database at ``dsn`` as a read-only STAC API on ``host:port`` until stopped.

    Only ``host`` is listened on (default loopback; give ``0.0.0.0`` yourself to expose it).
    ``port=0`` lets the OS pick. The database is checked first (:func:`check_database`), so a
    DSN that does not answer, a pgstac of another version or a user that can write fail here
    with an error naming them. Once the API answers, ``on_ready(url)`` is called; by default
    the URL is printed. Blocks until SIGINT / SIGTERM.
    """
    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError(f"serving the STAC API needs uvicorn: {SERVER_EXTRA} ({exc})") from None
    version = check_database(dsn, allow_writer=allow_writer)
    sock = _bind(host, port)
    actual = sock.getsockname()[1]
    url = url_of(host, actual)

    def ready() -> None:
        log.info("STAC API for %s (pgstac %s) at %s", redact_dsn(dsn), version, url)
        (on_ready or _print_url)(url)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:  # listening now, after the lifespan opened the connection pool
                ready()

    app = create_app(dsn)
    config = uvicorn.Config(app, log_level=log_level, server_header=False, proxy_headers=False, access_log=False)
    server = Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def _print_url(url: str) -> None:
    print(f"STAC API (read-only) at {url}", flush=True)


__all__ = ["EXTENSIONS", "PgstacConnectionError", "PgstacError", "PgstacVersionError", "PgstacWriterError",
           "check_database", "check_pgstac", "connect", "create_app", "expected_pgstac_version", "pgstac_version",
           "redact_dsn", "serve", "writable_tables"]
