"""Benchmark row 6b: the same work as the SDK baseline, with this provider's hook in one task.

Mirrors ``sdk_balance_report.py`` line for line (data check, create, poll, download in one task,
then the same summary task) so the difference between rows 6a and 6b separates what the
provider's code costs from what splitting the chain into Airflow tasks costs.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.10+
    from airflow import DAG
    from airflow.decorators import task
from airflow.timetables.interval import CronDataIntervalTimetable

REPORT_TYPE = "balance.summary.1"
REPORTS_DIR = os.environ.get("STRIPE_REPORTS_DIR", "/tmp/stripe-reports") + "/hook"
POKE_SECONDS = float(os.environ.get("STRIPE_EXAMPLE_POKE_SECONDS", "300"))

with DAG(
    dag_id="bench_hook_balance_report",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["stripe", "benchmark"],
) as dag:

    @task
    def hook_report(data_interval_start=None, data_interval_end=None) -> str:
        """Data check, create, poll and download with StripeReportingHook."""
        import time

        from airflow_provider_reportruns.hooks.stripe import StripeReportingHook

        hook = StripeReportingHook()
        start, end = int(data_interval_start.timestamp()), int(data_interval_end.timestamp())
        report_type = hook.get_report_type(REPORT_TYPE)
        if report_type["data_available_end"] < end:
            raise RuntimeError(f"{REPORT_TYPE} has data only through {report_type['data_available_end']}")
        run = hook.create_report_run(REPORT_TYPE, {"interval_start": start, "interval_end": end, "currency": "usd"})
        run = hook.get_report_run(run["id"])
        while run["status"] == "pending":
            time.sleep(POKE_SECONDS)
            run = hook.get_report_run(run["id"])
        if run["status"] != "succeeded":
            raise RuntimeError(f"report run {run['id']} ended {run['status']}: {run['error']}")
        path = f"{REPORTS_DIR}/{REPORT_TYPE}/{data_interval_start.strftime('%Y-%m-%d')}.csv"
        return hook.download_report_run(run, path)

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

    summarize_report(hook_report())
