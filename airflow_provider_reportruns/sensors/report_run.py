"""Wait for a Stripe report run to finish: poke, reschedule or deferrable."""

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
    from airflow_provider_reportruns.waiting import describe_run as describe_wait

__all__ = ["StripeReportRunSensor", "describe_wait"]


def __getattr__(name: str) -> Any:
    # ``describe_wait``: the name this module exported before the wait model had its own module;
    # loaded on first use, so a DAG parse does not import the wait model and the client behind it.
    if name == "describe_wait":
        from airflow_provider_reportruns.waiting import describe_run

        return describe_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _finished(run: dict[str, Any]) -> bool:
    """The shared status model, with a failed run failing the task without retries: retrying this
    sensor cannot change Stripe's verdict (clear the create task to make a new run)."""
    from airflow_provider_reportruns.hooks.stripe import StripeReportRunFailed, check_report_run

    try:
        return check_report_run(run)
    except StripeReportRunFailed as exc:
        raise AirflowFailException(str(exc)) from None


class StripeReportRunSensor(BaseSensorOperator):
    """Wait until a report run is ``succeeded`` (pass) or ``failed`` (fail with Stripe's message).

    On success the result file's metadata goes to XCom (``return_value``): ``report_run_id``,
    ``id``, ``url``, ``size``, ``type``, ``filename``, ``expires_at``. A failed run fails the task
    at once, without retries (they could not change Stripe's answer). Any status other than
    pending, succeeded and failed is logged and waited on, never taken for success. Connection
    errors, 429s and 5xx that outlast the client's retries are logged and waited through.

    :param report_run_id: the ``frr_…`` id (templated), e.g. ``create.output``.
    :param stripe_conn_id: the Airflow connection of the key.
    :param deferrable: wait in the triggerer; defaults to ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("report_run_id",)
    ui_color = "#f3e8ff"

    def __init__(
        self,
        *,
        report_run_id: str,
        stripe_conn_id: str = "stripe_default",
        deferrable: bool | None = None,
        poke_interval: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.report_run_id = report_run_id
        self.stripe_conn_id = stripe_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self._last_status: str | None = None
        # The run's creation time as last fetched: a deferred wait carries it to the triggerer's poller.
        self._last_created: int | None = None

    @cached_property
    def hook(self) -> StripeReportingHook:
        from airflow_provider_reportruns.hooks.stripe import StripeReportingHook

        return StripeReportingHook(self.stripe_conn_id)

    def _fetch(self) -> dict[str, Any] | None:
        """The run, or ``None`` when Stripe could not be reached this time (the wait goes on)."""
        from airflow_provider_reportruns.waiting import fetch_while_waiting

        run = fetch_while_waiting(lambda: self.hook.get_report_run(str(self.report_run_id)), self.log)
        if run is not None:
            self._last_status = run.get("status")
            created = run.get("created")
            self._last_created = created if isinstance(created, int) else None
        return run

    def poke(self, context: Context) -> PokeReturnValue | bool:
        from airflow_provider_reportruns.client import ReportRunStatus
        from airflow_provider_reportruns.hooks.stripe import result_file_metadata
        from airflow_provider_reportruns.waiting import describe_run

        run = self._fetch()
        if run is None:
            return False
        if _finished(run):
            self.log.info("%s; result file %s.", describe_run(run), (run.get("result") or {}).get("id"))
            return PokeReturnValue(is_done=True, xcom_value=result_file_metadata(run))
        if ReportRunStatus.is_known(run.get("status")):
            self.log.info("%s.", describe_run(run))
        else:
            self.log.warning("%s: a status this provider does not know; waiting on.", describe_run(run))
        return False

    def execute(self, context: Context) -> Any:
        if self.deferrable:
            return self._execute_deferrable(context)
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            raise AirflowSensorTimeout(
                f"Stripe report run {self.report_run_id} did not finish within the sensor timeout of "
                f"{self.timeout:.0f} s: last status {self._last_status!r}."
            ) from exc

    def _execute_deferrable(self, context: Context) -> Any:
        from airflow_provider_reportruns.triggers.report_run import StripeReportRunTrigger

        # A run that is already finished never defers.
        done = self.poke(context)
        if isinstance(done, PokeReturnValue) and done.is_done:
            return done.xcom_value
        now = time.time()
        self.defer(
            trigger=StripeReportRunTrigger(
                report_run_id=str(self.report_run_id),
                stripe_conn_id=self.stripe_conn_id,
                poll_interval=float(self.poke_interval),
                end_time=now + float(self.timeout),
                first_poll_at=now + float(self.poke_interval),  # this poke has just asked
                created=self._last_created,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: the same status model as :meth:`poke`."""
        from airflow_provider_reportruns.hooks.stripe import StripeReportRunFailed, result_file_metadata
        from airflow_provider_reportruns.triggers.events import report_run_from_event
        from airflow_provider_reportruns.waiting import describe_run

        try:
            run = report_run_from_event(event, timeout_error=AirflowSensorTimeout)
        except StripeReportRunFailed as exc:
            raise AirflowFailException(str(exc)) from None
        self.log.info("%s; result file %s.", describe_run(run), (run.get("result") or {}).get("id"))
        return result_file_metadata(run)
