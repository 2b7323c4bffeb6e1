"""Bad input and the message the user reads: one row per mistake, each asserted word for word
where it matters. The section "Errors you may read" of docs/errors-and-retries.md lists the same
rows (a test below keeps the two in step).

Stripe's side is the local simulator over HTTP; operators run their ``execute`` with a minimal
context (the one real DAG run is the Airflow 3 zero-length interval).
"""

from __future__ import annotations

import datetime as dt
import re
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from airflow_harness import airflow_major, run_dag

from airflow_provider_reportruns.hooks.stripe import StripeReportingHook, check_report_run
from airflow_provider_reportruns.operators.report_run import StripeCreateReportRunOperator
from airflow_provider_reportruns.testing.simulator import StripeSimulator

REPO = Path(__file__).resolve().parent.parent
CONN_ID = "stripe_errors"
DAY = 86400
JAN_1 = 1704067200  # 2024-01-01 00:00 UTC
AVAILABLE_END = JAN_1 + DAY  # the simulator has data through 2024-01-02 00:00 UTC
WRONG_KEY = "sk_test_wrongKEYdoesNOTexist4242"
NO_PERMISSION_KEY = "rk_test_withoutReportingPermission"


@dataclass
class World:
    """What a row needs: the simulator, connections to it, a scratch directory."""

    sim: StripeSimulator
    define: Callable[..., str]
    tmp_path: Path

    def hook(self, password: str | None = None, host: str | None = None, **extra: Any) -> StripeReportingHook:
        self.define(
            CONN_ID,
            conn_type="stripe",
            host=self.sim.url if host is None else host,
            password=self.sim.api_key if password is None else password,
            extra=extra,
        )
        return StripeReportingHook(CONN_ID, initial_backoff=0.01)

    def create_operator(self, **kwargs: Any) -> tuple[StripeCreateReportRunOperator, dict[str, Any]]:
        self.hook()  # defines the connection
        kwargs.setdefault("report_type", "balance.summary.1")
        operator = StripeCreateReportRunOperator(task_id="create_report_run", stripe_conn_id=CONN_ID, **kwargs)
        ti = types.SimpleNamespace(
            dag_id="errors", run_id="manual__1", task_id="create_report_run", map_index=-1, try_number=1
        )
        start = dt.datetime.fromtimestamp(JAN_1 - DAY, tz=dt.timezone.utc)
        context = {"ti": ti, "data_interval_start": start, "data_interval_end": start + dt.timedelta(days=1)}
        return operator, context

    def run_operator(self, **kwargs: Any) -> Any:
        operator, context = self.create_operator(**kwargs)
        return operator.execute(context)

    def succeeded_run(self) -> dict[str, Any]:
        hook = self.hook()
        run = hook.create_report_run("balance.summary.1", {"interval_start": JAN_1 - DAY, "interval_end": JAN_1})
        self.sim.finish_report_run(run["id"])
        return hook.get_report_run(run["id"])


@dataclass(frozen=True)
class Row:
    input: str  # as the README table names it
    call: Callable[[World], Any]
    expect: tuple[str, ...]  # fragments of the message, in order

    @property
    def id(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.input.lower()).strip("-")


def _zero_length_interval(world: World) -> Any:
    operator, context = world.create_operator()
    context["data_interval_end"] = context["data_interval_start"]
    return operator.execute(context)


def _download_to(world: World, destination: Callable[[Path], Path]) -> Any:
    hook = world.hook()
    return hook.download_report_run(world.succeeded_run(), destination(world.tmp_path))


def _file_in_the_way(tmp: Path) -> Path:
    (tmp / "reports").write_text("a file, not a directory")
    return tmp / "reports" / "balance.csv"


def _directory_in_the_way(tmp: Path) -> Path:
    (tmp / "balance.csv").mkdir()
    return tmp / "balance.csv"


def _failed_run(world: World) -> Any:
    hook = world.hook()
    run = hook.create_report_run("balance.summary.1", {"interval_start": JAN_1 - DAY, "interval_end": JAN_1})
    world.sim.finish_report_run(run["id"], "failed")
    return check_report_run(hook.get_report_run(run["id"]))


