"""The whole chain in one task: create (or reuse) the interval's report run, wait, store the file."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_reportruns._compat import AirflowException, report_asset
from airflow_provider_reportruns.operators.report_run import (
    StripeCreateReportRunOperator,
    _asset_uri,
    data_comes_later,
    download_result,
    with_data_hint,
)

if TYPE_CHECKING:
    from airflow_provider_reportruns._compat import Context

__all__ = ["StripeReportToStorageOperator"]


class StripeReportToStorageOperator(StripeCreateReportRunOperator):
    """Create the DAG run's report run (or reuse one), wait for it, and stream its result file to
    a local path or any object storage URI, in one task.

    The same steps as :class:`StripeCreateReportRunOperator` → ``StripeReportRunSensor`` →
    :class:`StripeDownloadReportRunOperator`, with the same guarantees (no duplicate runs on retry,
    clear or backfill; atomic, size-checked downloads; expired file URLs refreshed) at one task per
    interval: a backfill schedules a third of the task tries, and no request is made twice.

    **Waiting for Stripe's data.** The create is tried first. When Stripe answers that the
    interval's data is not prepared yet ("…is only available through …"), the task waits for the
    report type's ``data_available_end`` to reach the interval end, every ``data_poll_interval``
    seconds, and then creates the run, so a backfill of old intervals asks for no report type at
    all. An interval before ``data_available_start`` fails at once. With ``wait_for_data=False``
    the task fails with the same message as the create operator.

    **Deferrable.** With ``deferrable=True`` both waits run in the triggerer and the worker slot is
    free; the download runs when the task resumes. Without it, the task sleeps in its worker slot.

    The return value is the destination (a ``file://`` URI stays a URI, a path becomes absolute).
    Unless ``outlets`` is given, the destination's fixed part is declared as an outlet asset, as the
    download operator does, and each event's extra carries ``uri``, ``report_run_id`` and ``size``.
    No separate ``report_run_id`` XCom is pushed: a retry finds the run by the duplicate lookup, not
    through XCom, and each push is a round trip to Airflow (a backfill paid it on every interval);
    the run id is in the log, the deferred trigger's kwargs, the outlet event and any error.

    :param report_type: e.g. ``balance.summary.1`` (templated).
    :param destination: local path or URI (templated); ``{report_type}`` and ``{report_run_id}``
        are replaced by the run's values.
    :param parameters: other Stripe parameters: ``columns``, ``currency``, ``timezone``, … (templated).
    :param interval_start: defaults to the DAG run's data interval start (templated).
    :param interval_end: defaults to the DAG run's data interval end (templated).
    :param stripe_conn_id: the Airflow connection of the key.
    :param reuse_existing: reuse a pending or succeeded run with identical parameters.
    :param wait_for_data: wait for Stripe to prepare the interval's data instead of failing.
    :param deferrable: wait in the triggerer; defaults to ``[operators] default_deferrable``.
    :param poll_interval: seconds between status checks of the run.
    :param timeout: give up waiting for the run after this many seconds (default 24 hours).
    :param data_poll_interval: seconds between report type checks while waiting for data.
    :param data_timeout: give up waiting for the data after this many seconds (default 36 hours).
    """

    template_fields: Sequence[str] = (*StripeCreateReportRunOperator.template_fields, "destination")

    def __init__(
        self,
        *,
        report_type: str,
        destination: str,
        parameters: Mapping[str, Any] | None = None,
        interval_start: Any = None,
        interval_end: Any = None,
        stripe_conn_id: str = "stripe_default",
        reuse_existing: bool = True,
        wait_for_data: bool = True,
        deferrable: bool | None = None,
        poll_interval: float = 30.0,
        timeout: float = 24 * 3600.0,
        data_poll_interval: float = 600.0,
        data_timeout: float = 36 * 3600.0,
        **kwargs: Any,
    ) -> None:
        if "outlets" not in kwargs and isinstance(destination, str):
            kwargs["outlets"] = [report_asset(_asset_uri(destination))]
        super().__init__(
            report_type=report_type,
            parameters=parameters,
            interval_start=interval_start,
            interval_end=interval_end,
            stripe_conn_id=stripe_conn_id,
            reuse_existing=reuse_existing,
            wait_for_completion=True,
            deferrable=deferrable,
            poll_interval=poll_interval,
            timeout=timeout,
            **kwargs,
        )
        self.destination = destination
        self.wait_for_data = wait_for_data
        self.data_poll_interval = float(data_poll_interval)
        self.data_timeout = float(data_timeout)

    # -- execute ---------------------------------------------------------------------------------

    def execute(self, context: Context) -> str:
        params = self.build_parameters(context)
        return self._store(self._create_or_reuse(params, context), context)

    def _create(self, params: Mapping[str, Any], context: Context) -> dict[str, Any]:
        from airflow_provider_reportruns.hooks.stripe import StripeReportingError

        if getattr(self, "_data_waited", False):
            return super()._create(params, context)
        try:
            # Asking for the report type first would cost a request on every interval whose data
            # is there, which is every interval of a backfill; Stripe's refusal costs one only
            # when the data is not.
            return self.hook.create_report_run(
                self.report_type, params, idempotency_key=self.idempotency_key(params, context)
            )
        except StripeReportingError as exc:
            if not exc.is_data_unavailable:
                raise
            if not (self.wait_for_data and data_comes_later(exc) and "interval_end" in params):
                raise with_data_hint(exc, later="Set wait_for_data=True to wait for it in this task.") from None
            self.log.info("%s", exc.stripe_message)
        self._wait_for_data(params, context)
        return self._create_after_data_wait(params, context)

    def _create_after_data_wait(self, params: Mapping[str, Any], context: Context) -> dict[str, Any]:
        # Another DAG run may have made the run while this one waited: look again.
        self._data_waited = True
        return self._create_or_reuse(params, context)

    def _wait_for_data(self, params: Mapping[str, Any], context: Context) -> None:
        """Return once ``data_available_end`` reaches the interval end, or defer until it does."""
        from airflow_provider_reportruns.client import StripeError
        from airflow_provider_reportruns.intervals import _iso

        interval_end = int(params["interval_end"])
        now = time.time()
        deadline = now + self.data_timeout
        if self.deferrable:
            from airflow_provider_reportruns.triggers.report_type import StripeReportDataAvailableTrigger

            self.defer(
                trigger=StripeReportDataAvailableTrigger(
                    report_type=self.report_type,
                    interval_end=interval_end,
                    stripe_conn_id=self.stripe_conn_id,
                    poll_interval=self.data_poll_interval,
                    end_time=deadline,
                    first_poll_at=min(now + self.data_poll_interval, deadline),  # Stripe has just said no
                ),
                method_name="execute_after_data",
            )
        last_seen: Any = None
        while True:
            self.log.info(
                "Waiting for Stripe's %s data to reach %s; checking again in %.0f s.",
                self.report_type,
                _iso(interval_end),
                self.data_poll_interval,
            )
            time.sleep(min(self.data_poll_interval, max(deadline - time.time(), 0.0)))
            try:
                last_seen = self.hook.get_report_type(self.report_type).get("data_available_end")
            except StripeError as exc:
                if not exc.transient:
                    raise
                self.log.warning("Stripe did not answer; still waiting for the data: %s", exc)
            if isinstance(last_seen, int) and last_seen >= interval_end:
                self.log.info("Stripe's %s data is available through %s.", self.report_type, _iso(last_seen))
                return
            if time.time() >= deadline:
                raise AirflowException(self._data_timeout_message(interval_end, last_seen))

    def _data_timeout_message(self, interval_end: int, last_seen: Any) -> str:
        """The same words for the polling and the deferred wait (``last_seen``: Stripe's last
        ``data_available_end``, if any answer came)."""
        from airflow_provider_reportruns.intervals import _iso

        seen = _iso(last_seen) if isinstance(last_seen, int) else "no answer"
        return (
            f"Stripe's data for {self.report_type} did not reach interval_end {_iso(interval_end)} within "
            f"data_timeout ({self.data_timeout:.0f} s); last data_available_end: {seen}."
        )

    def _store(self, run: dict[str, Any], context: Context) -> str:
        return download_result(self, self.hook, self._wait(run, context), str(self.destination), context)

    # -- resuming after a deferral ---------------------------------------------------------------

    def execute_after_data(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume once the data is there: look for a run again, create one, then wait and store."""
        from airflow_provider_reportruns.hooks.stripe import StripeReportingError

        status = (event or {}).get("status")
        params = self.build_parameters(context)
        if status == "timeout":
            last_seen = (event or {}).get("data_available_end")
            raise AirflowException(self._data_timeout_message(int(params["interval_end"]), last_seen))
        if status != "available":
            raise StripeReportingError(str((event or {}).get("message") or f"Unexpected trigger event {event!r}"))
        return self._store(self._create_after_data_wait(params, context), context)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume once the run finished: the same status model as the polling path, then store."""
        from airflow_provider_reportruns.triggers.events import report_run_from_event

        run = report_run_from_event(event, timeout_error=AirflowException)
        self.log.info("Stripe report run %s succeeded.", run["id"])
        return download_result(self, self.hook, run, str(self.destination), context)
