"""Deferrable waiting for Stripe to prepare a report type's data up to an interval end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    """

    def __init__(
        self,
        report_type: str,
        interval_end: int,
        stripe_conn_id: str = "stripe_default",
        poll_interval: float = 600.0,
        end_time: float | None = None,
        first_poll_at: float | None = None,
    ) -> None:
        super().__init__(
            stripe_conn_id=stripe_conn_id, poll_interval=poll_interval, end_time=end_time, first_poll_at=first_poll_at
        )
        self.report_type = report_type
        self.interval_end = int(interval_end)
        self._last_available_end: int | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"report_type": self.report_type, "interval_end": self.interval_end, **self._common_kwargs()},
        )

    async def check(self, client: StripeReportingClient) -> tuple[dict[str, Any] | None, str]:
        report_type = await client.arequest("get_report_type", self.report_type)
        available_end = report_type.get("data_available_end")
        if isinstance(available_end, int):
            self._last_available_end = available_end
        if data_covers(report_type, self.interval_end):
            return {"status": "available", "report_type": report_type}, f"available through {available_end}"
        return None, f"available through {available_end}"

    def timeout_event(self, last_status: str | None, waited: float) -> dict[str, Any]:
        return {
            "status": "timeout",
            "last_status": last_status,
            "data_available_end": self._last_available_end,
            "message": (
                f"Stripe's data for {self.report_type} did not reach interval_end {self.interval_end} in time "
                f"({last_status or 'no answer'}) after waiting {waited:.0f} s."
            ),
        }
