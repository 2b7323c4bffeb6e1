"""OpenLineage: the storage and SQL operators report the Stripe report type they read and the file
or table they wrote, as datasets in the events the OpenLineage provider emits (file transport, a
real DAG run); without the provider nothing changes."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from airflow_harness import connection_env

from airflow_provider_reportruns.lineage import (
    DatasetId,
    file_dataset,
    operator_lineage,
    report_dataset,
    table_dataset,
)
from airflow_provider_reportruns.testing.simulator import StripeSimulator

TESTS = Path(__file__).resolve().parent
DAY = dt.datetime(2024, 3, 2, tzinfo=dt.timezone.utc)

LINEAGE_DAG = """
import os

import pendulum
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_reportruns.operators.report_to_storage import StripeReportToStorageOperator
from airflow_provider_reportruns.transfers.report_to_sql import StripeReportToSqlOperator

try:
    from airflow.sdk import DAG
except ImportError:
    from airflow import DAG

with DAG(
    dag_id="lineage",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
) as dag:
    StripeReportToStorageOperator(
        task_id="store",
        report_type="balance.summary.1",
        destination=os.environ["REPORTS_DIR"] + "/{report_type}/{{ data_interval_start | ds }}.csv",
        poll_interval=0.2,
    )
    StripeReportToSqlOperator(
        task_id="load",
        report_type="balance_change_from_activity.itemized.3",
        table="balance_changes",
        sql_conn_id="lineage_sqlite",
        poll_interval=0.2,
    )
"""

# Runs in a fresh interpreter: the OpenLineage provider decides whether to register its listener
# once per process, when Airflow loads plugins, from the configuration it sees then.
DRIVER = """
import datetime as dt, json, sys
from pathlib import Path

sys.path.insert(0, {tests!r})
import airflow_harness

