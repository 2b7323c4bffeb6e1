"""Finding a report run to reuse: parameters compared as Stripe means them, over a bounded walk."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

    from airflow_provider_reportruns.hooks.stripe import StripeReportingHook

__all__ = [
    "DEFAULT_REUSE_LOOKBACK",
    "INTERVAL_TOKENS",
    "TYPICAL_RUNS",
    "ReuseLookup",
    "find_reusable_run",
    "normalized_parameters",
]

# How far back the reuse lookup lists runs, at most: its cost must not grow with the account's
# history (a backfill of 2024 run today would otherwise page through every run since 2024).
DEFAULT_REUSE_LOOKBACK = dt.timedelta(days=7)
# How many recent runs of the report type the first poll's timing is taken from.
TYPICAL_RUNS = 10
INTERVAL_TOKENS = ("interval_start", "interval_end")


@dataclass(frozen=True)
class ReuseLookup:
    """What the reuse lookup found.

    :param run: the newest pending or succeeded run with the same report type and parameters.
    :param failed_run_ids: failed runs with those parameters: a new create gets a key of its own.
    :param recent_durations: seconds the newest succeeded runs of the report type took.
    """

    run: dict[str, Any] | None = None
    failed_run_ids: tuple[str, ...] = ()
    recent_durations: tuple[float, ...] = ()

    def first_poll_delay(self, poll_interval: float) -> float:
        """Seconds from the create to the first status poll.

        The status in hand is fresh (the create's answer, or the lookup's), so polling at once
        would ask again for what is already known: the first poll waits ``poll_interval``, or
        less when the median of the report type's recent runs finished sooner. In a backfill of
        quick runs that poll finds the run done.
        """
        import statistics

        if not self.recent_durations:
            return poll_interval
        return min(poll_interval, max(0.0, statistics.median(self.recent_durations)))


def normalized_parameters(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Parameters in the form two equal requests share, whatever Stripe echoes: no ``None``
    values, currency in lower case, whole numbers as ints (``"1709251200"`` == ``1709251200``),
    ``columns`` as an ordered list of strings (the order is the file's column order)."""
    normalized: dict[str, Any] = {}
    for key, value in (parameters or {}).items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = [str(item) for item in value]
        elif key == "currency" and isinstance(value, str):
            value = value.strip().lower()
        elif (isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip())) or (
            isinstance(value, float) and value.is_integer()
        ):
            value = int(value)
        normalized[str(key)] = value
    return normalized


def _differences(wanted: Mapping[str, Any], found: Mapping[str, Any]) -> list[str]:
    return [
        f"{key}: {found.get(key)!r} instead of {wanted.get(key)!r}"
        for key in sorted(set(wanted) | set(found))
        if wanted.get(key) != found.get(key)
    ]


def _duration(run: Mapping[str, Any]) -> float | None:
    """Seconds from a succeeded run's creation to its success (Stripe's whole-second stamps)."""
    from airflow_provider_reportruns.waiting import run_outcome

    created, succeeded = run.get("created"), run.get("succeeded_at")
    if run_outcome(run) != "succeeded" or not isinstance(created, int) or not isinstance(succeeded, int):
        return None
    return float(max(0, succeeded - created))


def find_reusable_run(
    hook: StripeReportingHook,
    report_type: str,
    parameters: Mapping[str, Any],
    *,
    lookback: float,
    log: logging.Logger | Any,
    now: float | None = None,
) -> ReuseLookup:
    """The newest pending or succeeded run of ``report_type`` with the same parameters (compared
    in :func:`normalized_parameters` form), listed from ``created[gte]`` =
    ``max(interval_end, now - lookback)`` (``now - lookback`` for interval-less report types).

    Runs can only be created after their interval's data exists, so none older than
    ``interval_end`` can match; the lookback bounds the walk for old intervals, so a run older
    than it is not reused. A run of the same type and interval whose other parameters differ is
    logged with what differed.
    """
    from airflow_provider_reportruns.waiting import run_outcome

    now = time.time() if now is None else now
    floor = int(now - lookback)
    interval_end = parameters.get("interval_end")
    lower = max(interval_end, floor) if isinstance(interval_end, int) else floor
    wanted = normalized_parameters(parameters)
    interval = {key: wanted.get(key) for key in INTERVAL_TOKENS}
    failed: list[str] = []
    durations: list[float] = []
    pending: dict[str, Any] | None = None
    for run in hook.iter_report_runs(created={"gte": lower}):
        if run.get("report_type") != report_type:
            continue
        took = _duration(run)
        if took is not None and len(durations) < TYPICAL_RUNS:
            durations.append(took)
        found = normalized_parameters(run.get("parameters"))
        if found != wanted:
            if {key: found.get(key) for key in INTERVAL_TOKENS} == interval:
                log.info(
                    "Not reusing report run %s of %s for this interval: its parameters differ (%s).",
                    run.get("id"),
                    report_type,
                    "; ".join(_differences(wanted, found)),
                )
            continue
        outcome = run_outcome(run)
        if outcome == "succeeded":
            return ReuseLookup(run, tuple(failed), tuple(durations))
        if outcome == "failed":
            failed.append(str(run["id"]))
        elif pending is None:
            pending = run
    return ReuseLookup(pending, tuple(failed), tuple(durations))
