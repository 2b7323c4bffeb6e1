"""The one wait model: what counts as finished, and what a Stripe error means while waiting.

Every wait in the provider decides with these functions: the create operator's wait, the
one-task operator's run and data waits, both sensors (poke, reschedule, deferrable) and both
triggers. A worker's poll loop and the triggerer's async loop differ only in how they sleep.

No Airflow imports: the decisions are plain functions of Stripe's objects and errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from airflow_provider_reportruns.client import (
    ReportRunStatus,
    StripeDataNotReadyError,
    StripeError,
    StripePermanentError,
    StripeTransientError,
)

if TYPE_CHECKING:
    import logging

__all__ = [
    "ERROR_KINDS_BY_NAME",
    "PollResult",
    "data_covers",
    "data_never_covers",
    "describe_run",
    "error_kind",
    "fetch_while_waiting",
    "poll_until",
    "run_outcome",
    "waits_through",
]

T = TypeVar("T")

# The kind of a Stripe error as it travels in a trigger event (a string: events hold primitives).
ERROR_KINDS_BY_NAME: dict[str, type[StripeError]] = {
    "transient": StripeTransientError,
    "data_not_ready": StripeDataNotReadyError,
    "permanent": StripePermanentError,
}


def run_outcome(run: Mapping[str, Any]) -> str | None:
    """Whether a report run is finished, and how: ``"succeeded"``, ``"failed"``, or ``None``
    while it is not. A status Stripe may add later counts as not finished, never as success."""
    status = run.get("status")
    if status == ReportRunStatus.SUCCEEDED:
        return ReportRunStatus.SUCCEEDED.value
    if status == ReportRunStatus.FAILED:
        return ReportRunStatus.FAILED.value
    return None


def data_covers(report_type: Mapping[str, Any], interval_end: int) -> bool:
    """Whether a report type's ``data_available_end`` has reached ``interval_end``."""
    available_end = report_type.get("data_available_end")
    return isinstance(available_end, int) and available_end >= interval_end


def data_never_covers(report_type: Mapping[str, Any], interval_start: int | None) -> bool:
    """Whether the interval starts before ``data_available_start``: no wait will ever help."""
    available_start = report_type.get("data_available_start")
    return interval_start is not None and isinstance(available_start, int) and interval_start < available_start


def describe_run(run: Mapping[str, Any] | None) -> str:
    """``Report run frr_… (balance.summary.1) is pending, 42 s after it was created``."""
    if run is None:
        return "Stripe has not answered yet"
    created = run.get("created")
    elapsed = f", {time.time() - created:.0f} s after it was created" if isinstance(created, (int, float)) else ""
    return f"Report run {run.get('id')} ({run.get('report_type')}) is {run.get('status')}{elapsed}"


def waits_through(exc: BaseException) -> bool:
    """The rule for Stripe errors while waiting: a transient one (no answer, 409, 429, 5xx after
    the client's own retries) is logged and the wait goes on until its deadline; anything else
    ends the wait with that error."""
    return isinstance(exc, StripeTransientError)


def error_kind(exc: BaseException) -> str | None:
    """The name of ``exc``'s kind in :data:`ERROR_KINDS_BY_NAME`, or ``None`` for an error of no
    kind (a missing connection, a local failure)."""
    for name, kind in ERROR_KINDS_BY_NAME.items():
        if isinstance(exc, kind):
            return name
    return None


def fetch_while_waiting(fetch: Callable[[], T], log: logging.Logger | Any) -> T | None:
    """``fetch()``, or ``None`` when Stripe did not answer this time (logged; the wait goes on).
    Any other error is raised."""
    try:
        return fetch()
    except StripeError as exc:
        if not waits_through(exc):
            raise
        log.warning("Stripe did not answer this check; still waiting: %s", exc)
        return None


@dataclass(frozen=True)
class PollResult(Generic[T]):
    """How a poll loop ended: ``done`` with the value that finished it, or timed out with the last
    value seen (``None`` when Stripe never answered)."""

    done: bool
    value: T | None


def poll_until(
    fetch: Callable[[], T],
    is_done: Callable[[T], bool],
    *,
    deadline: float,
    first_delay: float,
    interval: float,
    log: logging.Logger | Any,
    describe: Callable[[T | None], str],
    last: T | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PollResult[T]:
    """The worker's wait: sleep, fetch, decide, until ``is_done`` or ``deadline`` (Unix seconds).

    ``is_done`` may raise to end the wait (a failed run). Transient errors are waited through
    (:func:`fetch_while_waiting`); the deadline is checked after every fetch, so an outage that
    ends before it never fails the wait.

    :param last: the value already in hand (the create's answer), reported if nothing newer comes.
    """
    delay = first_delay
    while True:
        log.info("%s; checking again in %.1f s.", describe(last), max(0.0, min(delay, deadline - time.time())))
        sleep(max(0.0, min(delay, deadline - time.time())))
        value = fetch_while_waiting(fetch, log)
        if value is not None:
            last = value
            if is_done(value):
                return PollResult(True, value)
        if time.time() >= deadline:
            return PollResult(False, last)
        delay = interval
