"""Stripe-shaped errors and the one decision on what kind of failure an answer is."""

from __future__ import annotations

from typing import Any

__all__ = [
    "DATA_COMES_LATER_TEXT",
    "DATA_UNAVAILABLE_TEXT",
    "ERROR_KINDS",
    "StripeDataNotReadyError",
    "StripeError",
    "StripePermanentError",
    "StripeTransientError",
    "classify_response",
    "describe_error_response",
    "note_attempts",
]

# Stripe's words for an interval outside the report type's data; "through" means it comes later.
DATA_UNAVAILABLE_TEXT = "is only available"
DATA_COMES_LATER_TEXT = "is only available through"


class StripeError(Exception):
    """A call to Stripe that did not succeed; the base of every error this client raises.

    Carries Stripe's own fields so callers can branch on them; ``str()`` reads well in a task log:
    ``Stripe rejected the report run for balance.summary.1 (400 invalid_request_error, param
    parameters[interval_end]): Data for the report type … (request req_…)``.

    The client decides once what kind of failure it is (:func:`classify_response`) and raises one
    of three subclasses: :class:`StripeTransientError` (may pass: wait or retry),
    :class:`StripeDataNotReadyError` (Stripe has not prepared the interval's data yet) and
    :class:`StripePermanentError` (the same request will get the same answer). A plain
    ``StripeError`` is a failure on this side (a local file that cannot be written).
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        stripe_message: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.error_type = error_type
        self.code = code
        self.param = param
        self.stripe_message = stripe_message
        self.request_id = request_id
        # True when a file download ended short: worth starting again from the first byte.
        self.partial_download = False

    def __reduce__(self) -> Any:
        # Keep the extra fields when the exception crosses a process boundary.
        return (_rebuild_error, (type(self), self.message, self.__dict__))

    @property
    def transient(self) -> bool:
        """Whether the failure may pass (connection, timeout, 409, 429, 5xx): a wait keeps going."""
        return isinstance(self, StripeTransientError)

    @property
    def is_data_unavailable(self) -> bool:
        """Stripe refused an interval because its data is not prepared (yet, or ever)."""
        text = self.stripe_message or ""
        return self.http_status == 400 and DATA_UNAVAILABLE_TEXT in text


class StripeTransientError(StripeError):
    """No answer, or one that may change on its own: connection errors, timeouts, 409, 429, 5xx
    (or ``Stripe-Should-Retry: true``). The client retries these; a wait logs them and goes on."""


class StripeDataNotReadyError(StripeError):
    """Stripe has not prepared the interval's data yet ("… is only available through <time>"):
    the same request succeeds once ``data_available_end`` reaches the interval end."""


class StripePermanentError(StripeError):
    """Stripe refused the request and will refuse it again (400 other than data-not-ready, 401,
    403, 404, …), or it must not be sent (a file host outside the allow-list, a TLS failure)."""


ERROR_KINDS: tuple[type[StripeError], ...] = (StripeTransientError, StripeDataNotReadyError, StripePermanentError)


def classify_response(status: int, should_retry: str | None, stripe_message: str | None) -> type[StripeError]:
    """The one decision on what an HTTP error answer means, in a fixed order (as stripe-python's
    ``_should_retry``): ``Stripe-Should-Retry`` first, then 409 and 429, then 5xx; among the rest,
    Stripe's "only available through" answer is data that is not ready yet; all else is permanent."""
    if should_retry == "true":
        return StripeTransientError
    if should_retry != "false" and (status in (409, 429) or status >= 500):
        return StripeTransientError
    if status == 400 and DATA_COMES_LATER_TEXT in (stripe_message or ""):
        return StripeDataNotReadyError
    return StripePermanentError


def _rebuild_error(cls: type[StripeError], message: str, fields: dict[str, Any]) -> StripeError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(fields)
    return error


def note_attempts(error: StripeError, attempts: int) -> None:
    """End the message with how many attempts were made before giving up."""
    error.message = f"{error.message}; gave up after {attempts} attempts"
    error.args = (error.message,)


def describe_error_response(
    status: int,
    fields: dict[str, Any],
    stripe_message: str,
    *,
    what: str,
    source: str,
    request_id: str | None,
) -> str:
    """The task-log sentence for an error answer: who refused what, Stripe's own words, one hint.

    :param status: the HTTP status.
    :param fields: Stripe's ``error`` object (``type``, ``code``, ``param``), empty when absent.
    :param stripe_message: Stripe's message, already scrubbed of the key.
    :param what: the object asked for (``report run frr_…``).
    :param source: what holds the key, for the hint (``connection 'stripe_default'``).
    :param request_id: Stripe's ``Request-Id``, for support.
    """
    error_type, code, param = fields.get("type"), fields.get("code"), fields.get("param")
    detail = ", ".join(
        str(part)
        for part in (
            f"{status} {error_type}" if error_type else str(status),
            code and f"code {code}",
            param and f"param {param}",
        )
        if part
    )
    verb = "failed on" if status >= 500 else "rejected"
    hint = _hint(status, stripe_message, source)
    if hint and stripe_message.rstrip().endswith((".", "!", "?")):
        hint = hint[1:]  # Stripe's message already ends a sentence: no ".." before the hint
    text = f"Stripe {verb} {what} ({detail}): {stripe_message}{hint}"
    if request_id:
        text += f" (request {request_id})"
    return text


def _hint(status: int, message: str, source: str) -> str:
    """One sentence on what to do, for the errors people meet in their first hour."""
    if status == 401:
        return f". The Stripe key in {source} was rejected: check that the Secret key (password) field holds a valid secret key."
    if status == 403:
        return (
            f". The key in {source} lacks a permission: a restricted key needs "
            "report_runs_and_report_types_read (Read) to use the Reporting API."
        )
    if status == 400 and "live" in message.lower() and "mode" in message.lower():
        return f". This report type needs a live-mode key (sk_live_… or rk_live_…) in {source}."
    if status == 404 and "reporting.report_run" in message:
        return (
            f". A report run is only visible to keys of the account and mode (test or live) that created it: "
            f"check the key and stripe_account of {source}."
        )
    return ""
