"""Waiting in the worker for Stripe to prepare an interval's data, or handing the wait to the
triggerer."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

    from airflow_provider_reportruns.hooks.stripe import StripeReportingHook

__all__ = ["data_timeout_message", "wait_for_data"]


def data_timeout_message(report_type: str, interval_end: int, data_timeout: float, last_seen: Any) -> str:
    """The same words for the polling and the deferred wait (``last_seen``: Stripe's last
    ``data_available_end``, if any answer came)."""
    from airflow_provider_reportruns.intervals import iso_utc

    seen = iso_utc(last_seen) if isinstance(last_seen, int) else "no answer"
    return (
        f"Stripe's data for {report_type} did not reach interval_end {iso_utc(interval_end)} within "
        f"data_timeout ({data_timeout:.0f} s); last data_available_end: {seen}."
    )


def wait_for_data(
    operator: Any,
    hook: StripeReportingHook,
    report_type: str,
    interval_end: int,
    *,
    stripe_conn_id: str,
    deferrable: bool,
    data_poll_interval: float,
    data_timeout: float,
    log: logging.Logger | Any,
) -> None:
    """Return once ``data_available_end`` reaches the interval end, or defer ``operator`` until it
    does (resuming in its ``execute_after_data``); raise when ``data_timeout`` passes first."""
    from airflow_provider_reportruns._compat import AirflowException
    from airflow_provider_reportruns.intervals import iso_utc
    from airflow_provider_reportruns.waiting import data_covers, poll_until

    now = time.time()
    deadline = now + data_timeout
    if deferrable:
        from airflow_provider_reportruns.triggers.report_type import StripeReportDataAvailableTrigger

        operator.defer(
            trigger=StripeReportDataAvailableTrigger(
                report_type=report_type,
                interval_end=interval_end,
                stripe_conn_id=stripe_conn_id,
                poll_interval=data_poll_interval,
                end_time=deadline,
                first_poll_at=min(now + data_poll_interval, deadline),  # Stripe has just said no
            ),
            method_name="execute_after_data",
        )
    result = poll_until(
        lambda: hook.get_report_type(report_type),
        lambda found: data_covers(found, interval_end),
        deadline=deadline,
        first_delay=data_poll_interval,
        interval=data_poll_interval,
        log=log,
        describe=lambda _: f"Waiting for Stripe's {report_type} data to reach {iso_utc(interval_end)}",
    )
    last_seen = (result.value or {}).get("data_available_end")
    if not result.done:
        raise AirflowException(data_timeout_message(report_type, interval_end, data_timeout, last_seen))
    log.info("Stripe's %s data is available through %s.", report_type, iso_utc(last_seen))
