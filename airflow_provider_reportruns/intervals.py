"""Which interval a report type takes, and how a DAG run's data interval becomes Stripe's.

No Airflow imports: the operator and the data-availability sensor hand in the values they read
from the task context.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_reportruns.client import to_unix_seconds

__all__ = ["ReportInterval", "interval_fields", "iso_utc", "resolve_interval", "utc_date"]

EMPTY_INTERVAL_HELP = (
    "The DAG run's data interval is empty (data_interval_start == data_interval_end == {start}). "
    "Airflow 3 gives zero-length intervals for schedule='@daily' and timedelta schedules. "
    "Pass interval_start and interval_end explicitly, or schedule the DAG with a data-interval timetable "
    "such as CronDataIntervalTimetable('@daily', timezone='UTC') "
    "(or set [scheduler] create_cron_data_intervals = True)."
)


def interval_fields(report_type: str) -> tuple[str, ...]:
    """The interval parameters a report type requires, from Stripe's naming of its types.

    ``*.by_id.*`` types report on one payout and take none; ``ending_balance_reconciliation``
    types take only ``interval_end``; every other type takes both bounds.
    """
    if ".by_id." in report_type:
        return ()
    if "ending_balance_reconciliation" in report_type:
        return ("interval_end",)
    return ("interval_start", "interval_end")


@dataclass(frozen=True)
class ReportInterval:
    """A half-open interval ``[start, end)`` in UTC Unix seconds; ``None`` where the type takes none."""

    start: int | None
    end: int | None

    def as_parameters(self) -> dict[str, int]:
        params: dict[str, int] = {}
        if self.start is not None:
            params["interval_start"] = self.start
        if self.end is not None:
            params["interval_end"] = self.end
        return params


def resolve_interval(
    report_type: str,
    *,
    parameters: Mapping[str, Any] | None = None,
    interval_start: Any = None,
    interval_end: Any = None,
    data_interval_start: Any = None,
    data_interval_end: Any = None,
) -> ReportInterval:
    """The interval to send for ``report_type``.

    Precedence: the operator's ``interval_start``/``interval_end``, then the same keys inside
    ``parameters``, then the DAG run's data interval. Only the bounds the report type takes are
    filled in from the data interval.

    :raises ValueError: with a message a user can act on, before any request is made.
    """
    parameters = parameters or {}
    fields = interval_fields(report_type)
    explicit: dict[str, Any] = {}
    for name, value in (("interval_start", interval_start), ("interval_end", interval_end)):
        in_params = parameters.get(name)
        if (
            value is not None
            and in_params is not None
            and to_unix_seconds(value, name) != to_unix_seconds(in_params, f"parameters[{name}]")
        ):
            raise ValueError(
                f"{name} is given twice with different values: {value!r} and parameters[{name}]={in_params!r}."
            )
        chosen = value if value is not None else in_params
        if chosen is not None:
            explicit[name] = to_unix_seconds(chosen, name)

    if not fields:
        unexpected = sorted(explicit)
        if unexpected:
            raise ValueError(
                f"Report type {report_type} reports on one payout and takes no interval; "
                f"remove {', '.join(unexpected)} and pass parameters={{'payout': 'po_…'}}."
            )
        if not parameters.get("payout"):
            raise ValueError(f"Report type {report_type} needs parameters={{'payout': 'po_…'}}.")
        return ReportInterval(None, None)

    if "interval_start" not in fields and "interval_start" in explicit:
        raise ValueError(f"Report type {report_type} takes only interval_end (the balance at that moment).")

    from_dag_run = [name for name in fields if name not in explicit]
    if from_dag_run:
        if data_interval_start is None or data_interval_end is None:
            raise ValueError(
                f"Report type {report_type} needs {' and '.join(fields)}: pass them, or run the task inside a "
                "DAG run with a data interval."
            )
        dag_start = to_unix_seconds(data_interval_start, "data_interval_start")
        dag_end = to_unix_seconds(data_interval_end, "data_interval_end")
        if "interval_start" in from_dag_run and dag_start == dag_end:
            raise ValueError(EMPTY_INTERVAL_HELP.format(start=iso_utc(dag_start)))
        values = {"interval_start": dag_start, "interval_end": dag_end}
        for name in from_dag_run:
            explicit[name] = values[name]

    start, end = explicit.get("interval_start"), explicit["interval_end"]
    if start is not None and end <= start:
        raise ValueError(
            f"interval_end ({iso_utc(end)}) must be after interval_start ({iso_utc(start)}): Stripe intervals are "
            "half-open, [interval_start, interval_end)."
        )
    return ReportInterval(start, end)


def iso_utc(seconds: Any) -> str:
    """``2024-03-01 00:00:00 UTC``: how messages and logs show Unix seconds (anything else, such
    as a ``None`` Stripe sent, is shown as it is)."""
    import datetime as dt

    if isinstance(seconds, bool) or not isinstance(seconds, int):
        return str(seconds)
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def utc_date(seconds: int) -> str:
    """``2024-03-01``: the UTC date of Unix seconds, as destination paths name an interval."""
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).strftime("%Y-%m-%d")


_iso = iso_utc  # the name this module's callers used before it was public
