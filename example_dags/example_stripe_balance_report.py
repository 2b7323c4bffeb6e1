"""Daily Stripe balance report: one task creates (or reuses) the day's report run, waits for
Stripe's data and for the run, and streams the CSV into a dated path; a second task logs a summary.

Uses ``CronDataIntervalTimetable`` so each DAG run covers the previous UTC day, [00:00, 24:00):
on Airflow 3, ``schedule="@daily"`` would give a zero-length data interval. Catchup and backfills
therefore give one Stripe report run per day, and re-running a day reuses its run.

Both waits are deferrable (they need a running triggerer, ``airflow triggerer``): a DAG run at
midnight waits hours for Stripe to prepare yesterday's data without holding a worker slot.
``example_stripe_balance_report_steps.py`` does the same in one task per step, without a triggerer.

Environment knobs (so the same file serves the demo, the tests and production):
``STRIPE_REPORTS_DIR`` (where CSVs land, default ``/tmp/stripe-reports``),
``STRIPE_EXAMPLE_POKE_SECONDS`` (seconds between checks of the run and of the data, default 300).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum

from airflow_provider_reportruns.operators.report_to_storage import StripeReportToStorageOperator

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.10+
    from airflow import DAG
    from airflow.decorators import task
from airflow.timetables.interval import CronDataIntervalTimetable

REPORT_TYPE = "balance.summary.1"
REPORTS_DIR = os.environ.get("STRIPE_REPORTS_DIR", "/tmp/stripe-reports")
POKE_SECONDS = float(os.environ.get("STRIPE_EXAMPLE_POKE_SECONDS", "300"))

with DAG(
    dag_id="example_stripe_balance_report",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["stripe", "example"],
) as dag:
    store_report = StripeReportToStorageOperator(
        task_id="store_report",
        report_type=REPORT_TYPE,
        parameters={"currency": "usd"},
        destination=REPORTS_DIR + "/" + REPORT_TYPE + "/{{ data_interval_start | ds }}.csv",
        deferrable=True,
        poll_interval=POKE_SECONDS,
        data_poll_interval=POKE_SECONDS,
        timeout=6 * 3600,
        data_timeout=36 * 3600,
    )

    @task
    def summarize_report(path: str) -> dict[str, int]:
        """Read the CSV and log one line per balance category."""
        import csv
        import logging

        log = logging.getLogger("airflow.task")
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        log.info("Report %s: %d rows.", path, len(rows))
        for row in rows[:10]:
            log.info("  %s", ", ".join(f"{k}={v}" for k, v in row.items()))
        return {"rows": len(rows)}

    summarize_report(store_report.output)
