"""A throw-away PostgreSQL cluster on a free loopback port, for tests, demos and benchmarks.

Standard library only: ``initdb`` and ``postgres`` from the server package (Debian keeps them
under ``/usr/lib/postgresql/<version>/bin``, outside ``PATH``), trust authentication, a socket
directory and data directory in a temporary directory removed on :meth:`PostgresCluster.stop`.

    with PostgresCluster() as cluster:
        cluster.psql("select 1")            # "1"
        cluster.uri                          # postgresql://airflow@127.0.0.1:<port>/airflow

Postgres refuses to run as root: as root, the cluster is initialised and run as the ``postgres``
user (which Debian's package creates).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["PostgresCluster", "PostgresUnavailable", "postgres_bin"]

USER = "airflow"
DATABASE = "airflow"


class PostgresUnavailable(RuntimeError):
    """No cluster can be started here (no server binaries, or they failed to start)."""


def postgres_bin(tool: str) -> str:
    """The newest installed server binary ``tool`` (``initdb``, ``postgres``, ``psql``).

    :raises PostgresUnavailable: naming the package to install.
    """
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), key=_major_of)
    path = found[-1] if found else shutil.which(tool)
    if not path:
        raise PostgresUnavailable(
            f"PostgreSQL's {tool} was not found (looked in /usr/lib/postgresql/*/bin and PATH): "
            "install the server, e.g. Debian's `postgresql` package."
        )
    return path


def _major_of(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """One PostgreSQL server with a database ``airflow`` owned by the trusted user ``airflow``.

    :param start_timeout: seconds to wait for the server to accept connections.
    """

    def __init__(self, *, start_timeout: float = 60.0) -> None:
        self.start_timeout = start_timeout
        self.port = 0
        self.directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        # Postgres refuses to run as root: as root the cluster belongs to the postgres user.
        self.os_user = "postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None

    # -- where to connect -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def user(self) -> str:
        return USER

    @property
    def database(self) -> str:
        return DATABASE

    @property
    def uri(self) -> str:
        """``postgresql://airflow@127.0.0.1:<port>/airflow`` (no password: trust authentication)."""
        return f"postgresql://{USER}@{self.host}:{self.port}/{DATABASE}"

    def airflow_connection(self) -> dict[str, Any]:
        """The fields of an Airflow ``postgres`` connection to the cluster's database."""
        return {"conn_type": "postgres", "host": self.host, "port": self.port, "login": USER, "schema": DATABASE}

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> PostgresCluster:
        """initdb, start the server, wait until it answers, create the database.

        :raises PostgresUnavailable: no binaries, or the server did not come up (with its log).
        """
        initdb, server = postgres_bin("initdb"), postgres_bin("postgres")
        self.directory = Path(tempfile.mkdtemp(prefix="reportruns-pg-"))
        self.directory.chmod(0o755)
        if self.os_user is not None:
            import pwd

            try:
                entry = pwd.getpwnam(self.os_user)
            except KeyError:
                self.stop()
                raise PostgresUnavailable(
                    "Running as root, but there is no `postgres` user to run the server as."
                ) from None
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        data = self.directory / "data"
        init = subprocess.run(
            [initdb, "-D", str(data), "-U", USER, "-A", "trust", "-E", "UTF8", "--no-sync"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd=self.directory,
            **self._as_os_user(),
        )
        if init.returncode:
            self.stop()
            raise PostgresUnavailable(f"initdb failed ({init.returncode}): {init.stderr.decode(errors='replace')}")
        self.port = _free_port()
        log = self.directory / "postgres.log"
        with open(log, "ab") as handle:
            if self.os_user is not None:
                os.chown(log, *self._ids())
            self._process = subprocess.Popen(
                [server, "-D", str(data), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.directory}",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd="/" if self.os_user is not None else self.directory,
                start_new_session=True,
                **self._as_os_user(),
            )  # fmt: skip
        deadline = time.monotonic() + self.start_timeout
        while self._psql_run("postgres", "select 1").returncode != 0:
            if self._process.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace")[-2000:]
                self.stop()
                raise PostgresUnavailable(f"The PostgreSQL server did not start: {text}")
            time.sleep(0.1)
        self.psql(f"create database {DATABASE}", database="postgres")
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- queries ---------------------------------------------------------------------------------

    def psql(self, sql: str, *, database: str = DATABASE) -> str:
        """Run ``sql`` with ``psql`` and return its unaligned output (fields split by ``|``).

        :raises RuntimeError: with psql's message, when it fails.
        """
        done = self._psql_run(database, sql)
        if done.returncode:
            raise RuntimeError(f"psql failed ({done.returncode}): {done.stderr.strip()} for: {sql}")
        return done.stdout.strip()

    def _psql_run(self, database: str, sql: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [postgres_bin("psql"), "-h", self.host, "-p", str(self.port), "-U", USER, "-d", database,
             "-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
        )  # fmt: skip

    def _ids(self) -> tuple[int, int]:
        import pwd

        entry = pwd.getpwnam(str(self.os_user))
        return entry.pw_uid, entry.pw_gid

    def _as_os_user(self) -> dict[str, Any]:
        if self.os_user is None:
            return {}
        uid, gid = self._ids()
        return {"user": uid, "group": gid, "extra_groups": []}
