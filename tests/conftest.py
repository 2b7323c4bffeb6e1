"""Session-wide Airflow isolation for the test suite (runs before any test imports airflow).

* A throw-away ``AIRFLOW_HOME`` (tmp dir, removed at exit; keep it with
  ``REPORTRUNS_KEEP_AIRFLOW_HOME=1``), examples off, an empty dags folder, SQLite metadata DB
  created once per session on first use (see ``airflow_harness.ensure_db``).
* Run DAGs with ``from airflow_harness import run_dag`` (one pytest process: the first
  ``dag.test()`` on Airflow 3 costs ~5 s, later ones well under a second).
* Fixtures: ``airflow_db``, ``airflow_conn`` (connection from ``AIRFLOW_CONN_<ID>``),
  ``write_dag`` (write DAG source into a tmp dags folder), ``example_dags_dir``, and
  ``postgres_cluster`` (a PostgreSQL server for the session, started on first use; see ``_postgres.py``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import airflow_harness
from _postgres import postgres_cluster  # noqa: F401  (one PostgreSQL server per session, on first use)

REPO_ROOT = Path(__file__).resolve().parent.parent

_home = Path(tempfile.mkdtemp(prefix="reportruns-airflow-home-"))
# Raises if something (a pytest11 plugin, most likely) imported airflow before this file ran:
# Airflow would then be configured against ~/airflow instead of the throw-away home.
airflow_harness.configure_environment(_home)
if os.environ.get("REPORTRUNS_KEEP_AIRFLOW_HOME") != "1":
    atexit.register(shutil.rmtree, _home, ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> list[str]:
    from importlib.metadata import version

    return [f"apache-airflow {version('apache-airflow')}, AIRFLOW_HOME={_home}"]


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """The metadata DB, created once per session."""
    airflow_harness.ensure_db()


@pytest.fixture
def airflow_conn() -> Iterator[Callable[..., str]]:
    """Factory: ``airflow_conn("stripe_default", conn_type="stripe", host=url, password=key)``.

    Sets ``AIRFLOW_CONN_<ID>`` (JSON form) until the test ends; returns the variable name.
    """
    with contextlib.ExitStack() as stack:

        def define(conn_id: str, **fields: Any) -> str:
            return stack.enter_context(airflow_harness.connection_env(conn_id, **fields))

        yield define


@pytest.fixture
def write_dag(tmp_path: Path) -> Callable[[str, str], Path]:
    """Factory: ``write_dag("my_dag.py", source)`` -> path of the file in a tmp dags folder."""
    dags = tmp_path / "dags"
    dags.mkdir()

    def write(filename: str, source: str) -> Path:
        path = dags / filename
        path.write_text(textwrap.dedent(source))
        return path

    return write


@pytest.fixture(scope="session")
def example_dags_dir() -> Path:
    return REPO_ROOT / "example_dags"


@pytest.fixture
def memory_filesystem(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Register fsspec's in-memory filesystem as ``memory://`` for ObjectStoragePath (no S3 here)."""
    from fsspec.implementations.memory import MemoryFileSystem

    if airflow_harness.airflow_major() >= 3:
        from airflow.sdk.io.fs import _register_filesystems
    else:
        from airflow.io import _register_filesystems
    fs = MemoryFileSystem()
    monkeypatch.setitem(_register_filesystems(), "memory", lambda conn_id: fs)  # type: ignore[index]
    yield fs
    fs.rm("/", recursive=True)
