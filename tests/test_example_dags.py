"""The example DAGs import cleanly on the installed Airflow; the daily balance report runs end to end
against the simulator, as one deferrable task (the flagship) and step by step; the daily load of
balance changes fills a SQLite table once per day, and its SQL check passes (and fails on doubled rows)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import pytest
from _sim import data_arrives_once_asked, sim, stripe_conn  # noqa: F401
from airflow_harness import airflow_major, run_dag

from airflow_provider_reportruns.testing.simulator import StripeSimulator

AIRFLOW_3 = airflow_major() >= 3
DAY = dt.datetime(2024, 3, 2, tzinfo=dt.timezone.utc)  # logical date; the run covers 2024-03-01
MAR_1 = int(dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc).timestamp())
MAR_2 = int(DAY.timestamp())
FLAGSHIP = "example_stripe_balance_report"
STEPS = "example_stripe_balance_report_steps"
TO_SQL = "example_stripe_balance_changes_to_sql"
EXAMPLES = {
    FLAGSHIP: "example_stripe_balance_report.py",
    STEPS: "example_stripe_balance_report_steps.py",
    "example_stripe_reports_deferrable": "example_stripe_reports_deferrable.py",
    TO_SQL: "example_stripe_balance_changes_to_sql.py",
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

    flagship = bag.get_dag(FLAGSHIP)
    assert [t.task_id for t in flagship.topological_sort()] == ["store_report", "summarize_report"]
    store = flagship.get_task("store_report")
    assert type(store).__name__ == "StripeReportToStorageOperator"
    assert store.deferrable is True and store.wait_for_data is True

    steps = bag.get_dag(STEPS)
    assert [t.task_id for t in steps.topological_sort()] == [
        "wait_for_data",
        "create_report_run",
        "wait_for_report_run",
        "download_report",
        "summarize_report",
    ]
    # The steps version needs no triggerer: its sensors reschedule.
    assert {steps.get_task(t).mode for t in ("wait_for_data", "wait_for_report_run")} == {"reschedule"}

    to_sql = bag.get_dag(TO_SQL)
    assert [t.task_id for t in to_sql.topological_sort()] == ["load_balance_changes", "check_day_rows"]
    load = to_sql.get_task("load_balance_changes")
    assert type(load).__name__ == "StripeReportToSqlOperator"
    assert load.report_type == "balance_change_from_activity.itemized.3"
    assert load.deferrable is True and load.wait_for_data is True
    assert type(to_sql.get_task("check_day_rows")).__name__ == "SQLCheckOperator"


@pytest.fixture
def example_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    reports = tmp_path / "reports"
    monkeypatch.setenv("STRIPE_REPORTS_DIR", str(reports))
    monkeypatch.setenv("STRIPE_EXAMPLE_POKE_SECONDS", "1")
    return reports


def _creates(simulator: StripeSimulator) -> list:
    return [r for r in simulator.requests() if r.kind == "create"]


def _assert_daily_report(result, simulator: StripeSimulator, reports: Path, path_task: str) -> dict:
    """One report run for 2024-03-01, its file at the dated path, the summary of that file."""
    assert result.state == "success", result.log_text[-3000:]
    [run] = simulator.report_runs()
    assert run["report_type"] == "balance.summary.1"
    assert run["parameters"] == {"currency": "usd", "interval_start": MAR_1, "interval_end": MAR_2}
    content = simulator.result_content(run["id"])
    report = reports / "balance.summary.1" / "2024-03-01.csv"
    assert result.xcom(path_task) == str(report)
    assert report.read_bytes() == content
    assert [p.name for p in report.parent.iterdir()] == [report.name]  # no temporary part left behind
    rows = len(list(csv.DictReader(io.StringIO(content.decode()))))
    assert rows > 0
    assert result.xcom("summarize_report") == {"rows": rows}
    assert f"Report {report}: {rows} rows." in result.log("summarize_report")
    return run


def test_the_daily_balance_report_example_stores_the_file_in_one_deferrable_task(
    example_dags_dir: Path, airflow_conn, example_env: Path
) -> None:
    with StripeSimulator(run_delay=1.5) as simulator:
        airflow_conn("stripe_default", conn_type="stripe", host=simulator.url, password=simulator.api_key)

        result = run_dag(example_dags_dir / EXAMPLES[FLAGSHIP], FLAGSHIP, logical_date=DAY)

        run = _assert_daily_report(result, simulator, example_env, "store_report")
        kinds = [r.kind for r in simulator.requests()]
    assert set(result.task_states.values()) == {"success"}
    assert sorted(t for t, _ in result.task_states) == ["store_report", "summarize_report"]
    assert result.stored_run_id("store_report") == run["id"]
    # The run took 1.5 s: the task deferred and dag.test() ran the trigger in line.
    assert "[DAG TEST] running trigger in line" in "".join(result.logs("store_report"))
    # The data was there: the create was tried first and no report type was read.
    assert kinds.count("create") == 1
    assert "report_type" not in kinds


def test_the_daily_balance_report_example_waits_for_stripes_data_then_creates_one_run(
    example_dags_dir: Path, airflow_conn, example_env: Path
) -> None:
    # Stripe has prepared data through the start of the day only: the create is refused first.
    with StripeSimulator(data_available_end=MAR_1) as simulator, data_arrives_once_asked(simulator, MAR_2):
        airflow_conn("stripe_default", conn_type="stripe", host=simulator.url, password=simulator.api_key)

        result = run_dag(example_dags_dir / EXAMPLES[FLAGSHIP], FLAGSHIP, logical_date=DAY)

        _assert_daily_report(result, simulator, example_env, "store_report")
        creates = _creates(simulator)
    log = "".join(result.logs("store_report"))
    assert "is only available through 2024-03-01 00:00:00 UTC" in log
    assert "[DAG TEST] running trigger in line" in log
    # The refused create and the one after the wait: different keys, so Stripe does not replay
    # the refusal it stored under the first.
    assert [r.status for r in creates] == [400, 200]
    assert len({r.headers.get("Idempotency-Key") for r in creates}) == 2


def test_a_week_of_the_daily_balance_report_example_makes_seven_runs_and_a_rerun_makes_none(
    stripe_conn, example_env: Path, example_dags_dir: Path
) -> None:
    dag_file = example_dags_dir / EXAMPLES[FLAGSHIP]
    ends = [DAY + dt.timedelta(days=i) for i in range(7)]

    results = [run_dag(dag_file, FLAGSHIP, logical_date=end) for end in ends]

    assert [r.state for r in results] == ["success"] * 7
    runs = {run["id"]: run for run in stripe_conn.report_runs()}
    assert len(runs) == 7
    for result, end in zip(results, ends, strict=True):
        run = runs[result.stored_run_id("store_report")]
        assert run["parameters"]["interval_end"] == int(end.timestamp())
        day = (end - dt.timedelta(days=1)).date().isoformat()
        assert result.xcom("store_report") == str(example_env / "balance.summary.1" / f"{day}.csv")
        assert Path(result.xcom("store_report")).read_bytes() == stripe_conn.result_content(run["id"])

    rerun = run_dag(dag_file, FLAGSHIP, logical_date=ends[3])

    assert rerun.state == "success"
    assert rerun.stored_run_id("store_report") == results[3].stored_run_id("store_report")
    assert len(stripe_conn.report_runs()) == 7
    assert len(_creates(stripe_conn)) == 7


def test_the_daily_balance_report_steps_example_runs_end_to_end(
    example_dags_dir: Path, airflow_conn, example_env: Path
) -> None:
    with StripeSimulator(run_delay=1.5) as simulator:
        airflow_conn("stripe_default", conn_type="stripe", host=simulator.url, password=simulator.api_key)

        result = run_dag(example_dags_dir / EXAMPLES[STEPS], STEPS, logical_date=DAY)

        run = _assert_daily_report(result, simulator, example_env, "download_report")
    assert result.xcom("create_report_run") == run["id"]
    # The run took 1.5 s: the reschedule sensor saw it pending at least once.
    assert "is pending" in "".join(result.logs("wait_for_report_run"))


@pytest.fixture
def warehouse(tmp_path: Path, airflow_conn, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A SQLite database behind the connection the to-SQL example loads into."""
    database = tmp_path / "warehouse.db"
    airflow_conn("example_warehouse", conn_type="sqlite", host=str(database))
    monkeypatch.setenv("STRIPE_WAREHOUSE_CONN_ID", "example_warehouse")
    monkeypatch.setenv("STRIPE_EXAMPLE_POKE_SECONDS", "1")
    return database


