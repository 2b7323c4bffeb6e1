"""Waiting in the worker for a report run, or handing the wait to the triggerer."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider_reportruns.waiting import describe_run, poll_until

if TYPE_CHECKING:
    import logging

    from airflow_provider_reportruns.hooks.stripe import StripeReportingHook

__all__ = ["INLINE_FIRST_POLL_SECONDS", "defer_run_wait", "run_succeeded", "run_timeout_message", "wait_for_run"]

# A deferral costs a trigger hand-off and a new worker slot to resume, seconds of scheduling at
# best; a first poll due sooner than this is taken in the worker.
INLINE_FIRST_POLL_SECONDS = 5.0


def run_succeeded(run: Mapping[str, Any]) -> bool:
    """``True`` once succeeded, ``False`` while not finished; a failed run raises
    :class:`StripeReportRunFailed` with Stripe's message."""
    from airflow_provider_reportruns.hooks.stripe import check_report_run

    return check_report_run(run)


def run_timeout_message(run_id: str, last_status: Any, waited: float) -> str:
    return (
        f"Stripe report run {run_id} did not finish in time: last status {last_status!r} after waiting {waited:.0f} s."
    )


def defer_run_wait(
    operator: Any, run: Mapping[str, Any] | str, *, stripe_conn_id: str, poll_interval: float
) -> Callable[[float, float], NoReturn]:
    """The ``defer`` argument of :func:`wait_for_run` for ``operator``: hands the wait for
    ``run`` (the run, or its id) to a :class:`StripeReportRunTrigger`, resuming in
    ``execute_complete``. Given the run, the trigger carries its ``created``, which places it in
    Stripe's run list for the triggerer's shared poller."""
    run_id = run if isinstance(run, str) else str(run["id"])
    created = None if isinstance(run, str) else run.get("created")

    def defer(first_poll_at: float, end_time: float) -> NoReturn:
        from airflow_provider_reportruns.triggers.report_run import StripeReportRunTrigger

        operator.defer(
            trigger=StripeReportRunTrigger(
                report_run_id=run_id,
                stripe_conn_id=stripe_conn_id,
                poll_interval=poll_interval,
                end_time=end_time,
                first_poll_at=first_poll_at,
                created=created if isinstance(created, int) else None,
            ),
            method_name="execute_complete",
        )
        raise AssertionError("defer() returned")  # pragma: no cover - Airflow's defer always raises

    return defer


def wait_for_run(
    hook: StripeReportingHook,
    run: dict[str, Any],
    *,
    poll_interval: float,
    timeout: float,
    first_delay: float,
    log: logging.Logger | Any,
    defer: Callable[[float, float], NoReturn] | None = None,
) -> dict[str, Any]:
    """The run once succeeded; raises when it failed or the wait timed out.

    Polls after ``first_delay``, then every ``poll_interval``, waiting through Stripe outages
    until the deadline. With ``defer`` (``defer(first_poll_at, end_time)`` hands the wait to the
    triggerer and does not return), the wait defers, except for a first poll due within
    :data:`INLINE_FIRST_POLL_SECONDS`, which is cheaper to take here.
    """
    from airflow_provider_reportruns.hooks.stripe import StripeReportingError

    run_id = str(run["id"])
    started = time.time()
    deadline = started + timeout
    if run_succeeded(run):
        return run
    inline = first_delay < poll_interval and first_delay <= INLINE_FIRST_POLL_SECONDS
    if defer is not None and not inline:
        defer(min(time.time() + first_delay, deadline), deadline)
    result = poll_until(
        lambda: hook.get_report_run(run_id),
        run_succeeded,
        deadline=started + (first_delay if defer is not None else timeout),
        first_delay=first_delay,
        interval=poll_interval,
        log=log,
        describe=describe_run,
        last=run,
    )
    if result.done and result.value is not None:
        return result.value
    if defer is not None:  # the inline first poll found it unfinished
        defer(min(time.time() + poll_interval, deadline), deadline)
    last = result.value or run
    raise StripeReportingError(run_timeout_message(run_id, last.get("status"), time.time() - started))
