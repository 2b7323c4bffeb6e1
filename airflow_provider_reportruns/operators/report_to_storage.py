"""The whole chain in one task: create (or reuse) the interval's report run, wait, store the file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_reportruns._compat import AirflowException, BaseOperator, default_deferrable, report_asset
from airflow_provider_reportruns.operators.steps.destination import asset_uri
from airflow_provider_reportruns.operators.steps.reuse import DEFAULT_REUSE_LOOKBACK

if TYPE_CHECKING:
    import datetime as dt

    from airflow_provider_reportruns._compat import Context
    from airflow_provider_reportruns.hooks.stripe import StripeReportingHook
    from airflow_provider_reportruns.operators.steps import RunRequest

__all__ = ["StripeReportToStorageOperator"]


class StripeReportToStorageOperator(BaseOperator):
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

    **Errors.** As for the create operator: a bad argument (naive datetime, empty interval, a
    destination token the run cannot fill) or a request Stripe refuses for good (unknown report
    type, with the closest names suggested; a parameter the type refuses; a rejected key) fails
    the task on its first try, without retries and before any further request. Errors that may
    pass are waited through in both waits until their timeout, in the worker and in the
    triggerer alike: a Stripe outage shorter than the timeout never fails the task.

    **Deferrable.** With ``deferrable=True`` both waits run in the triggerer and the worker slot is
    free; the download runs when the task resumes. Without it, the task sleeps in its worker slot.

    The return value is the destination (a ``file://`` URI stays a URI, a path becomes absolute).
    Unless ``outlets`` is given, the destination's fixed part is declared as an outlet asset, as the
    download operator does, and each event's extra carries ``uri``, ``report_run_id`` and ``size``.
    No separate ``report_run_id`` XCom is pushed: a retry finds the run by the duplicate lookup, not
    through XCom, and each push is a round trip to Airflow (a backfill paid it on every interval);
    the run id is in the log, the deferred trigger's kwargs, the outlet event and any error.

    :param report_type: e.g. ``balance.summary.1`` (templated).
    :param destination: local path or URI (templated); ``{report_type}``, ``{report_run_id}``, any
        parameter (``{payout}``, ``{currency}``, …) and ``{interval_start}`` / ``{interval_end}``
        (UTC dates, ``2024-03-01``) are replaced by the run's values. A token the run cannot fill
        fails the task before any request, naming the tokens available.
    :param parameters: other Stripe parameters: ``columns``, ``currency``, ``timezone``, … (templated).
    :param interval_start: defaults to the DAG run's data interval start (templated).
    :param interval_end: defaults to the DAG run's data interval end (templated).
    :param stripe_conn_id: the Airflow connection of the key.
    :param reuse_existing: reuse a pending or succeeded run with the same parameters (compared as
        the create operator does).
    :param reuse_lookback: how far back from now the reuse lookup lists runs, at most (a
        ``timedelta`` or seconds; default 7 days); a run created earlier is not reused.
    :param wait_for_data: wait for Stripe to prepare the interval's data instead of failing.
    :param deferrable: wait in the triggerer; defaults to ``[operators] default_deferrable``.
    :param poll_interval: seconds between status checks of the run.
    :param timeout: give up waiting for the run after this many seconds (default 24 hours).
    :param data_poll_interval: seconds between report type checks while waiting for data.
    :param data_timeout: give up waiting for the data after this many seconds (default 36 hours).
    """

    template_fields: Sequence[str] = ("report_type", "parameters", "interval_start", "interval_end", "destination")
    template_fields_renderers = {"parameters": "json"}
    ui_color = "#e9e3ff"

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
        reuse_lookback: dt.timedelta | float = DEFAULT_REUSE_LOOKBACK,
        wait_for_data: bool = True,
        deferrable: bool | None = None,
        poll_interval: float = 30.0,
        timeout: float = 24 * 3600.0,
        data_poll_interval: float = 600.0,
        data_timeout: float = 36 * 3600.0,
        **kwargs: Any,
    ) -> None:
        from airflow_provider_reportruns.operators.steps import reuse_lookback_seconds

        if "outlets" not in kwargs and isinstance(destination, str):
            kwargs["outlets"] = [report_asset(asset_uri(destination))]
        super().__init__(**kwargs)
        self.report_type = report_type
        self.destination = destination
        self.parameters = parameters
        self.interval_start = interval_start
        self.interval_end = interval_end
        self.stripe_conn_id = stripe_conn_id
        self.reuse_existing = reuse_existing
        self.reuse_lookback = reuse_lookback_seconds(reuse_lookback)
        self.wait_for_completion = True
        self.wait_for_data = wait_for_data
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self.data_poll_interval = float(data_poll_interval)
        self.data_timeout = float(data_timeout)
        # Where this try stored the file, for the lineage event after it (OpenLineage calls
        # back with the task instance only; the operator is the one that executed).
        self.stored_uri: str | None = None

    @cached_property
    def hook(self) -> StripeReportingHook:
        from airflow_provider_reportruns.hooks.stripe import StripeReportingHook

        return StripeReportingHook(self.stripe_conn_id)

    def build_parameters(self, context: Context) -> dict[str, Any]:
        """Stripe's ``parameters`` for this DAG run, after checking the destination's tokens."""
        from airflow_provider_reportruns.operators.steps import build_parameters, check_destination

        params = build_parameters(
            self.report_type,
            self.parameters,
            interval_start=self.interval_start,
            interval_end=self.interval_end,
            context=context,
        )
        check_destination(str(self.destination), params)
        return params

    def _request(self, context: Context) -> RunRequest:
        from airflow_provider_reportruns.operators.steps import RunRequest

        return RunRequest.for_task(self.stripe_conn_id, self.report_type, self.build_parameters(context), context)

    # -- execute ---------------------------------------------------------------------------------

    def execute(self, context: Context) -> str:
        from airflow_provider_reportruns.hooks.stripe import StripeReportingError
        from airflow_provider_reportruns.operators.steps import create_or_reuse, data_comes_later, with_data_hint

        request = self._request(context)
        try:
            # Asking for the report type first would cost a request on every interval whose data
            # is there, which is every interval of a backfill; Stripe's refusal costs one only
            # when the data is not.
            run, lookup = create_or_reuse(
                self.hook, request, reuse_existing=self.reuse_existing, lookback=self.reuse_lookback, log=self.log
            )
        except StripeReportingError as exc:
            if not exc.is_data_unavailable:
                raise
            if not (self.wait_for_data and data_comes_later(exc) and "interval_end" in request.parameters):
                raise with_data_hint(exc, later="Set wait_for_data=True to wait for it in this task.") from None
            self.log.info("%s", exc.stripe_message)
            self._wait_for_data(int(request.parameters["interval_end"]))
            return self._after_data(request, context)
        return self._wait_and_store(run, lookup.first_poll_delay(self.poll_interval), request, context)

    def _after_data(self, request: RunRequest, context: Context) -> str:
        from airflow_provider_reportruns.operators.steps import create_or_reuse

        # Another DAG run may have made the run while this one waited: look again.
        run, lookup = create_or_reuse(
            self.hook,
            request,
            reuse_existing=self.reuse_existing,
            lookback=self.reuse_lookback,
            log=self.log,
            after_data_wait=True,
        )
        return self._wait_and_store(run, lookup.first_poll_delay(self.poll_interval), request, context)

    def _wait_and_store(self, run: dict[str, Any], first_delay: float, request: RunRequest, context: Context) -> str:
        from airflow_provider_reportruns.operators.steps import defer_run_wait, download_result, wait_for_run

        done = wait_for_run(
            self.hook,
            run,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
            first_delay=first_delay,
            log=self.log,
            defer=defer_run_wait(self, run, stripe_conn_id=self.stripe_conn_id, poll_interval=self.poll_interval)
            if self.deferrable
            else None,
        )
        self.log.info("Stripe report run %s succeeded.", done["id"])
        self.stored_uri = download_result(self, self.hook, done, str(self.destination), context, request.parameters)
        return self.stored_uri

    def _wait_for_data(self, interval_end: int) -> None:
        """Return once ``data_available_end`` reaches the interval end, or defer until it does."""
        from airflow_provider_reportruns.operators.steps import wait_for_data

        wait_for_data(
            self,
            self.hook,
            self.report_type,
            interval_end,
            stripe_conn_id=self.stripe_conn_id,
            deferrable=self.deferrable,
            data_poll_interval=self.data_poll_interval,
            data_timeout=self.data_timeout,
            log=self.log,
        )

    def _data_timeout_message(self, interval_end: int, last_seen: Any) -> str:
        from airflow_provider_reportruns.operators.steps import data_timeout_message

        return data_timeout_message(self.report_type, interval_end, self.data_timeout, last_seen)

    # -- resuming after a deferral ---------------------------------------------------------------

    def execute_after_data(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume once the data is there: look for a run again, create one, then wait and store."""
        from airflow_provider_reportruns.triggers.events import raise_for_error_event

        request = self._request(context)
        status = (event or {}).get("status")
        if status == "timeout":
            last_seen = (event or {}).get("data_available_end")
            raise AirflowException(self._data_timeout_message(int(request.parameters["interval_end"]), last_seen))
        if status != "available":
            raise_for_error_event(event)
        return self._after_data(request, context)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume once the run finished: the same status model and errors as the polling path,
        then store."""
        from airflow_provider_reportruns.operators.steps import download_result
        from airflow_provider_reportruns.triggers.events import report_run_from_event

        run = report_run_from_event(event, timeout_error=AirflowException)
        self.log.info("Stripe report run %s succeeded.", run["id"])
        self.stored_uri = download_result(
            self, self.hook, run, str(self.destination), context, self.build_parameters(context)
        )
        return self.stored_uri

    # -- lineage ---------------------------------------------------------------------------------

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage's input and output of a finished try: the Stripe report type on the
        connection's account, and the stored file (see :mod:`airflow_provider_reportruns.lineage`).
        Called by the OpenLineage provider, when installed; ``None`` without it.

        :param task_instance: the finished task instance (unused: the operator kept what it stored).
        """
        from airflow_provider_reportruns.lineage import file_dataset, operator_lineage, stripe_report_dataset

        outputs = [file_dataset(self.stored_uri)] if self.stored_uri else []
        return operator_lineage([stripe_report_dataset(self.hook.client, str(self.report_type))], outputs)