home = Path({home!r})
airflow_harness.configure_environment(home)
import os
os.environ["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps({{"type": "file", "log_file_path": {events!r}, "append": True}})
# Emit in a thread of this process rather than a forked child, which a test process should not do.
os.environ["AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD"] = "True"
os.environ["AIRFLOW__OPENLINEAGE__NAMESPACE"] = "reportruns-tests"
result = airflow_harness.run_dag(Path({dag!r}), "lineage", logical_date=dt.datetime.fromisoformat({day!r}))
ok = result.state == "success"
# Not stdout: the provider's emitting threads may still log there.
Path({outcome!r}).write_text(json.dumps({{"state": result.state, "xcom": result.xcom("store") if ok else None,
                  "loaded": result.xcom("load") if ok else None, "log": result.log_text[-4000:]}}))
"""


def _events(path: Path) -> list[dict[str, Any]]:
    """Every event in the transport's file. The provider emits DAG run and task events from
    several processes and threads at once: an event and the newline after it are separate writes,
    so two events may share a line."""
    text, decoder, events, at = path.read_text(), json.JSONDecoder(), [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return events
        event, at = decoder.raw_decode(text, at)
        events.append(event)


def test_a_stored_and_a_loaded_report_emit_the_report_type_as_input_and_the_file_or_table_as_output(
    tmp_path: Path,
) -> None:
    dag = tmp_path / "lineage_dag.py"
    dag.write_text(LINEAGE_DAG)
    events = tmp_path / "events.jsonl"
    reports = tmp_path / "reports"
    with StripeSimulator(run_delay=0.0) as simulator:
        conn = {"conn_type": "stripe", "host": simulator.url, "password": simulator.api_key}
        database = tmp_path / "warehouse.db"
        env = {
            **os.environ,
            "AIRFLOW_CONN_STRIPE_DEFAULT": json.dumps(conn),
            "AIRFLOW_CONN_LINEAGE_SQLITE": json.dumps({"conn_type": "sqlite", "host": str(database)}),
            "REPORTS_DIR": str(reports),
        }
        code = DRIVER.format(
            tests=str(TESTS),
            home=str(tmp_path / "home"),
            events=str(events),
            dag=str(dag),
            day=DAY.isoformat(),
            outcome=str(tmp_path / "outcome.json"),
        )
        completed = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240, check=False
        )
    assert completed.returncode == 0, completed.stderr[-4000:]
    outcome = json.loads((tmp_path / "outcome.json").read_text())
    assert outcome["state"] == "success", outcome["log"]
    stored = reports / "balance.summary.1" / "2024-03-01.csv"
    assert outcome["xcom"] == str(stored)

    store_events = [e for e in _events(events) if e["job"]["name"] == "lineage.store"]
    complete = [e for e in store_events if e["eventType"] == "COMPLETE"]
    assert len(complete) == 1, [e["eventType"] for e in store_events]
    host = simulator.url.split("://", 1)[1].rstrip("/")
    assert [(d["namespace"], d["name"]) for d in complete[0]["inputs"]] == [(f"stripe://{host}", "balance.summary.1")]
    assert [(d["namespace"], d["name"]) for d in complete[0]["outputs"]] == [("file", str(stored))]

    assert outcome["loaded"]["rows"] > 0
    load_events = [e for e in _events(events) if e["job"]["name"] == "lineage.load"]
    [loaded] = [e for e in load_events if e["eventType"] == "COMPLETE"]
    assert [(d["namespace"], d["name"]) for d in loaded["inputs"]] == [
        (f"stripe://{host}", "balance_change_from_activity.itemized.3")
    ]
    assert [(d["namespace"], d["name"]) for d in loaded["outputs"]] == [
        (f"sqlite://{database}", "main.balance_changes")
    ]
    # The key reaches no event.
    assert simulator.api_key not in events.read_text()


def test_the_report_dataset_names_the_api_host_and_the_connected_account_never_the_key() -> None:
    assert report_dataset("https://api.stripe.com", "balance.summary.1") == DatasetId(
        "stripe://api.stripe.com", "balance.summary.1"
    )
    assert report_dataset("http://127.0.0.1:12111", "payouts.itemized.3", "acct_123") == DatasetId(
        "stripe://127.0.0.1:12111", "acct_123/payouts.itemized.3"
    )


def test_the_storage_operator_names_its_input_from_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_reportruns.operators.report_to_storage import StripeReportToStorageOperator

    conn = {"conn_type": "stripe", "password": "sk_test_lineage", "extra": {"stripe_account": "acct_9"}}
    with connection_env("stripe_lineage", **conn):  # type: ignore[arg-type]
        operator = StripeReportToStorageOperator(
            task_id="t",
            report_type="balance.summary.1",
            destination="s3://bucket/x.csv",
            stripe_conn_id="stripe_lineage",
        )
        operator.stored_uri = "s3://bucket/reports/x.csv"
        lineage = operator.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("stripe://api.stripe.com", "acct_9/balance.summary.1")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("s3://bucket", "reports/x.csv")]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/data/reports/a.csv", DatasetId("file", "/data/reports/a.csv")),
        ("file:///data/reports/a%20b.csv", DatasetId("file", "/data/reports/a b.csv")),
        ("s3://bucket/reports/a.csv", DatasetId("s3://bucket", "reports/a.csv")),
        ("gs://bucket/a.csv", DatasetId("gs://bucket", "a.csv")),
    ],
)
def test_a_stored_file_is_named_as_openlineage_names_files(uri: str, expected: DatasetId) -> None:
    assert file_dataset(uri) == expected


def test_a_relative_path_is_named_by_its_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert file_dataset("out/a.csv") == DatasetId("file", str(tmp_path / "out" / "a.csv"))


def test_the_sql_operator_names_its_table_through_its_sql_hook() -> None:
    from airflow_provider_reportruns.transfers.report_to_sql import StripeReportToSqlOperator

    pg = {"conn_type": "postgres", "host": "db.internal", "port": 5432, "schema": "finance", "login": "u"}
    with (
        connection_env("stripe_lineage", conn_type="stripe", password="sk_test_lineage"),
        connection_env("pg_lineage", **pg),  # type: ignore[arg-type]
    ):
        operator = StripeReportToSqlOperator(
            task_id="t",
            report_type="balance.summary.1",
            table="balances",
            schema="stripe",
            sql_conn_id="pg_lineage",
            stripe_conn_id="stripe_lineage",
        )
        lineage = operator.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("stripe://api.stripe.com", "balance.summary.1")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        ("postgres://db.internal:5432", "finance.stripe.balances")
    ]


def test_a_postgres_table_is_named_by_server_database_schema_and_table() -> None:
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    conn = {"conn_type": "postgres", "host": "db.internal", "port": 6543, "schema": "finance", "login": "u"}
    with connection_env("pg_lineage", **conn):  # type: ignore[arg-type]
        hook = PostgresHook(postgres_conn_id="pg_lineage")
        assert table_dataset(hook, "balance_changes") == DatasetId(
            "postgres://db.internal:6543", "finance.public.balance_changes"
        )
        assert table_dataset(hook, "balance_changes", "stripe") == DatasetId(
            "postgres://db.internal:6543", "finance.stripe.balance_changes"
        )


def test_a_sqlite_table_is_named_by_its_database_file(tmp_path: Path) -> None:
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    with connection_env("sqlite_lineage", conn_type="sqlite", host=str(tmp_path / "w.db")):
        hook = SqliteHook(sqlite_conn_id="sqlite_lineage")
        assert table_dataset(hook, "balance_changes") == DatasetId(
            f"sqlite://{tmp_path / 'w.db'}", "main.balance_changes"
        )


def test_without_the_openlineage_provider_the_method_returns_none(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_reportruns.operators.report_to_storage import StripeReportToStorageOperator

    # A None entry in sys.modules makes the import fail as if the provider were not installed.
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", None)
    assert operator_lineage([DatasetId("stripe://api.stripe.com", "balance.summary.1")], []) is None
    with connection_env("stripe_lineage", conn_type="stripe", password="sk_test_lineage"):
        operator = StripeReportToStorageOperator(
            task_id="t", report_type="balance.summary.1", destination="/tmp/x.csv", stripe_conn_id="stripe_lineage"
        )
        assert operator.get_openlineage_facets_on_complete(None) is None


def test_the_lineage_module_is_not_imported_by_a_dag_parse() -> None:
    code = textwrap.dedent(
        """
        import sys
        import airflow_provider_reportruns.operators.report_to_storage
        import airflow_provider_reportruns.transfers.report_to_sql
        print(sorted(m for m in sys.modules if m.startswith(("airflow_provider_reportruns.lineage", "openlineage"))))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
