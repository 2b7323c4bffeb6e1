"""Airflow connection → Stripe Reporting client.

The hook reads one Airflow connection (conn type ``stripe``): the secret key in the password,
an optional API base URL in the host, and ``stripe_account`` / ``api_version`` /
``max_requests_per_second`` / ``max_retries`` / ``timeout`` / ``coalesce_waits`` in the extras. Everything it does
goes through :class:`~airflow_provider_reportruns.client.StripeReportingClient`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from airflow_provider_reportruns._compat import AirflowException, AirflowFailException, BaseHook
from airflow_provider_reportruns.client import (
    DEFAULT_API_BASE,
    DEFAULT_MAX_REQUESTS_PER_SECOND,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    ReportRunStatus,
    StripeDataNotReadyError,
    StripeError,
    StripePermanentError,
    StripeReportingClient,
    StripeTransientError,
    result_file,
    validate_api_base,
)

if TYPE_CHECKING:
    import os

__all__ = [
    "CONNECTION_EXTRAS",
    "StripeReportRunFailed",
    "StripeReportingDataNotReadyError",
    "StripeReportingError",
    "StripeReportingHook",
    "StripeReportingPermanentError",
    "StripeReportingTransientError",
    "check_report_run",
    "coalesce_waits",
    "result_file_metadata",
]

T = TypeVar("T")

# The extras a stripe connection may carry. Anything else is a typo that would otherwise be
# silently ignored (for example "stripe_acount" acting on the platform account instead).
CONNECTION_EXTRAS = (
    "stripe_account",
    "api_version",
    "max_requests_per_second",
    "max_retries",
    "timeout",
    "coalesce_waits",
)
# Deferred waits share one poller per account in the triggerer unless the connection says otherwise.
DEFAULT_COALESCE_WAITS = True
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")
# Refresh a run before downloading when its file expires within this many seconds.
FILE_EXPIRY_MARGIN = 60


class StripeReportingError(StripeError, AirflowException):
    """The exception users catch: every Stripe error the provider raises in a task is one.

    Its subclasses say what kind of failure it was, decided once by the client: transient ones
    and data that is not ready yet keep Airflow's normal retries; permanent ones fail the task at
    once (:class:`StripeReportingPermanentError` is an ``AirflowFailException``).
    """


class StripeReportingTransientError(StripeReportingError, StripeTransientError):
    """No answer, or one that may pass (connection, timeout, 409, 429, 5xx); retried as usual."""


class StripeReportingDataNotReadyError(StripeReportingError, StripeDataNotReadyError):
    """Stripe has not prepared the interval's data yet; a later try (or a data wait) succeeds."""


class StripeReportingPermanentError(StripeReportingError, StripePermanentError, AirflowFailException):
    """Stripe refused the request and would refuse every retry (unknown report type, a parameter
    the type refuses, a rejected key, …), or the task's arguments are wrong: fails without retries."""


# What the hook's client raises for each kind of failure.
AIRFLOW_ERROR_CLASSES: dict[type[StripeError], type[StripeError]] = {
    StripeTransientError: StripeReportingTransientError,
    StripeDataNotReadyError: StripeReportingDataNotReadyError,
    StripePermanentError: StripeReportingPermanentError,
}


class StripeReportRunFailed(StripeReportingError):
    """Stripe finished the report run with ``status == "failed"``."""


def check_report_run(report_run: Mapping[str, Any]) -> bool:
    """The shared status model: ``True`` when succeeded, ``False`` while not finished.

    Raises :class:`StripeReportRunFailed` with Stripe's own error text for a failed run. Any
    status Stripe may add later counts as not finished, never as success.
    """
    from airflow_provider_reportruns.waiting import run_outcome

    outcome = run_outcome(report_run)
    if outcome == ReportRunStatus.SUCCEEDED:
        return True
    if outcome == ReportRunStatus.FAILED:
        raise StripeReportRunFailed(
            f"Stripe report run {report_run.get('id')} ({report_run.get('report_type')}) failed: "
            f"{report_run.get('error') or 'Stripe gave no error message'}",
            stripe_message=report_run.get("error"),
        )
    return False


