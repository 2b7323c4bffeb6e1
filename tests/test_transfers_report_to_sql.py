"""StripeReportToSqlOperator and its loader, against the simulator over HTTP and real databases:
SQLite (a file) and PostgreSQL (a server the session starts; skipped, saying why, where none can
be). Loader-level tests for each behaviour on both databases; one DAG run per operator behaviour."""

from __future__ import annotations

import csv
import datetime as dt
import io
import sys
import textwrap
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from _sim import after_first, sim, start_sim, stripe_conn  # noqa: F401
from airflow_harness import DagRunResult, run_dag

from airflow_provider_reportruns.testing.postgres import PostgresCluster, PostgresUnavailable, postgres_bin
from airflow_provider_reportruns.testing.simulator import Fault, StripeSimulator
from airflow_provider_reportruns.transfers.sql_load import (
    CsvRecords,
    LoadKey,
    ReportLoadError,
    column_kind,
    load_result,
)

UTC = dt.timezone.utc
ITEMIZED = "balance_change_from_activity.itemized.3"
COLUMNS = [
    "balance_transaction_id",
    "created_utc",
    "created",
    "currency",
    "gross",
    "fee",
    "net",
    "reporting_category",
    "description",
]
MAR_1 = int(dt.datetime(2024, 3, 1, tzinfo=UTC).timestamp())
MAR_2 = int(dt.datetime(2024, 3, 2, tzinfo=UTC).timestamp())
DAY = 86400


