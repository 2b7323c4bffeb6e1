"""Daily Stripe balance report, step by step: wait for Stripe's data → create a report run → wait
for it → download the CSV into a dated path → log a summary.

The same work as ``example_stripe_balance_report.py`` in the building blocks, one task per step,
with sensors in ``reschedule`` mode: it runs without a triggerer, and each step can be retried,
cleared or replaced on its own. ``example_stripe_balance_report.py`` does it in one task.

Uses ``CronDataIntervalTimetable`` so each DAG run covers the previous UTC day, [00:00, 24:00):
on Airflow 3, ``schedule="@daily"`` would give a zero-length data interval. Catchup and backfills
therefore give one Stripe report run per day, and re-running a day reuses its run.

Environment knobs (so the same file serves the demo, the tests and production):
``STRIPE_REPORTS_DIR`` (where CSVs land, default ``/tmp/stripe-reports``),
``STRIPE_EXAMPLE_POKE_SECONDS`` (sensor poke interval, default 300).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum

from airflow_provider_reportruns.operators.report_run import (
    StripeCreateReportRunOperator,
    StripeDownloadReportRunOperator,
)
from airflow_provider_reportruns.sensors.report_run import StripeReportRunSensor
from airflow_provider_reportruns.sensors.report_type import StripeReportDataAvailableSensor

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
    dag_id="example_stripe_balance_report_steps",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["stripe", "example"],
) as dag:
    wait_for_data = StripeReportDataAvailableSensor(
        task_id="wait_for_data",
        report_type=REPORT_TYPE,
        mode="reschedule",
        poke_interval=POKE_SECONDS,
        timeout=36 * 3600,
    )
    create_report_run = StripeCreateReportRunOperator(
        task_id="create_report_run",
        report_type=REPORT_TYPE,
        parameters={"currency": "usd"},
    )
    wait_for_report_run = StripeReportRunSensor(
        task_id="wait_for_report_run",
        report_run_id=create_report_run.output,
        mode="reschedule",
        poke_interval=POKE_SECONDS,
        timeout=6 * 3600,
    )
    download_report = StripeDownloadReportRunOperator(
        task_id="download_report",
        report_run_id=wait_for_report_run.output,
        destination=REPORTS_DIR + "/" + REPORT_TYPE + "/{{ data_interval_start | ds }}.csv",
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

    wait_for_data >> create_report_run
    summarize_report(download_report.output)