def report_run_from_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The succeeded run a :func:`result_file_metadata` dict describes (inverse of that function)."""
    file = {key: metadata.get(key) for key in ("id", "url", "size", "type", "filename", "expires_at")}
    return {
        "id": metadata.get("report_run_id"),
        "object": "reporting.report_run",
        "report_type": metadata.get("report_type"),
        "status": ReportRunStatus.SUCCEEDED.value,
        "result": {"object": "file", **file},
    }


def result_file_metadata(report_run: Mapping[str, Any]) -> dict[str, Any]:
    """What the sensor hands on through XCom: the result file's id, url, size, type, filename and
    expiry, plus the report run id and type, so a download task needs no second GET of the run
    (and can still refresh an expired URL)."""
    file = result_file(report_run) or {}
    return {
        "report_run_id": report_run.get("id"),
        "report_type": report_run.get("report_type"),
        "id": file.get("id"),
        "url": file.get("url"),
        "size": file.get("size"),
        "type": file.get("type"),
        "filename": file.get("filename"),
        "expires_at": file.get("expires_at"),
    }


class StripeReportingHook(BaseHook):
    """Stripe Reporting API calls with the credentials of one Airflow connection.

    :param stripe_conn_id: the Airflow connection (conn type ``stripe``).
    :param timeout: seconds per HTTP request (overrides the connection's ``timeout`` extra).
    :param max_retries: retries for retryable failures (overrides the ``max_retries`` extra).
    :param initial_backoff: first retry delay in seconds; tests shorten it.
    """

    conn_name_attr = "stripe_conn_id"
    default_conn_name = "stripe_default"
    conn_type = "stripe"
    hook_name = "Stripe"

    def __init__(
        self,
        stripe_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        initial_backoff: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.stripe_conn_id = stripe_conn_id
        self._timeout = timeout
        self._max_retries = max_retries
        self._initial_backoff = initial_backoff
        # "test" or "live", from the key's prefix once the client is built: advice about keys
        # names a key of the mode the person chose.
        self.key_mode: str | None = None

    # -- connection → client ---------------------------------------------------------------------

    @cached_property
    def client(self) -> StripeReportingClient:
        """The client for this connection, built on first use (never at DAG parse time)."""
        return self._client_from_connection()

    def get_conn(self) -> StripeReportingClient:
        return self.client

    def _client_from_connection(self) -> StripeReportingClient:
        source = f"connection '{self.stripe_conn_id}'"
        try:
            conn = self.get_connection(self.stripe_conn_id)
        except Exception as exc:
            if type(exc).__name__ != "AirflowNotFoundException":
                raise
            raise StripeReportingError(
                f"The Airflow connection '{self.stripe_conn_id}' is not defined: create it with conn type "
                f"'stripe' and the secret key as password, or set AIRFLOW_CONN_{self.stripe_conn_id.upper()}."
            ) from None
        extras = _connection_extras(conn.extra_dejson, source)
        kwargs: dict[str, Any] = {
            "api_base": _api_base(conn.host, conn.port, source),
            "stripe_account": extras.get("stripe_account"),
            "api_version": extras.get("api_version"),
            "timeout": self._timeout if self._timeout is not None else extras.get("timeout", DEFAULT_TIMEOUT),
            "max_retries": self._max_retries
            if self._max_retries is not None
            else extras.get("max_retries", DEFAULT_MAX_RETRIES),
            "max_requests_per_second": extras.get("max_requests_per_second", DEFAULT_MAX_REQUESTS_PER_SECOND),
            "source": source,
            "error_class": StripeReportingError,
            "error_classes": AIRFLOW_ERROR_CLASSES,
        }
        if self._initial_backoff is not None:
            kwargs["initial_backoff"] = self._initial_backoff
        key = conn.password or ""
        self.key_mode = "test" if key.startswith(("sk_test_", "rk_test_")) else "live"
        try:
            return StripeReportingClient(key, **kwargs)
        except ValueError as exc:
            message = str(exc)
            if source not in message:  # the key checks already name the connection
                message = f"{message} ({source})"
            raise StripeReportingError(message) from None

    # -- report runs -----------------------------------------------------------------------------

    def create_report_run(
        self, report_type: str, parameters: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Start a report run (``POST /v1/reporting/report_runs``); returns the ReportRun.

        :param report_type: e.g. ``balance.summary.1``.
        :param parameters: Stripe's ``parameters``: ``interval_start``/``interval_end`` (Unix seconds),
            ``columns``, ``currency``, ``payout``, ``reporting_category``, ``timezone``, ``connected_account``.
        :param idempotency_key: reused on every retry; generated when omitted.
        """
        with _arguments_checked():
            return self.client.create_report_run(report_type, parameters, idempotency_key=idempotency_key)

    def get_report_run(self, report_run_id: str) -> dict[str, Any]:
        """Fetch a report run (``GET /v1/reporting/report_runs/{id}``)."""
        with _arguments_checked():
            return self.client.get_report_run(report_run_id)

    def list_report_runs(
        self,
        *,
        created: int | Mapping[str, int] | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
    ) -> dict[str, Any]:
        """One page of report runs, newest first (``GET /v1/reporting/report_runs``).

        :param created: Unix seconds or a mapping of ``gt``/``gte``/``lt``/``lte`` to Unix seconds.
        :param limit: 1 to 100.
        :param starting_after: cursor for the next (older) page.
        :param ending_before: cursor for the previous (newer) page.
        """
        return self.client.list_report_runs(
            created=created, limit=limit, starting_after=starting_after, ending_before=ending_before
        )

    def iter_report_runs(
        self, *, created: int | Mapping[str, int] | None = None, page_size: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Every matching report run, newest first, following ``has_more``."""
        return self.client.iter_report_runs(created=created, page_size=page_size)

    # -- report types ----------------------------------------------------------------------------

    def list_report_types(self) -> list[dict[str, Any]]:
        """All report types visible to the key (``GET /v1/reporting/report_types``)."""
        return self.client.list_report_types()

    def get_report_type(self, report_type: str) -> dict[str, Any]:
        """One report type with its data availability (``GET /v1/reporting/report_types/{id}``)."""
        with _arguments_checked():
            return self.client.get_report_type(report_type)

    # -- result files ----------------------------------------------------------------------------

    def succeeded_report_run(self, report_run: Mapping[str, Any] | str) -> dict[str, Any]:
        """A run with a usable result file: fetched when given an id, refreshed when its file is
        about to expire, and refused (with Stripe's status) when it has not succeeded."""
        run = self.get_report_run(report_run) if isinstance(report_run, str) else dict(report_run)
        file = result_file(run)
        expires_at = (file or {}).get("expires_at")
        if (
            isinstance(report_run, Mapping)
            and file is not None
            and expires_at is not None
            and expires_at < time.time() + FILE_EXPIRY_MARGIN
        ):
            run = self.get_report_run(run["id"])
            file = result_file(run)
        if not check_report_run(run) or file is None or not file.get("url"):
            raise StripeReportingError(
                f"Report run {run.get('id')} has no result file to download yet (status {run.get('status')!r})."
            )
        return run

    def download_report_run(self, report_run: Mapping[str, Any] | str, destination: str | os.PathLike[str]) -> str:
        """Stream the result file of a succeeded run to a local path; return the path.

        The file is written to a temporary name beside ``destination`` and renamed into place
        once its size matches ``result.size``.

        :param report_run: the ReportRun dict or its id.
        :param destination: local file path; missing directories are created.
        """

        def to_path(run: Mapping[str, Any]) -> str:
            file = result_file(run) or {}
            return self.client.download_to_path(
                file["url"],
                destination,
                expected_size=file.get("size"),
                what=f"the result file of report run {run['id']}",
            )

        return self.with_fresh_result(self.succeeded_report_run(report_run), to_path)

    def with_fresh_result(self, run: Mapping[str, Any], download: Callable[[Mapping[str, Any]], T]) -> T:
        """Call ``download(run)``; when the file URL answers 404 or 410 (an expired link), fetch the
        run once more and call it again with the fresh result. Every download path goes through here.

        :param run: a succeeded run (see :meth:`succeeded_report_run`).
        :param download: streams ``run["result"]`` somewhere; its return value is passed on.
        """
        try:
            return download(run)
        except StripeReportingError as exc:
            if exc.http_status not in (404, 410):
                raise
            return download(self.succeeded_report_run(str(run["id"])))

    # -- Airflow UI ------------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated call (``GET /v1/reporting/report_types``) for Airflow's "Test" button.

        Not retried, so a person waits seconds, not minutes; the message says what to change.
        The UI tests an unsaved form under a random connection id, so messages never name it.
        """
        try:
            client = self.client
        except AirflowException as exc:  # a key, host or extra refused before any request
            named = f"connection '{self.stripe_conn_id}'"
            message = str(exc).replace(f" ({named})", "").replace(f"in {named}", "in this connection")
            return False, message.replace(f"of {named}", "of this connection")
        retries, client.max_retries = client.max_retries, 0
        try:
            types = client.list_report_types()
        except StripeError as exc:
            return False, _test_failure_message(exc, client.api_base, self.key_mode or "live")
        finally:
            client.max_retries = retries
        mode = ("a live-mode key" if types[0].get("livemode") else "a test-mode key") if types else "the key"
        account = f" for connected account {client.stripe_account}" if client.stripe_account else ""
        return True, (
            f"Connected to Stripe at {client.api_base} with {mode}{account}: "
            f"it may read report runs and report types ({len(types)} report types visible)."
        )

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Airflow 2 connection form: hide what a Stripe key does not use, say what the rest means.

        Airflow 3 reads the same declarations from the provider info instead (see ``connection_form``).
        """
        from airflow_provider_reportruns.hooks.connection_form import ui_field_behaviour

        return ui_field_behaviour()

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Airflow 2 connection form extras; the UI libraries are imported here only."""
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import StringField
        from wtforms.validators import Optional

        from airflow_provider_reportruns.hooks.connection_form import EXTRA_FIELDS

        return {
            name: StringField(
                lazy_gettext(field.label),
                widget=BS3TextFieldWidget(),
                validators=[Optional()],
                description=field.description,
            )
            for name, field in EXTRA_FIELDS.items()
        }


@contextlib.contextmanager
def _arguments_checked() -> Iterator[None]:
    """The client refuses a malformed argument (an id that is not one, …) with ``ValueError``
    before any request; in a task that is a permanent error: no retry can fix the argument."""
    try:
        yield
    except ValueError as exc:
        raise StripeReportingPermanentError(str(exc)) from None


def _test_failure_message(exc: StripeError, api_base: str, key_mode: str = "live") -> str:
    """What the connection test tells a person: what happened, then what to change (``key_mode``:
    ``test`` or ``live``, the mode of the key given, which the advice keeps)."""
    said = (exc.stripe_message or "").strip()
    if said and not said.endswith((".", "!", "?")):
        said += "."
    if exc.http_status == 401:
        return (
            f"Stripe rejected the secret key (401): {said} Put a secret key (sk_{key_mode}_…) or a restricted key "
            f"(rk_{key_mode}_…) from the Stripe Dashboard (Developers → API keys) in the Secret key field."
        )
    if exc.http_status == 403:
        return (
            f"The key is valid but lacks a permission (403): {said} Give the restricted key Read access to "
            "report runs and report types (report_runs_and_report_types_read), or use a secret key."
        )
    if exc.http_status is None and exc.transient:  # no HTTP answer at all: refused, reset or timed out
        what = "did not answer in time" if "timed out" in str(exc) else "could not be reached"
        return (
            f"Stripe at {api_base} {what}. Check the API base URL (leave it empty for {DEFAULT_API_BASE}) "
            "and that this Airflow component may open HTTPS connections to it."
        )
    return f"The connection test failed: {exc}"


def _api_base(host: str | None, port: int | None, source: str) -> str:
    """The connection's host as an API base URL.

    Empty means Stripe. A host without a scheme (as the URI form of a connection gives it) means
    https, except a loopback host, which means the local simulator over http.
    """
    host = (host or "").strip()
    if not host:
        return DEFAULT_API_BASE
    if "://" not in host:
        # The client alone decides where plain http may go (loopback only): ask it, not a copy.
        try:
            validate_api_base(f"http://{host}")
            host = f"http://{host}"
        except ValueError:
            host = f"https://{host}"
    if port and urlsplit(host).port is None:
        host = f"{host.rstrip('/')}:{port}"
    try:
        return validate_api_base(host)
    except ValueError as exc:
        raise StripeReportingError(f"{exc} (host of {source})") from None


def _connection_extras(extra: Mapping[str, Any] | None, source: str) -> dict[str, Any]:
    """Validated extras. Empty strings (what a blank form field saves) count as unset; the
    Airflow 2 UI's ``extra__stripe__`` prefix is accepted."""
    extras: dict[str, Any] = {}
    unknown: list[str] = []
    for raw_key, value in (extra or {}).items():
        key = raw_key.removeprefix("extra__stripe__")
        if key not in CONNECTION_EXTRAS:
            unknown.append(raw_key)
            continue
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        extras[key] = value.strip() if isinstance(value, str) else value
    if unknown:
        hint = ""
        if any(key in ("verify", "verify_ssl", "insecure") for key in unknown):
            hint = " TLS verification cannot be switched off for Stripe connections."
        raise StripeReportingError(
            f"Unknown extra field(s) {', '.join(sorted(unknown))} in {source}; "
            f"allowed: {', '.join(CONNECTION_EXTRAS)}.{hint}"
        )
    for key, kind in (("max_requests_per_second", float), ("max_retries", int), ("timeout", float)):
        if key in extras:
            extras[key] = _number(extras[key], key, kind, source)
    if "coalesce_waits" in extras:
        extras["coalesce_waits"] = _flag(extras["coalesce_waits"], "coalesce_waits", source)
    for key in ("stripe_account", "api_version"):
        if key in extras and not isinstance(extras[key], str):
            raise StripeReportingError(f"The extra field {key} in {source} must be a string, got {extras[key]!r}.")
    account = extras.get("stripe_account")
    if account is not None and not account.startswith("acct_"):
        raise StripeReportingError(f"The extra field stripe_account in {source} must be an account id (acct_…).")
    return extras


def coalesce_waits(extra: Mapping[str, Any] | None, source: str) -> bool:
    """Whether the deferred waits of a connection share one poller per account in the triggerer:
    the ``coalesce_waits`` extra, on when unset.

    :param extra: the connection's extras (``conn.extra_dejson``).
    :param source: what holds them, for the message of a value that is not a yes or a no.
    """
    return bool(_connection_extras(extra, source).get("coalesce_waits", DEFAULT_COALESCE_WAITS))


def _flag(value: Any, key: str, source: str) -> bool:
    """A yes-or-no extra: JSON true/false, or the words a text field of the Airflow 2 form saves."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise StripeReportingError(f"The extra field {key} in {source} must be true or false, got {value!r}.")


def _number(value: Any, key: str, kind: type, source: str) -> Any:
    try:
        number = kind(value)
        if isinstance(value, bool) or number < 0 or (kind is int and float(value) != number):
            raise ValueError
        if key != "max_retries" and number == 0:
            raise ValueError
    except (TypeError, ValueError):
        rule = "a whole number >= 0" if kind is int else "a number > 0"
        raise StripeReportingError(f"The extra field {key} in {source} must be {rule}, got {value!r}.") from None
    return number
