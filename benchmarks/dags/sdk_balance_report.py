"""Benchmark row 6's baseline: the example DAG's work hand-written with Stripe's Python SDK.

One task checks the report type's data availability, creates the report run, polls it and
downloads the result file; a second task summarizes the CSV exactly as the example DAG does.
Stripe's SDK has no public call for a result file's contents, so the download is a streamed
``requests`` GET with the same key, which is what Stripe's docs show. Same schedule, poll interval
and destination layout as ``example_dags/example_stripe_balance_report.py``.
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
REPORTS_DIR = os.environ.get("STRIPE_REPORTS_DIR", "/tmp/stripe-reports") + "/sdk"
POKE_SECONDS = float(os.environ.get("STRIPE_EXAMPLE_POKE_SECONDS", "300"))

with DAG(
    dag_id="bench_sdk_balance_report",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["stripe", "benchmark"],
) as dag:

    @task
    def sdk_report(data_interval_start=None, data_interval_end=None) -> str:
        """Data check, create, poll and download with the stripe SDK."""
        import shutil
        import time

        import requests
        import stripe

        try:
            from airflow.sdk import BaseHook
        except ImportError:
            from airflow.hooks.base import BaseHook

        conn = BaseHook.get_connection("stripe_default")
        stripe.enable_telemetry = False
        client = stripe.StripeClient(conn.password, base_addresses={"api": conn.host, "files": conn.host})
        start, end = int(data_interval_start.timestamp()), int(data_interval_end.timestamp())
        report_type = client.v1.reporting.report_types.retrieve(REPORT_TYPE)
        if report_type.data_available_end < end:
            raise RuntimeError(f"{REPORT_TYPE} has data only through {report_type.data_available_end}")
        run = client.v1.reporting.report_runs.create(
            params={
                "report_type": REPORT_TYPE,
                "parameters": {"interval_start": start, "interval_end": end, "currency": "usd"},
            }
        )
        run = client.v1.reporting.report_runs.retrieve(run.id)
        while run.status == "pending":
            time.sleep(POKE_SECONDS)
            run = client.v1.reporting.report_runs.retrieve(run.id)
        if run.status != "succeeded":
            raise RuntimeError(f"report run {run.id} ended {run.status}: {run.error}")
        path = f"{REPORTS_DIR}/{REPORT_TYPE}/{data_interval_start.strftime('%Y-%m-%d')}.csv"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with requests.get(
            run.result.url, headers={"Authorization": f"Bearer {conn.password}"}, stream=True, timeout=60
        ) as response:
            response.raise_for_status()
            with open(path, "wb") as handle:
                shutil.copyfileobj(response.raw, handle, 1 << 20)
        return path

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

    summarize_report(sdk_report())