ROWS = [
    # -- the key and the connection ------------------------------------------------------------
    Row(
        "Wrong secret key (401)",
        lambda w: w.hook(WRONG_KEY).list_report_types(),
        ("401", "The Stripe key in connection 'stripe_errors' was rejected", "(request req_"),
    ),
    Row(
        "Restricted key without the Reporting permission (403)",
        lambda w: w.hook(NO_PERMISSION_KEY).create_report_run("balance.summary.1", {}),
        ("403", "lacks a permission", "report_runs_and_report_types_read"),
    ),
    Row(
        "Publishable pk_ key",
        lambda w: w.hook("pk_test_publishableKEY1234").list_report_types(),
        ("The Stripe key in connection 'stripe_errors' is a publishable key (pk_…)", "use a secret key (sk_…)"),
    ),
    Row(
        "Empty key",
        lambda w: w.hook("").list_report_types(),
        ("No Stripe secret key in connection 'stripe_errors'", "Secret key (password) field"),
    ),
    Row(
        "Connection not defined",
        lambda w: StripeReportingHook("stripe_nowhere").list_report_types(),
        ("The Airflow connection 'stripe_nowhere' is not defined", "AIRFLOW_CONN_STRIPE_NOWHERE"),
    ),
    Row(
        "Host that is not a URL",
        lambda w: w.hook(host="https://").list_report_types(),
        ("'https://' is not a URL with a scheme and host", "(host of connection 'stripe_errors')"),
    ),
    Row(
        "http:// to a host that is not loopback",
        lambda w: w.hook(host="http://api.stripe.com").list_report_types(),
        ("Refusing plain http:// to api.stripe.com", "only sent over https"),
    ),
    Row(
        "Unknown extra field (typo)",
        lambda w: w.hook(stripe_acount="acct_1").list_report_types(),
        ("Unknown extra field(s) stripe_acount in connection 'stripe_errors'", "allowed: stripe_account"),
    ),
    Row(
        "verify extra (switching TLS verification off)",
        lambda w: w.hook(verify=False).list_report_types(),
        ("Unknown extra field(s) verify", "TLS verification cannot be switched off"),
    ),
    # -- report types, runs and intervals ------------------------------------------------------
    Row(
        "Live-only report type with a test key",
        lambda w: w.hook().create_report_run(
            "connected_account_balance.summary.1", {"interval_start": JAN_1 - DAY, "interval_end": JAN_1}
        ),
        ("400", "needs a live-mode key (sk_live_… or rk_live_…) in connection 'stripe_errors'"),
    ),
    Row(
        "Unknown report type",
        lambda w: w.run_operator(report_type="balance.sumary.1"),
        ("param report_type", "`balance.sumary.1` is not a valid report type"),
    ),
    Row(
        "Unknown report run id",
        lambda w: w.hook().get_report_run("frr_doesNotExist"),
        ("404", "No such reporting.report_run: 'frr_doesNotExist'", "account and mode (test or live)"),
    ),
    Row(
        "Not a report run id",
        lambda w: w.hook().get_report_run("po_1234"),
        ("report_run_id 'po_1234' is not a Stripe report run id (they start with 'frr_')",),
    ),
    Row(
        "Interval not yet available (create operator)",
        lambda w: w.run_operator(interval_start=AVAILABLE_END, interval_end=AVAILABLE_END + DAY),
        (
            "only available through 2024-01-02 00:00:00 UTC",
            "has not prepared this interval's data yet",
            "StripeReportDataAvailableSensor",
        ),
    ),
    Row(
        "Interval before the first available data (create operator)",
        lambda w: w.run_operator(interval_start=1262304000, interval_end=1262390400),
        ("only available starting from", "will never become available"),
    ),
    Row(
        "Empty interval (Airflow 3 zero-length data interval)",
        _zero_length_interval,
        ("data interval is empty", "CronDataIntervalTimetable('@daily', timezone='UTC')"),
    ),
    Row(
        "interval_end not after interval_start",
        lambda w: w.run_operator(interval_start=JAN_1, interval_end=JAN_1 - DAY),
        ("interval_end (2023-12-31 00:00:00 UTC) must be after interval_start (2024-01-01 00:00:00 UTC)",),
    ),
    Row(
        "Naive datetime",
        lambda w: w.run_operator(interval_start=dt.datetime(2024, 1, 1), interval_end=dt.datetime(2024, 1, 2)),
        ("interval_start is a naive datetime (2024-01-01T00:00:00)", "timezone-aware"),
    ),
    Row(
        "Unparseable timestamp",
        lambda w: w.run_operator(interval_start="yesterday", interval_end=JAN_1),
        ("interval_start must be Unix seconds, an aware datetime or an ISO 8601 date-time, got 'yesterday'",),
    ),
    Row(
        "Report run that Stripe failed",
        _failed_run,
        ("(balance.summary.1) failed: An unexpected error occurred while running this report",),
    ),
    # -- lists ---------------------------------------------------------------------------------
    Row(
        "limit outside 1–100",
        lambda w: w.hook().list_report_runs(limit=101),
        ("limit must be a whole number from 1 to 100, got 101",),
    ),
    Row(
        "Both cursors",
        lambda w: w.hook().list_report_runs(starting_after="frr_a", ending_before="frr_b"),
        ("Pass starting_after or ending_before, not both",),
    ),
    # -- the destination -----------------------------------------------------------------------
    Row(
        "Destination below a file",
        lambda w: _download_to(w, _file_in_the_way),
        ("Cannot write the result file of report run frr_", "reports exists and is not a directory"),
    ),
    Row(
        "Destination that is a directory",
        lambda w: _download_to(w, _directory_in_the_way),
        ("Cannot write the result file of report run frr_", "balance.csv: it is a directory"),
    ),
]