def _table(database: Path, sql: str) -> list[tuple]:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(database)) as db:
        return db.execute(sql).fetchall()


def test_the_balance_changes_to_sql_example_loads_each_day_once_and_checks_its_rows(
    example_dags_dir: Path, airflow_conn, warehouse: Path
) -> None:
    dag_file = example_dags_dir / EXAMPLES[TO_SQL]
    with StripeSimulator(run_delay=1.5) as simulator:
        airflow_conn("stripe_default", conn_type="stripe", host=simulator.url, password=simulator.api_key)

        first = run_dag(dag_file, TO_SQL, logical_date=DAY)
        again = run_dag(dag_file, TO_SQL, logical_date=DAY)  # a re-run of the day
        next_day = run_dag(dag_file, TO_SQL, logical_date=DAY + dt.timedelta(days=1))

        runs = {run["id"]: run for run in simulator.report_runs()}
        contents = {run_id: simulator.result_content(run_id) for run_id in runs}
    for result in (first, again, next_day):
        assert result.state == "success", result.log_text[-3000:]
        assert set(result.task_states.values()) == {"success"}
    loaded = first.xcom("load_balance_changes")
    [run] = [r for r in runs.values() if r["parameters"]["interval_end"] == MAR_2]
    assert run["report_type"] == "balance_change_from_activity.itemized.3"
    assert run["parameters"] == {"currency": "usd", "interval_start": MAR_1, "interval_end": MAR_2}
    csv_rows = list(csv.DictReader(io.StringIO(contents[run["id"]].decode())))
    assert len(csv_rows) > 0
    assert loaded["report_run_id"] == run["id"]
    assert loaded["rows"] == len(csv_rows)
    assert loaded["table"] == "stripe_balance_changes"
    # The re-run reused the day's report run and replaced its rows: two days, each once.
    assert again.xcom("load_balance_changes")["report_run_id"] == run["id"]
    assert len(runs) == 2
    per_run = dict(_table(warehouse, "SELECT _report_run_id, COUNT(*) FROM stripe_balance_changes GROUP BY 1"))
    assert per_run == {run_id: len(list(csv.DictReader(io.StringIO(c.decode())))) for run_id, c in contents.items()}
    ids = _table(
        warehouse, f"SELECT balance_transaction_id FROM stripe_balance_changes WHERE _report_run_id = '{run['id']}'"
    )
    assert sorted(i for (i,) in ids) == sorted(row["balance_transaction_id"] for row in csv_rows)


