"""A private PostgreSQL + PostGIS cluster and a STAC API server on loopback, by process id.

For tests, the demo and benchmarks of the pgstac backend (issue 16); development only, never
imported by the shipped packages.

``start_postgres()`` runs ``initdb`` in a fresh temporary folder, starts ``postgres`` bound to
``127.0.0.1`` on a free port (its Unix socket in the same folder, so nothing outside it is
touched), and returns a :class:`PostgresCluster` that stops exactly that postmaster (SIGINT to
its own PID, a fast shutdown) and deletes the folder. PostgreSQL refuses to run as root: when
this process is root, ``initdb`` and ``postgres`` run as an unprivileged system user
(``postgres`` when it exists, else one this module creates with ``useradd``). The superuser has
a random password (``scram-sha-256``), so other local users cannot connect.

``start_api(dsn)`` starts ``bigearth-stac serve`` (stac-fastapi-pgstac under uvicorn) in its own
process on loopback, waits until it answers, and returns an :class:`ApiServer` that stops that
process by its PID. The DSN travels in the environment, not on the command line.

Binaries are looked up on ``PATH`` and in ``/usr/lib/postgresql/<version>/bin`` (Debian);
:func:`postgres_missing` says why a cluster cannot start here (``None`` when it can).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from bigearth_devtools.process import LOOPBACK, ServerProcess, answers, check_loopback, free_port

log = logging.getLogger(__name__)

#: The unprivileged user that runs PostgreSQL when this process is root.
DEFAULT_OS_USER = "postgres"
FALLBACK_OS_USER = "bigearth-pg"
BINARIES = ("initdb", "postgres", "pg_ctl")


def find_bindir() -> Path | None:
    """The folder holding ``initdb``, ``postgres`` and ``pg_ctl`` (newest Debian version first)."""
    candidates: list[Path] = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: _version_key(p), reverse=True)
    candidates += [Path(p) for p in versions]
    for c in candidates:
        if all((c / b).exists() for b in BINARIES):
            return c
    return None


def _version_key(path: str) -> tuple[int, ...]:
    part = Path(path).parent.name
    return tuple(int(x) for x in part.split(".") if x.isdigit()) or (0,)


def _sharedir(bindir: Path) -> Path | None:
    pg_config = bindir / "pg_config"
    if pg_config.exists():
        out = subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            return Path(out.stdout.strip())
    version = bindir.parent.name  # /usr/lib/postgresql/15/bin -> 15
    guess = Path("/usr/share/postgresql") / version
    return guess if guess.exists() else None


def postgres_missing() -> str | None:
    """Why a PostgreSQL + PostGIS cluster cannot start here, or ``None`` when it can."""
    bindir = find_bindir()
    if bindir is None:
        return ("PostgreSQL binaries (initdb, postgres, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin "
                "(Debian: apt-get install -y postgresql-15 postgresql-15-postgis-3)")
    share = _sharedir(bindir)
    if share is None or not (share / "extension" / "postgis.control").exists():
        return (f"PostGIS is not installed for the PostgreSQL of {bindir} (no extension/postgis.control "
                f"under {share}); Debian: apt-get install -y postgresql-15-postgis-3")
    return None


def _os_user() -> tuple[str | None, int | None, int | None]:
    """(name, uid, gid) of the user that runs PostgreSQL, or Nones to run as ourselves."""
    if os.geteuid() != 0:
        return None, None, None
    for name in (DEFAULT_OS_USER, FALLBACK_OS_USER):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return name, entry.pw_uid, entry.pw_gid
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_OS_USER],
                   check=True, capture_output=True)
    entry = pwd.getpwnam(FALLBACK_OS_USER)
    return FALLBACK_OS_USER, entry.pw_uid, entry.pw_gid


def dsn(user: str, password: str | None, host: str, port: int, dbname: str) -> str:
    """A ``postgresql://`` URL (user and password percent-encoded)."""
    auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password is not None else "")
    h = f"[{host}]" if ":" in host else host
    return f"postgresql://{auth}@{h}:{port}/{quote(dbname, safe='')}"


class PostgresCluster:
    """A running private cluster; :meth:`stop` ends its postmaster by PID and removes its folder."""

    def __init__(self, folder: Path, bindir: Path, host: str, port: int, password: str,
                 process: subprocess.Popen[bytes], superuser: str = "postgres") -> None:
        self.folder = folder
        self.bindir = bindir
        self.host = host
        self.port = port
        self.password = password
        self.superuser = superuser
        self.process = process

    @property
    def pid(self) -> int:
        """The postmaster's process id."""
        return self.process.pid

    @property
    def datadir(self) -> Path:
        return self.folder / "data"

    @property
    def logfile(self) -> Path:
        return self.folder / "postgres.log"

    def dsn(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        """A DSN for ``dbname`` as ``user`` (default: the superuser with its password)."""
        if user is None:
            user, password = self.superuser, self.password
        return dsn(user, password, self.host, self.port, dbname)

    def execute(self, sql: str, dbname: str = "postgres", params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (autocommit); the rows it returns, if any."""
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True, connect_timeout=10) as con:
            cur = con.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str, postgis: bool = True) -> str:
        """Create database ``name`` (with the PostGIS extension); its superuser DSN."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10) as con:
            con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if postgis:
            self.execute("CREATE EXTENSION IF NOT EXISTS postgis", dbname=name)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10) as con:
            con.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, nbytes: int = 4000) -> str:
        try:
            return self.logfile.read_bytes()[-nbytes:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT to the postmaster's PID), SIGKILL if it lingers; remove the folder."""
        try:
            if self.process.poll() is None:
                log.debug("stopping postgres pid %d", self.process.pid)
                self.process.send_signal(signal.SIGINT)
                try:
                    self.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=timeout)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PostgresCluster({self.host}:{self.port}, pid={self.process.pid}, {self.folder})"