@pytest.fixture
def world(airflow_conn, tmp_path) -> Iterator[World]:
    with StripeSimulator(
        seed=11,
        data_available_end=AVAILABLE_END,
        restricted_keys={NO_PERMISSION_KEY: False},
    ) as sim:
        yield World(sim, airflow_conn, tmp_path)


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_message_the_user_reads(world: World, row: Row) -> None:
    with pytest.raises(Exception) as caught:
        row.call(world)
    message = str(caught.value)
    position = 0
    for fragment in row.expect:
        found = message.find(fragment, position)
        assert found >= 0, f"{fragment!r} not in (or out of order in):\n{message}"
        position = found + len(fragment)
    for secret in (WRONG_KEY, NO_PERMISSION_KEY, world.sim.api_key):
        assert secret not in message
    assert ".." not in message.replace("...", ""), message


def test_no_partial_file_is_left_when_the_destination_cannot_be_written(world: World) -> None:
    with pytest.raises(Exception, match="it is a directory"):
        _download_to(world, _directory_in_the_way)
    assert sorted(p.name for p in world.tmp_path.iterdir()) == ["balance.csv"]
    assert list((world.tmp_path / "balance.csv").iterdir()) == []


@pytest.mark.skipif(airflow_major() < 3, reason="Airflow 2's '@daily' still has a real data interval")
def test_daily_preset_on_airflow_3_fails_the_create_with_the_timetable_to_use(world: World, write_dag) -> None:
    world.hook()
    dag_file = write_dag(
        "errors_daily_preset.py",
        f"""
        import datetime as dt
        from airflow.sdk import DAG
        from airflow_provider_reportruns.operators.report_run import StripeCreateReportRunOperator

        with DAG("errors_daily_preset", schedule="@daily", start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)):
            StripeCreateReportRunOperator(task_id="create", report_type="balance.summary.1", stripe_conn_id="{CONN_ID}")
        """,
    )

    result = run_dag(dag_file, "errors_daily_preset", logical_date=dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc))

    assert result.task_state("create") == "failed"
    log = result.log("create")
    assert "The DAG run's data interval is empty (data_interval_start == data_interval_end" in log
    assert "CronDataIntervalTimetable('@daily', timezone='UTC')" in log
    assert world.sim.report_runs() == []


def test_docs_list_every_row() -> None:
    page = (REPO / "docs" / "errors-and-retries.md").read_text()
    section = page.split("<!-- section:errors -->", 1)[1].split("<!-- /section:errors -->", 1)[0]
    missing = [row.input for row in ROWS if f"| {row.input} |" not in section]
    assert not missing, f"the errors section of docs/errors-and-retries.md lacks rows for: {missing}"
