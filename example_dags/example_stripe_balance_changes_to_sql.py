"""Daily itemized balance changes into a database table, then a SQL check of the day's rows.

One task creates (or reuses) the day's ``balance_change_from_activity.itemized.3`` report run, waits
for Stripe's data and for the run, and streams the CSV into ``stripe_balance_changes`` through an
Airflow SQL connection (SQLite, PostgreSQL, or any ``common.sql`` database). A retry, a clear or a
backfill over a loaded day replaces that day's rows instead of adding them again; each row carries
its report run id and interval. Then common.sql's ``SQLCheckOperator`` checks that the table holds
exactly the rows the load reported for the day.

Needs the ``[sql]`` extra (``[postgres]`` for PostgreSQL). Uses ``CronDataIntervalTimetable`` so each
DAG run covers the previous UTC day (see ``example_stripe_balance_report.py``).

Environment knobs (so the same file serves the demo, the tests and production):
``STRIPE_WAREHOUSE_CONN_ID`` (the SQL connection, default ``stripe_warehouse``),
``STRIPE_EXAMPLE_POKE_SECONDS`` (seconds between checks of the run and of the data, default 300).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pendulum
from airflow.providers.common.sql.operators.sql import SQLCheckOperator

from airflow_provider_reportruns.transfers.report_to_sql import StripeReportToSqlOperator

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.10+
    from airflow import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

REPORT_TYPE = "balance_change_from_activity.itemized.3"
TABLE = "stripe_balance_changes"
SQL_CONN_ID = os.environ.get("STRIPE_WAREHOUSE_CONN_ID", "stripe_warehouse")
POKE_SECONDS = float(os.environ.get("STRIPE_EXAMPLE_POKE_SECONDS", "300"))
PARAMETERS = {"currency": "usd"}
# How the load records them in ``_report_parameters``: canonical JSON, the interval apart.
PARAMETERS_JSON = json.dumps(PARAMETERS, sort_keys=True, separators=(",", ":"))

with DAG(
    dag_id="example_stripe_balance_changes_to_sql",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["stripe", "example", "sql"],
) as dag:
    load = StripeReportToSqlOperator(
        task_id="load_balance_changes",
        report_type=REPORT_TYPE,
        table=TABLE,
        sql_conn_id=SQL_CONN_ID,
        parameters=PARAMETERS,
        deferrable=True,
        poll_interval=POKE_SECONDS,
        data_poll_interval=POKE_SECONDS,
        timeout=6 * 3600,
        data_timeout=36 * 3600,
    )

    # The day's rows of this load (report type, parameters, interval), counted in the table, must be
    # exactly those the load wrote: a doubled load, or a lost one, fails the check (SQLCheckOperator
    # fails on a false cell). The provenance columns are the operator's.
    check = SQLCheckOperator(
        task_id="check_day_rows",
        conn_id=SQL_CONN_ID,
        sql=(
            f"SELECT COUNT(*) = {{{{ ti.xcom_pull(task_ids='load_balance_changes')['rows'] }}}} FROM {TABLE} "
            f"WHERE _report_type = '{REPORT_TYPE}' AND _report_parameters = '{PARAMETERS_JSON}' "
            "AND _interval_start = '{{ data_interval_start }}' AND _interval_end = '{{ data_interval_end }}'"
        ),
    )

    load >> check
