"""A PostgreSQL server for the whole test session: started on first use on a free loopback port,
stopped at the end; tests that need it skip, saying why, where no server can be started."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_reportruns.testing.postgres import PostgresCluster, PostgresUnavailable


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.start()
    except PostgresUnavailable as exc:
        pytest.skip(f"No PostgreSQL server can be started here: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()