class Log:
    """Collects what the loader logs."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: Any) -> None:
        self.lines.append(message % args)

    debug = warning = info


class Database:
    """A database behind an Airflow connection ``warehouse``, and a way to look into it."""

    def __init__(self, kind: str, conn_id: str, uri: str = "") -> None:
        self.kind = {"psycopg2": "postgres", "other": "sqlite"}.get(kind, kind)
        self.driver = kind
        self.conn_id = conn_id
        self.uri = uri

    def hook(self) -> Any:
        from airflow_provider_reportruns._compat import BaseHook

        hook = BaseHook.get_connection(self.conn_id).get_hook()
        if self.driver == "psycopg2":  # the driver PostgresHook uses on Airflow 2 (SQLAlchemy 1.4)
            import psycopg2

            hook.get_conn = lambda: psycopg2.connect(self.uri)
        if self.driver == "other":  # SQLite, as the loader sees a database it has no dialect for
            hook.conn_type = "other"
        return hook

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.hook().get_records(sql)]

    def run(self, sql: str) -> None:
        self.hook().run(sql)

    def count(self, table: str, where: str = "1 = 1") -> int:
        return int(self.rows(f'SELECT count(*) FROM "{table}" WHERE {where}')[0][0])


@pytest.fixture(params=["sqlite", "other", "postgres", "psycopg2"])
def database(request: pytest.FixtureRequest, tmp_path: Path, airflow_conn: Callable[..., str]) -> Database:
    """SQLite; SQLite seen as a database of no known dialect (the generic path: probed columns,
    common.sql's quoting, standard types); PostgreSQL through the hook's own driver, or through
    psycopg2 (pulled by COPY from a file, where psycopg 3 is pushed to)."""
    if request.param in ("sqlite", "other"):
        airflow_conn("warehouse", conn_type="sqlite", host=str(tmp_path / "warehouse.db"))
        return Database(request.param, "warehouse")
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    airflow_conn("warehouse", **cluster.airflow_connection())
    return Database(request.param, "warehouse", cluster.uri)


@pytest.fixture
def table() -> str:
    """A table name of its own for each test (the PostgreSQL database is shared by the session)."""
    return f"report_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def stripe_hook(stripe_conn: StripeSimulator) -> Any:
    from airflow_provider_reportruns.hooks.stripe import StripeReportingHook

    return StripeReportingHook("stripe_default", max_retries=1, initial_backoff=0.01)


def succeeded_run(hook: Any, start: int = MAR_1, end: int = MAR_2, **parameters: Any) -> dict[str, Any]:
    params = {"interval_start": start, "interval_end": end, "columns": COLUMNS, **parameters}
    run = hook.create_report_run(ITEMIZED, params)
    done: dict[str, Any] = hook.get_report_run(run["id"])
    assert done["status"] == "succeeded"
    return done


def load(database: Database, hook: Any, run: dict[str, Any], table: str, **kwargs: Any) -> int:
    return load_result(
        database.hook(),
        hook,
        run,
        table=table,
        schema=None,
        parameters=run["parameters"],
        log=kwargs.pop("log", Log()),
        batch_size=kwargs.pop("batch_size", 1000),
        **kwargs,
    )


def csv_rows(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode())))


# ---------------------------------------------------------------------------------------------
# Loading: values, types, provenance


def test_rows_and_values_equal_the_csv_and_carry_their_run_and_interval(
    database: Database, stripe_hook: Any, sim: StripeSimulator, table: str
) -> None:
    run = succeeded_run(stripe_hook)
    expected = csv_rows(sim.result_content(run["id"]))

    rows = load(database, stripe_hook, run, table)

    assert rows == len(expected) == 24
    got = database.rows(
        f'SELECT balance_transaction_id, gross, fee, net, description, currency, "_report_run_id", '
        f'"_report_type", "_report_parameters" FROM "{table}" ORDER BY balance_transaction_id'
    )
    want = sorted(expected, key=lambda r: r["balance_transaction_id"])
    assert [(g[0], Decimal(str(g[1])), Decimal(str(g[2])), Decimal(str(g[3])), g[4], g[5]) for g in got] == [
        (
            w["balance_transaction_id"],
            Decimal(w["gross"]),
            Decimal(w["fee"]),
            Decimal(w["net"]),
            w["description"],
            "usd",
        )
        for w in want
    ]
    assert {g[6:] for g in got} == {(run["id"], ITEMIZED, "{}")}  # columns are no part of the key
    if database.driver == "other":  # the standard types, for a database the loader knows nothing of
        declared = {row[1]: row[2] for row in database.rows(f'PRAGMA table_info("{table}")')}
        assert (declared["gross"], declared["created_utc"], declared["description"]) == (
            "DECIMAL(38, 6)",
            "TIMESTAMP",
            "TEXT",
        )
    [(start, end)] = set(database.rows(f'SELECT "_interval_start", "_interval_end" FROM "{table}"'))
    if database.kind == "postgres":
        assert (start, end) == (dt.datetime(2024, 3, 1, tzinfo=UTC), dt.datetime(2024, 3, 2, tzinfo=UTC))
    else:
        assert (start, end) == ("2024-03-01 00:00:00+00:00", "2024-03-02 00:00:00+00:00")


def test_postgres_columns_get_exact_decimal_timestamptz_local_timestamp_and_integer_types(
    postgres_cluster: PostgresCluster,
    airflow_conn: Callable[..., str],
    stripe_hook: Any,
    sim: StripeSimulator,
    table: str,
) -> None:
    airflow_conn("warehouse", **postgres_cluster.airflow_connection())
    database = Database("postgres", "warehouse")
    run = succeeded_run(stripe_hook, timezone="America/New_York")
    load(database, stripe_hook, run, table)

    types = dict(
        database.rows(f"SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '{table}'")
    )
    assert types["gross"] == types["fee"] == types["net"] == "numeric"
    assert types["created_utc"] == "timestamp with time zone"
    assert types["created"] == "timestamp without time zone"
    assert types["description"] == types["_report_run_id"] == "text"
    assert types["_interval_start"] == "timestamp with time zone"
    first = csv_rows(sim.result_content(run["id"]))[0]
    [(created_utc, created, gross)] = database.rows(
        f"SELECT created_utc, created, gross FROM \"{table}\" WHERE balance_transaction_id = '{first['balance_transaction_id']}'"
    )
    # *_utc read as UTC whatever the server's time zone; the local twin kept as the wall-clock time.
    assert created_utc == dt.datetime.strptime(first["created_utc"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert created == dt.datetime.strptime(first["created"], "%Y-%m-%d %H:%M:%S")
    assert created != created_utc.replace(tzinfo=None)  # New York is not UTC
    assert gross == Decimal(first["gross"])


def test_a_schema_puts_the_table_and_its_index_there(
    postgres_cluster: PostgresCluster, airflow_conn: Callable[..., str], stripe_hook: Any, table: str
) -> None:
    airflow_conn("warehouse", **postgres_cluster.airflow_connection())
    database = Database("postgres", "warehouse")
    schema = f"s_{table}"
    database.run(f"CREATE SCHEMA {schema}")
    run = succeeded_run(stripe_hook)

    for _ in range(2):
        load_result(
            database.hook(), stripe_hook, run, table=table, schema=schema, parameters=run["parameters"],
            batch_size=1000, log=Log(),
        )  # fmt: skip

    assert database.rows(f'SELECT count(*) FROM {schema}."{table}"') == [(24,)]
    assert database.rows(f"SELECT schemaname, indexname FROM pg_indexes WHERE tablename = '{table}'") == [
        (schema, f"{table}_report_load")
    ]
    assert database.rows(f"SELECT count(*) FROM information_schema.tables WHERE table_name = '{table}'") == [(1,)]


@pytest.mark.parametrize(
    ("column", "kind"),
    [
        ("gross", "amount"),
        ("customer_facing_amount", "amount"),
        ("created_utc", "utc"),
        ("available_on", "local"),
        ("payout_expected_arrival_date", "date"),
        ("count", "integer"),
        ("payment_metadata[order]", "text"),
        ("balance_transaction_id", "text"),
        ("_interval_end", "utc"),
    ],
)
def test_column_kinds_follow_stripes_column_names(column: str, kind: str) -> None:
    assert column_kind(column) == kind


# ---------------------------------------------------------------------------------------------
# Exactly once


def test_a_retry_or_rerun_of_the_interval_replaces_its_rows_instead_of_adding_them(
    database: Database, stripe_hook: Any, table: str
) -> None:
    first = succeeded_run(stripe_hook)
    load(database, stripe_hook, first, table)
    again = succeeded_run(stripe_hook)  # a clear re-runs the task, which may load another run
    log = Log()

    load(database, stripe_hook, again, table, log=log)
    load(database, stripe_hook, again, table)  # a retry of the same load

    assert database.count(table) == 24
    assert database.rows(f'SELECT DISTINCT "_report_run_id" FROM "{table}"') == [(again["id"],)]
    assert any("replacing 24 rows of an earlier load" in line for line in log.lines), log.lines


def test_two_parameter_sets_and_two_intervals_coexist_in_one_table(
    database: Database, stripe_hook: Any, table: str
) -> None:
    usd = succeeded_run(stripe_hook, currency="usd")
    eur = succeeded_run(stripe_hook, currency="eur")
    next_day = succeeded_run(stripe_hook, MAR_2, MAR_2 + DAY, currency="usd")
    for run in (usd, eur, next_day, usd):
        load(database, stripe_hook, run, table)

    counts = dict(database.rows(f'SELECT "_report_run_id", count(*) FROM "{table}" GROUP BY "_report_run_id"'))
    assert counts == {usd["id"]: 24, eur["id"]: 24, next_day["id"]: 24}
    assert {c for (c,) in database.rows(f'SELECT DISTINCT currency FROM "{table}"')} == {"usd", "eur"}


def test_a_download_cut_mid_stream_rolls_back_and_keeps_the_previous_rows(
    database: Database, stripe_hook: Any, sim: StripeSimulator, table: str
) -> None:
    sim.result_size = 3 << 20  # big enough that rows reach the database before the cut
    first = succeeded_run(stripe_hook)
    before = load(database, stripe_hook, first, table)
    second = succeeded_run(stripe_hook)
    sim.add_fault(Fault("file_contents", "cut_download", fraction=0.6))

    with pytest.raises(ReportLoadError) as failed:
        load(database, stripe_hook, second, table)

    message = str(failed.value)
    assert f"Loading report run {second['id']} ({ITEMIZED}) into table {table} failed and was rolled back" in message
    assert "the table keeps the rows it had" in message
    assert "broke off" in message or "incomplete" in message, message
    assert sim.fault_counts["cut_download"] == 2  # the first try and its one retry (max_retries=1)
    assert database.count(table) == before
    assert database.rows(f'SELECT DISTINCT "_report_run_id" FROM "{table}"') == [(first["id"],)]


def test_a_cut_download_that_succeeds_on_its_retry_loads_the_rows_once(
    database: Database, stripe_hook: Any, sim: StripeSimulator, table: str
) -> None:
    sim.result_size = 2 << 20
    run = succeeded_run(stripe_hook)
    sim.add_fault(Fault("file_contents", "cut_download", times=1, fraction=0.7))

    rows = load(database, stripe_hook, run, table)

    assert database.count(table) == rows == len(csv_rows(sim.result_content(run["id"])))


def test_a_value_the_database_refuses_half_way_rolls_back_and_keeps_the_previous_rows(
    database: Database, stripe_hook: Any, sim: StripeSimulator, table: str
) -> None:
    first = succeeded_run(stripe_hook)
    before = load(database, stripe_hook, first, table)
    # The simulator's filler rows (past the 24 real ones) are described "Simulated … 1000000123".
    if database.kind == "postgres":
        database.run(f"CREATE DOMAIN {table}_text AS text CHECK (VALUE NOT LIKE '%10000000%')")
        database.run(f'ALTER TABLE "{table}" ALTER COLUMN description TYPE {table}_text')
    else:
        database.run(
            f'CREATE TRIGGER "{table}_real" BEFORE INSERT ON "{table}" WHEN NEW.description LIKE '
            "'%10000000%' BEGIN SELECT RAISE(ABORT, 'a filler row'); END"
        )
    sim.result_size = 1 << 20
    second = succeeded_run(stripe_hook)

    with pytest.raises(ReportLoadError) as failed:
        load(database, stripe_hook, second, table, batch_size=10)  # the natural rows are in by then

    refused = f'violates check constraint "{table}_text_check"' if database.kind == "postgres" else "a filler row"
    assert refused in str(failed.value)
    assert "rolled back: the table keeps the rows it had" in str(failed.value)
    assert database.count(table) == before
    assert database.rows(f'SELECT DISTINCT "_report_run_id" FROM "{table}"') == [(first["id"],)]


def test_a_report_with_a_column_the_table_lacks_adds_it_and_replaces_the_intervals_rows(
    database: Database, stripe_hook: Any, table: str
) -> None:
    narrow = succeeded_run(stripe_hook, columns=COLUMNS[:5])
    load(database, stripe_hook, narrow, table)
    wide = succeeded_run(stripe_hook, columns=[*COLUMNS[:5], "customer_email"])
    log = Log()

    load(database, stripe_hook, wide, table, log=log)

    assert f"Added column customer_email (TEXT) to table {table}." in log.lines
    # Other columns are the same rows shown differently: they replace the interval's rows.
    assert database.rows(f'SELECT "_report_run_id", count(*), count(customer_email) FROM "{table}" GROUP BY 1') == [
        (wide["id"], 24, 24)
    ]


@pytest.mark.parametrize("driver", ["postgres", "psycopg2", "sqlite"])
def test_the_file_streams_through_without_being_held_in_memory(
    driver: str,
    request: pytest.FixtureRequest,
    airflow_conn: Callable[..., str],
    tmp_path: Path,
    stripe_hook: Any,
    sim: StripeSimulator,
    table: str,
) -> None:
    import tracemalloc

    if driver == "sqlite":
        airflow_conn("warehouse", conn_type="sqlite", host=str(tmp_path / "warehouse.db"))
        database = Database("sqlite", "warehouse")
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        airflow_conn("warehouse", **cluster.airflow_connection())
        database = Database(driver, "warehouse", cluster.uri)
    sim.result_size = 24 << 20
    run = succeeded_run(stripe_hook)
    sql_hook = database.hook()

    tracemalloc.start()
    try:
        rows = load_result(
            sql_hook,
            stripe_hook,
            run,
            table=table,
            schema=None,
            parameters=run["parameters"],
            batch_size=10_000,  # the operator's default
            log=Log(),
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert database.count(table) == rows > 150_000
    # A few 1 MiB chunks in flight (measured: 3-4 MiB), and for inserts a batch of 10,000 parsed
    # rows (about 10 MiB): never the 24 MiB file.
    assert peak < (16 << 20 if driver == "sqlite" else 8 << 20), f"peak {peak >> 20} MiB"


def test_a_record_with_more_cells_than_the_header_is_refused_and_nothing_changes(
    database: Database, stripe_hook: Any, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests

    first = succeeded_run(stripe_hook)
    load(database, stripe_hook, first, table)
    second = succeeded_run(stripe_hook)
    # The simulator writes only well-formed files: a broken one has to come from the response.
    broken = [b"balance_transaction_id,gross\ntxn_1,1.00\n", b"txn_2,2.00,surplus\n"]
    broken.append(b"\n" * (second["result"]["size"] - sum(map(len, broken))))  # the announced size
    monkeypatch.setattr(requests.Response, "iter_content", lambda self, *args, **kwargs: iter(broken))

    with pytest.raises(ReportLoadError) as failed:
        load(database, stripe_hook, second, table)

    if database.kind == "postgres":
        assert "extra data after last expected column" in str(failed.value)
    else:
        assert "A record of the result file has 3 cells where the header has 2: 'txn_2,2.00,surplus'" in str(
            failed.value
        )
    assert database.rows(f'SELECT count(*), min("_report_run_id") FROM "{table}"') == [(24, first["id"])]


# ---------------------------------------------------------------------------------------------
# The CSV stream


def records_of(data: bytes, chunk: int, suffix: bytes = b";S") -> tuple[list[str] | None, bytes, int]:
    records = CsvRecords(suffix)
    out = b"".join(records.feed(data[i : i + chunk]) for i in range(0, len(data), chunk)) + records.finish()
    return records.header, out, records.records


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 20])
def test_records_split_on_newlines_outside_quotes_whatever_the_chunking(chunk: int) -> None:
    data = (
        b"id,description,gross\n"
        b'txn_1,"two\nlines, and a comma",1.00\n'
        b"txn_2,plain,2.00\r\n"
        b"\n"
        b'txn_3,"a ""quoted"" word",3.00\n'
        b"txn_4,last,4.00"
    )

    header, out, count = records_of(data, chunk)

    assert header == ["id", "description", "gross"]
    assert count == 4
    assert out == (
        b'txn_1,"two\nlines, and a comma",1.00;S\n'
        b"txn_2,plain,2.00;S\n"
        b'txn_3,"a ""quoted"" word",3.00;S\n'
        b"txn_4,last,4.00;S\n"
    )


def test_a_file_ending_inside_a_quoted_field_is_refused() -> None:
    records = CsvRecords()
    records.feed(b'id,description\ntxn_1,"never closed\n')
    with pytest.raises(ReportLoadError, match="ends inside a quoted CSV field"):
        records.finish()


def test_the_copy_suffix_quotes_provenance_cells_and_leaves_a_missing_interval_empty() -> None:
    key = LoadKey.for_run("frr_1", "payout_reconciliation.itemized.5", {"payout": "po_1", "currency": "EUR"})
    assert (
        key.csv_suffix()
        == b',"frr_1","payout_reconciliation.itemized.5","{""currency"":""eur"",""payout"":""po_1""}",,'
    )
    assert LoadKey.for_run("frr_2", ITEMIZED, {"interval_start": MAR_1, "interval_end": str(MAR_2)}).values()[3:] == (
        "2024-03-01 00:00:00+00:00",
        "2024-03-02 00:00:00+00:00",
    )


# ---------------------------------------------------------------------------------------------
# Bad inputs: each fails before any Stripe request, with a message saying what to change


def sql_operator(**kwargs: Any) -> Any:
    from airflow_provider_reportruns.transfers.report_to_sql import StripeReportToSqlOperator

    args = {"task_id": "load", "report_type": ITEMIZED, "table": "activity", "sql_conn_id": "warehouse", **kwargs}
    return StripeReportToSqlOperator(**args)


def test_an_undefined_sql_connection_is_named(airflow_conn: Callable[..., str]) -> None:
    from airflow_provider_reportruns._compat import AirflowFailException

    with pytest.raises(AirflowFailException) as failed:
        sql_operator(sql_conn_id="no_such_db").get_sql_hook()
    assert str(failed.value) == (
        "The Airflow connection 'no_such_db' (sql_conn_id) is not defined: create it, or set AIRFLOW_CONN_NO_SUCH_DB."
    )


def test_a_connection_whose_hook_is_not_a_sql_hook_is_refused(stripe_conn: StripeSimulator) -> None:
    from airflow_provider_reportruns._compat import AirflowFailException

    with pytest.raises(AirflowFailException) as failed:
        sql_operator(sql_conn_id="stripe_default").get_sql_hook()
    assert str(failed.value) == (
        "The connection 'stripe_default' (conn type 'stripe') gives a StripeReportingHook, not a SQL hook "
        "(common.sql's DbApiHook): sql_conn_id must name a database connection such as postgres or sqlite."
    )
    assert sim_key_not_in(str(failed.value), stripe_conn)


def test_a_connection_type_no_installed_provider_knows_says_what_to_install(airflow_conn: Callable[..., str]) -> None:
    from airflow_provider_reportruns._compat import AirflowFailException

    airflow_conn("warehouse", conn_type="no_such_database", host="db.invalid")
    with pytest.raises(AirflowFailException) as failed:
        sql_operator().get_sql_hook()
    message = str(failed.value)
    assert message.startswith("The connection 'warehouse' (conn type 'no_such_database') gives no hook here: ")
    assert message.endswith(
        "Install the provider of that connection type; for SQLite and PostgreSQL, pip install "
        '"airflow-provider-reportruns[sql]" or "airflow-provider-reportruns[postgres]".'
    )


def sim_key_not_in(text: str, simulator: StripeSimulator) -> bool:
    return simulator.api_key not in text


@pytest.mark.parametrize(
    ("kwargs", "what", "value"),
    [
        ({"table": "activity; DROP TABLE x"}, "table", "'activity; DROP TABLE x'"),
        ({"table": "public.activity"}, "table", "'public.activity'"),
        ({"table": ""}, "table", "''"),
        ({"table": "a" * 64}, "table", repr("a" * 64)),
        ({"schema": "my-schema"}, "schema", "'my-schema'"),
    ],
)
def test_a_table_or_schema_that_is_not_an_identifier_is_refused(kwargs: dict[str, Any], what: str, value: str) -> None:
    from airflow_provider_reportruns._compat import AirflowFailException

    with pytest.raises(AirflowFailException) as failed:
        sql_operator(**kwargs).get_sql_hook()
    assert str(failed.value) == (
        f"{what} must be a plain SQL identifier (a letter or _, then letters, digits or _; at most 63 "
        f"characters), got {value}."
    )


def test_without_the_sql_extra_the_message_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_reportruns._compat import AirflowFailException

    monkeypatch.setitem(sys.modules, "airflow.providers.common.sql.hooks.sql", None)  # as if not installed
    with pytest.raises(AirflowFailException) as failed:
        sql_operator().get_sql_hook()
    assert 'pip install "airflow-provider-reportruns[sql]"' in str(failed.value)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_a_batch_size_that_is_not_a_positive_row_count_is_refused(batch_size: Any) -> None:
    with pytest.raises(ValueError, match=rf"batch_size must be a positive number of rows, got {batch_size!r}\."):
        sql_operator(batch_size=batch_size)


def test_without_postgres_binaries_the_cluster_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import glob
    import shutil

    monkeypatch.setattr(glob, "glob", lambda pattern: [])
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(
        PostgresUnavailable, match=r"PostgreSQL's initdb was not found .* Debian's `postgresql` package"
    ):
        postgres_bin("initdb")


# ---------------------------------------------------------------------------------------------
# The operator in DAG runs

PREAMBLE = """\
from __future__ import annotations
import datetime as dt
try:
    from airflow.sdk import DAG
except ImportError:
    from airflow import DAG
from airflow.timetables.interval import CronDataIntervalTimetable
from airflow_provider_reportruns.transfers.report_to_sql import StripeReportToSqlOperator
"""


def load_dag(write_dag: Callable[[str, str], Path], dag_id: str, **kwargs: Any) -> Path:
    args = {"report_type": ITEMIZED, "table": "activity", "sql_conn_id": "warehouse", "poll_interval": 0.2, **kwargs}
    rendered = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return write_dag(
        f"{dag_id}.py",
        PREAMBLE + f"\nwith DAG({dag_id!r}, start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), "
        'schedule=CronDataIntervalTimetable("@daily", timezone="UTC"), catchup=False, '
        "default_args={'retries': 0}):\n"
        + textwrap.indent(f'StripeReportToSqlOperator(task_id="load", {rendered})\n', "    "),
    )


def whole_log(result: DagRunResult) -> str:
    return "".join(result.logs("load"))


@pytest.fixture
def sqlite_warehouse(tmp_path: Path, airflow_conn: Callable[..., str]) -> Database:
    airflow_conn("warehouse", conn_type="sqlite", host=str(tmp_path / "warehouse.db"))
    return Database("sqlite", "warehouse")


def test_a_seven_day_backfill_and_a_clear_give_each_interval_its_rows_once(
    write_dag: Callable[[str, str], Path], sqlite_warehouse: Database, stripe_conn: StripeSimulator
) -> None:
    dag_file = load_dag(write_dag, "sql_backfill")
    days = [dt.datetime(2024, 3, 2, tzinfo=UTC) + dt.timedelta(days=n) for n in range(7)]

    results = [run_dag(dag_file, "sql_backfill", logical_date=day) for day in days]
    cleared = run_dag(dag_file, "sql_backfill", logical_date=days[3])  # dag.test() replaces the run: a clear

    for result in [*results, cleared]:
        assert result.state == "success", whole_log(result)
    assert cleared.xcom("load") == {
        "report_run_id": cleared.xcom("load")["report_run_id"],
        "rows": 24,
        "table": "activity",
        "interval_start": "2024-03-04T00:00:00+00:00",
        "interval_end": "2024-03-05T00:00:00+00:00",
    }
    per_interval = sqlite_warehouse.rows(
        'SELECT "_interval_start", count(*), count(DISTINCT "_report_run_id") FROM activity GROUP BY 1 ORDER BY 1'
    )
    assert per_interval == [(f"2024-03-0{n} 00:00:00+00:00", 24, 1) for n in range(1, 8)]
    assert len(stripe_conn.report_runs()) == 7  # the clear reused its interval's run
    assert stripe_conn.api_key not in "".join(whole_log(r) for r in results)


@pytest.mark.parametrize("deferrable", [False, True], ids=["poll", "deferrable"])
def test_the_operator_loads_into_postgres_polling_or_deferred(
    write_dag: Callable[[str, str], Path],
    postgres_cluster: PostgresCluster,
    airflow_conn: Callable[..., str],
    start_sim: Callable[..., StripeSimulator],
    deferrable: bool,
) -> None:
    simulator = start_sim(run_delay=0.5)
    airflow_conn("warehouse", **postgres_cluster.airflow_connection())
    table = f"activity_{uuid.uuid4().hex[:8]}"
    dag_id = f"sql_pg_{'deferred' if deferrable else 'poll'}"
    dag_file = load_dag(write_dag, dag_id, table=table, deferrable=deferrable, parameters={"currency": "usd"})

    result = run_dag(dag_file, dag_id, logical_date=dt.datetime(2024, 3, 2, tzinfo=UTC))

    assert result.state == "success", whole_log(result)
    [run] = simulator.report_runs()
    assert result.xcom("load")["rows"] == 24
    assert postgres_cluster.psql(f'SELECT count(*), min("_report_run_id") FROM "{table}"') == f"24|{run['id']}"
    assert ("[DAG TEST] running trigger in line" in whole_log(result)) is deferrable


def test_a_bad_table_fails_the_task_before_any_stripe_request(
    write_dag: Callable[[str, str], Path], sqlite_warehouse: Database, stripe_conn: StripeSimulator
) -> None:
    dag_file = load_dag(write_dag, "sql_bad_table", table="{{ 'bad name' }}")

    result = run_dag(dag_file, "sql_bad_table", logical_date=dt.datetime(2024, 3, 2, tzinfo=UTC))

    assert result.state == "failed"
    assert "table must be a plain SQL identifier" in whole_log(result)
    assert "got 'bad name'" in whole_log(result)
    assert stripe_conn.requests() == []


# ---------------------------------------------------------------------------------------------
# Registration and import cost


def test_a_dag_parse_loads_no_sql_provider_driver_client_or_loader() -> None:
    """The DAG processor imports the module and builds the operator at every parse; the SQL side
    (and the ``[sql]`` extra it needs) loads only in a task."""
    import subprocess

    code = (
        "import sys\n"
        "from airflow_provider_reportruns.transfers.report_to_sql import StripeReportToSqlOperator\n"
        "StripeReportToSqlOperator(task_id='t', report_type='balance.summary.1', table='t', sql_conn_id='db')\n"
        "heavy = ('airflow.providers.common.sql.hooks', 'airflow.providers.postgres.hooks',\n"
        "         'airflow.providers.sqlite.hooks',\n"
        "         'psycopg', 'psycopg2', 'airflow_provider_reportruns.client', 'airflow_provider_reportruns.transfers.sql_load',\n"
        "         'airflow_provider_reportruns.operators.steps.wait', 'airflow_provider_reportruns.operators.steps.create')\n"
        "print(sorted(name for name in sys.modules if name.startswith(heavy)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_provider_info_lists_the_transfer_and_airflow_accepts_it() -> None:
    from airflow.providers_manager import ProvidersManager

    data = ProvidersManager().providers["airflow-provider-reportruns"].data
    assert data["transfers"] == [
        {
            "source-integration-name": "Stripe Reporting",
            "target-integration-name": "Common SQL",
            "python-module": "airflow_provider_reportruns.transfers.report_to_sql",
        }
    ]


def test_a_load_cut_mid_stream_fails_the_task_with_the_cause_and_keeps_the_previous_rows(
    write_dag: Callable[[str, str], Path], sqlite_warehouse: Database, start_sim: Callable[..., StripeSimulator]
) -> None:
    simulator = start_sim(result_size=3 << 20, extra={"max_retries": 0})  # rows are in before the cut
    dag_file = load_dag(write_dag, "sql_cut")
    day = dt.datetime(2024, 3, 2, tzinfo=UTC)
    first = run_dag(dag_file, "sql_cut", logical_date=day)
    assert first.state == "success", whole_log(first)
    before = sqlite_warehouse.rows('SELECT count(*), min("_report_run_id") FROM activity')
    simulator.add_fault(Fault("file_contents", "cut_download", fraction=0.5))

    again = run_dag(dag_file, "sql_cut", logical_date=day)

    assert again.state == "failed"
    run_id = first.xcom("load")["report_run_id"]
    assert (
        f"Loading report run {run_id} ({ITEMIZED}) into table activity failed and was rolled back: the table "
        "keeps the rows it had. Cause: StripeReportingTransientError: The download of the result file of report run "
        f"{run_id} broke off after" in whole_log(again)
    )
    assert sqlite_warehouse.rows('SELECT count(*), min("_report_run_id") FROM activity') == before


SQL_CANARY = "sk_test_SqlOperatorCanary4Tz8Kp2Lm7Wq"
SQL_CANARY_CORE = "SqlOperatorCanary4Tz8"


def test_a_deferred_load_through_both_waits_loads_the_rows_and_keeps_no_key(
    write_dag: Callable[[str, str], Path],
    sqlite_warehouse: Database,
    start_sim: Callable[..., StripeSimulator],
    after_first: Callable[..., None],
) -> None:
    simulator = start_sim(api_key=SQL_CANARY, data_available_end=MAR_2 - 6 * 3600, run_delay=0.5)
    after_first(
        simulator,
        lambda r: r.kind == "create" and r.status == 400,
        0.3,
        lambda: simulator.set_data_available_end(MAR_2),
    )
    dag_file = load_dag(write_dag, "sql_deferred", deferrable=True, data_poll_interval=0.2)

    result = run_dag(dag_file, "sql_deferred", logical_date=dt.datetime(2024, 3, 2, tzinfo=UTC))

    assert result.state == "success", whole_log(result)
    assert whole_log(result).count("[DAG TEST] running trigger in line") == 2  # the data wait, the run wait
    [run] = simulator.report_runs()
    assert result.xcom("load")["report_run_id"] == run["id"]
    assert sqlite_warehouse.rows('SELECT count(*), min("_report_run_id") FROM activity') == [(24, run["id"])]
    kept = {"log": result.log_text, "xcom": repr(result.xcoms), "rendered": repr(result.rendered_fields)}
    assert [where for where, text in kept.items() if SQL_CANARY_CORE in text] == []