def start_postgres(host: str = "127.0.0.1", port: int | None = None, startup_timeout: float = 60.0,
                   settings: dict[str, str] | None = None) -> PostgresCluster:
    """``initdb`` a new cluster in a temporary folder and start it on ``host`` (loopback only).

    ``settings``: extra ``postgres -c name=value`` options (e.g. ``{"shared_buffers": "256MB"}``).
    Raises ``RuntimeError`` naming what is missing (see :func:`postgres_missing`) or, with the
    tail of the server log, why it did not start.
    """
    check_loopback(host, "the test PostgreSQL")
    missing = postgres_missing()
    bindir = find_bindir()
    if missing or bindir is None:
        raise RuntimeError(missing or "PostgreSQL binaries not found")
    name, uid, gid = _os_user()
    folder = Path(tempfile.mkdtemp(prefix="bigearth-pg-"))
    password = secrets.token_urlsafe(24)
    run_as: dict[str, Any] = {"user": uid, "group": gid, "extra_groups": []} if uid is not None else {}
    try:
        if uid is not None:
            os.chown(folder, uid, gid)  # type: ignore[arg-type]
        pwfile = folder / "pw"
        pwfile.write_text(password + "\n")
        if uid is not None:
            os.chown(pwfile, uid, gid)  # type: ignore[arg-type]
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TZ": "UTC"}
        if name is not None:
            env.update(HOME=str(folder), USER=name, LOGNAME=name)
        init = subprocess.run(
            [str(bindir / "initdb"), "-D", str(folder / "data"), "-U", "postgres", "--auth=scram-sha-256",
             f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"],
            capture_output=True, text=True, cwd=folder, env=env, check=False, **run_as)
        pwfile.unlink()
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr.strip()[-2000:]}")
        attempts = 1 if port is not None else 3
        last = ""
        for _ in range(attempts):
            chosen = port if port is not None else free_port(host)
            options = {"listen_addresses": host, "port": str(chosen), "unix_socket_directories": str(folder),
                       "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                       "max_connections": "50", "timezone": "UTC", **(settings or {})}
            cmd = [str(bindir / "postgres"), "-D", str(folder / "data")]
            for k, v in options.items():
                cmd += ["-c", f"{k}={v}"]
            logf = open(folder / "postgres.log", "ab")  # noqa: SIM115 - the child keeps its own descriptor
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                        cwd=folder, env=env, start_new_session=True, **run_as)
            finally:
                logf.close()
            cluster = PostgresCluster(folder, bindir, host, chosen, password, proc)
            if _wait_ready(cluster, startup_timeout):
                log.info("PostgreSQL at %s:%d (pid %d, %s)", host, chosen, proc.pid, folder)
                return cluster
            last = cluster.log_tail()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        raise RuntimeError(f"PostgreSQL did not start on {host}: {last.strip() or 'no log'}")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _wait_ready(cluster: PostgresCluster, timeout: float) -> bool:
    isready = cluster.bindir / "pg_isready"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cluster.process.poll() is not None:
            return False
        if isready.exists():
            ok = subprocess.run([str(isready), "-q", "-h", cluster.host, "-p", str(cluster.port)],
                                check=False).returncode == 0
        else:
            with socket.socket() as s:
                ok = s.connect_ex((cluster.host, cluster.port)) == 0
        if ok:
            return True
        time.sleep(0.2)
    return False


class ApiServer(ServerProcess):
    """A running ``bigearth-stac serve`` process; :meth:`stop` ends it by its PID."""

    kind = "STAC API"

    @property
    def url(self) -> str:
        return self.base_url + "/"


def start_api(dsn: str, host: str = "127.0.0.1", port: int | None = None, startup_timeout: float = 60.0,
              extra_args: tuple[str, ...] = ()) -> ApiServer:
    """Start ``bigearth-stac serve`` for ``dsn`` on loopback; wait until its landing page answers."""
    check_loopback(host, "the test STAC API")
    attempts = 1 if port is not None else 3
    last = ""
    for _ in range(attempts):
        chosen = port if port is not None else free_port(host)
        env = {**os.environ, "BIGEARTH_STAC_DSN": dsn}
        cmd = [sys.executable, "-m", "bigearth_stac.cli_serve", "--host", host, "--port", str(chosen), *extra_args]
        errlog = tempfile.TemporaryFile()  # noqa: SIM115 - the server owns it and closes it on stop()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errlog, stderr=subprocess.STDOUT, env=env)
        server = ApiServer(proc, host, chosen, errlog)
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                last = server.output()[-3000:]
                server.stop()
                break
            if answers(server.url):
                log.info("STAC API at %s (pid %d)", server.url, proc.pid)
                return server
            time.sleep(0.2)
        else:
            out = server.output()[-3000:]
            server.stop()
            raise TimeoutError(f"STAC API on {host}:{chosen} did not answer within {startup_timeout} s: {out}")
        if "address already in use" not in last.lower():
            break
    raise RuntimeError(f"STAC API could not start on {host}: {last.strip() or 'exited early'}")


__all__ = ["LOOPBACK", "ApiServer", "PostgresCluster", "dsn", "find_bindir", "free_port", "postgres_missing", "start_api",
           "start_postgres"]
