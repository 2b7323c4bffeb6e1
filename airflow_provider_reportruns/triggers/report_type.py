"""Deferrable waiting for Stripe to prepare a report type's data up to an interval end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_reportruns.triggers.poller import DataWait, ReportDataPoller
from airflow_provider_reportruns.triggers.report_run import StripePollingTrigger
from airflow_provider_reportruns.waiting import data_covers

if TYPE_CHECKING:
    from airflow_provider_reportruns.client import StripeReportingClient

__all__ = ["StripeReportDataAvailableTrigger"]


class StripeReportDataAvailableTrigger(StripePollingTrigger):
    """Wait until ``data_available_end`` of a report type reaches ``interval_end``.

    Emits ``{"status": "available", "report_type": …}``, ``{"status": "timeout", …}`` or
    ``{"status": "error", "message": …, "error_kind": …}`` (see the run trigger).

    :param report_type: e.g. ``balance.summary.1``.
    :param interval_end: Unix seconds the data must reach.
    :param stripe_conn_id: the Airflow connection; the key itself is never serialized.
    :param poll_interval: seconds between polls (Stripe refreshes data about twice a day).
    :param end_time: give up at this Unix time (seconds), or never when ``None``.
    :param first_poll_at: Unix time of the first poll (``None``: at once).
    :param coalesce: share the account's poller, which reads every type's availability with one
        request per cycle (``True``), poll this type on its own (``False``), or do as the
        connection's ``coalesce_waits`` extra says (``None``, on by default).
    """

    poller_class = ReportDataPoller

    def __init__(
        self,
        report_type: str,
        interval_end: int,
        stripe_conn_id: str = "stripe_default",
        poll_interval: float = 600.0,
        end_time: float | None = None,
        first_poll_at: float | None = None,
        coalesce: bool | None = None,
    ) -> None:
        super().__init__(
            stripe_conn_id=stripe_conn_id,
            poll_interval=poll_interval,
            end_time=end_time,
            first_poll_at=first_poll_at,
            coalesce=coalesce,
        )
        self.report_type = report_type
        self.interval_end = int(interval_end)
        self._last_available_end: int | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"report_type": self.report_type, "interval_end": self.interval_end, **self._common_kwargs()},
        )

    def new_wait(self) -> DataWait:
        return DataWait(
            self.report_type,
            interval_end=self.interval_end,
            poll_interval=self.poll_interval,
            first_poll_at=self.first_poll_at,
            end_time=self.end_time,
        )

    def finished_event(self, seen: dict[str, Any]) -> dict[str, Any]:
        return {"status": "available", "report_type": seen}

    async def check(self, client: StripeReportingClient) -> tuple[dict[str, Any] | None, str]:
        report_type = await client.arequest("get_report_type", self.report_type)
        available_end = report_type.get("data_available_end")
        if isinstance(available_end, int):
            self._last_available_end = available_end
        if data_covers(report_type, self.interval_end):
            return self.finished_event(report_type), f"available through {available_end}"
        return None, f"available through {available_end}"

    def timeout_event(
        self, last_status: str | None, waited: float, last_seen: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        available_end = self._last_available_end
        if last_seen is not None and isinstance(last_seen.get("data_available_end"), int):
            available_end = last_seen["data_available_end"]
        return {
            "status": "timeout",
            "last_status": last_status,
            "data_available_end": available_end,
            "message": (
                f"Stripe's data for {self.report_type} did not reach interval_end {self.interval_end} in time "
                f"({last_status or 'no answer'}) after waiting {waited:.0f} s."
            ),
        }