def test_the_balance_changes_check_fails_when_the_days_rows_are_doubled(
    example_dags_dir: Path, airflow_conn, warehouse: Path
) -> None:
    import runpy
    import sqlite3
    from contextlib import closing

    import jinja2
    from airflow.providers.common.sql.operators.sql import SQLCheckOperator

    dag_file = example_dags_dir / EXAMPLES[TO_SQL]
    with StripeSimulator(run_delay=0.0) as simulator:
        airflow_conn("stripe_default", conn_type="stripe", host=simulator.url, password=simulator.api_key)
        result = run_dag(dag_file, TO_SQL, logical_date=DAY)
    assert result.state == "success", result.log_text[-3000:]
    loaded = result.xcom("load_balance_changes")
    # What a hand-written load that appends would leave after a retry of the day.
    with closing(sqlite3.connect(warehouse)) as db, db:
        db.execute("INSERT INTO stripe_balance_changes SELECT * FROM stripe_balance_changes")

    class _TaskInstance:
        @staticmethod
        def xcom_pull(task_ids: str) -> dict:
            assert task_ids == "load_balance_changes"
            return loaded

    sql = runpy.run_path(str(dag_file))["dag"].get_task("check_day_rows").sql
    rendered = jinja2.Template(sql).render(
        ti=_TaskInstance(),
        data_interval_start=str(result.data_interval_start),
        data_interval_end=str(result.data_interval_end),
    )
    check = SQLCheckOperator(task_id="check", conn_id="example_warehouse", sql=rendered)
    with pytest.raises(Exception, match="Test failed") as failed:
        check.execute({})
    assert f"= {loaded['rows']} FROM stripe_balance_changes" in str(failed.value)
