"""Wait until Stripe has prepared a report type's data up to the interval end."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_reportruns._compat import (
    AirflowFailException,
    AirflowSensorTimeout,
    BaseSensorOperator,
    PokeReturnValue,
    default_deferrable,
)

if TYPE_CHECKING:
    from airflow_provider_reportruns._compat import Context
    from airflow_provider_reportruns.hooks.stripe import StripeReportingHook
    from airflow_provider_reportruns.intervals import ReportInterval

__all__ = ["StripeReportDataAvailableSensor"]


class StripeReportDataAvailableSensor(BaseSensorOperator):
    """Wait until the report type's ``data_available_end`` reaches the interval end.

    Stripe refreshes reporting data about twice a day, so yesterday's interval is often not ready
    in the morning; put this sensor before :class:`StripeCreateReportRunOperator` instead of
    retrying the create for hours. An interval starting before ``data_available_start`` can never
    become available and fails at once. Pushes the report type object to XCom when available.

    :param report_type: e.g. ``balance.summary.1`` (templated).
    :param interval_start: defaults to the DAG run's data interval start (templated).
    :param interval_end: defaults to the DAG run's data interval end (templated).
    :param stripe_conn_id: the Airflow connection of the key.
    :param deferrable: wait in the triggerer; defaults to ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("report_type", "interval_start", "interval_end")
    ui_color = "#f3e8ff"

    def __init__(
        self,
        *,
        report_type: str,
        interval_start: Any = None,
        interval_end: Any = None,
        stripe_conn_id: str = "stripe_default",
        deferrable: bool | None = None,
        poke_interval: float = 600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.report_type = report_type
        self.interval_start = interval_start
        self.interval_end = interval_end
        self.stripe_conn_id = stripe_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self._last_seen: Any = None

    @cached_property
    def hook(self) -> StripeReportingHook:
        from airflow_provider_reportruns.hooks.stripe import StripeReportingHook

        return StripeReportingHook(self.stripe_conn_id)

    def _interval(self, context: Context) -> ReportInterval:
        from airflow_provider_reportruns.intervals import interval_fields, resolve_interval

        fields = interval_fields(self.report_type)
        try:
            return resolve_interval(
                self.report_type,
                parameters={"payout": "-"} if not fields else None,
                interval_start=self.interval_start if "interval_start" in fields else None,
                interval_end=self.interval_end,
                data_interval_start=context.get("data_interval_start"),
                data_interval_end=context.get("data_interval_end"),
            )
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from None

    def poke(self, context: Context) -> PokeReturnValue | bool:
        from airflow_provider_reportruns.intervals import iso_utc as _iso
        from airflow_provider_reportruns.waiting import data_covers, data_never_covers, fetch_while_waiting

        interval = self._interval(context)
        if interval.end is None:
            self.log.info("Report type %s reports on one payout; there is no interval to wait for.", self.report_type)
            return PokeReturnValue(is_done=True, xcom_value=None)
        report_type = fetch_while_waiting(lambda: self.hook.get_report_type(self.report_type), self.log)
        if report_type is None:
            return False
        available_start = report_type.get("data_available_start")
        available_end = report_type.get("data_available_end")
        self._last_seen = available_end
        if data_never_covers(report_type, interval.start):
            raise AirflowFailException(
                f"Stripe has no {self.report_type} data before {_iso(available_start)} (data_available_start); "
                f"the interval starts at {_iso(interval.start)} and will never become available. "
                "Start the DAG (or the backfill) at or after that date."
            )
        if data_covers(report_type, interval.end):
            self.log.info(
                "Stripe's %s data is available through %s, covering interval_end %s.",
                self.report_type,
                _iso(available_end),
                _iso(interval.end),
            )
            return PokeReturnValue(is_done=True, xcom_value=report_type)
        self.log.info(
            "Stripe's %s data is available through %s; waiting for it to reach %s.",
            self.report_type,
            _iso(available_end) if isinstance(available_end, int) else available_end,
            _iso(interval.end),
        )
        return False

    def execute(self, context: Context) -> Any:
        if self.deferrable:
            done = self.poke(context)
            if isinstance(done, PokeReturnValue) and done.is_done:
                return done.xcom_value
            from airflow_provider_reportruns.triggers.report_type import StripeReportDataAvailableTrigger

            interval_end = self._interval(context).end
            assert interval_end is not None  # poke returned done for interval-less types
            now = time.time()
            self.defer(
                trigger=StripeReportDataAvailableTrigger(
                    report_type=self.report_type,
                    interval_end=interval_end,
                    stripe_conn_id=self.stripe_conn_id,
                    poll_interval=float(self.poke_interval),
                    end_time=now + float(self.timeout),
                    first_poll_at=now + float(self.poke_interval),  # this poke has just asked
                ),
                method_name="execute_complete",
            )
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            raise AirflowSensorTimeout(
                f"Stripe's data for {self.report_type} did not become available within the sensor timeout of "
                f"{self.timeout:.0f} s (last data_available_end {self._last_seen!r})."
            ) from exc

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        from airflow_provider_reportruns.triggers.events import raise_for_error_event

        status = (event or {}).get("status")
        if status == "available":
            return (event or {}).get("report_type")
        if status == "timeout":
            raise AirflowSensorTimeout(str((event or {}).get("message")))
        raise_for_error_event(event)
