"""The example DAGs import cleanly on the installed Airflow and the daily one runs end to end
against the simulator."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import pytest
from _sim import sim, stripe_conn  # noqa: F401
from airflow_harness import airflow_major, run_dag

from airflow_provider_reportruns.testing.simulator import StripeSimulator

AIRFLOW_3 = airflow_major() >= 3
DAY = dt.datetime(2024, 3, 2, tzinfo=dt.timezone.utc)
EXAMPLES = {
    "example_stripe_balance_report": "example_stripe_balance_report.py",
    "example_stripe_reports_deferrable": "example_stripe_reports_deferrable.py",
}


def test_the_example_dags_folder_imports_without_errors(example_dags_dir: Path, airflow_db: None) -> None:
    if AIRFLOW_3:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(example_dags_dir), bundle_path=example_dags_dir, safe_mode=False)
    else:
        from airflow.models.dagbag import DagBag

        bag = DagBag(dag_folder=str(example_dags_dir), include_examples=False, safe_mode=False)

    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == sorted(EXAMPLES)
    for dag_id, filename in EXAMPLES.items():
        dag = bag.get_dag(dag_id)
        assert Path(dag.fileloc).name == filename
        # A one-day data interval per run on both versions (not Airflow 3's zero-length "@daily").
        assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    balance = bag.get_dag("example_stripe_balance_report")
    assert [t.task_id for t in balance.topological_sort()] == [
        "wait_for_data",
        "create_report_run",
        "wait_for_report_run",
        "download_report",
        "summarize_report",
    ]


@pytest.fixture
def example_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    reports = tmp_path / "reports"
    monkeypatch.setenv("STRIPE_REPORTS_DIR", str(reports))
    monkeypatch.setenv("STRIPE_EXAMPLE_POKE_SECONDS", "1")
    return reports


def test_the_daily_balance_report_example_runs_end_to_end(
    example_dags_dir: Path, airflow_conn, example_env: Path
) -> None:
    with StripeSimulator(run_delay=1.5) as simulator:
        airflow_conn("stripe_default", conn_type="stripe", host=simulator.url, password=simulator.api_key)

        result = run_dag(
            example_dags_dir / EXAMPLES["example_stripe_balance_report"],
            "example_stripe_balance_report",
            logical_date=DAY,
        )

        assert result.state == "success"
        [run] = simulator.report_runs()
        content = simulator.result_content(run["id"])
    assert run["report_type"] == "balance.summary.1"
    assert run["parameters"] == {
        "currency": "usd",
        "interval_start": int(dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc).timestamp()),
        "interval_end": int(DAY.timestamp()),
    }
    report = example_env / "balance.summary.1" / "2024-03-01.csv"
    assert result.xcom("download_report") == str(report)
    assert report.read_bytes() == content
    rows = len(list(csv.DictReader(io.StringIO(content.decode()))))
    assert rows > 0
    assert result.xcom("summarize_report") == {"rows": rows}
    assert f"Report {report}: {rows} rows." in result.log("summarize_report")
    # The run took 1.5 s: the reschedule sensor saw it pending at least once.
    assert "is pending" in "".join(result.logs("wait_for_report_run"))
