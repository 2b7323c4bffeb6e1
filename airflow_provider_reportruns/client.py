"""Stripe Reporting API wire protocol over ``requests``, with no Airflow inside.

What lives here: form encoding, authentication, the host allow-list, retries with backoff and
idempotency keys, a per-process rate limit, Stripe-shaped errors and streamed file downloads.
The Airflow hook builds one :class:`StripeReportingClient` from a connection; everything above
the hook (operators, sensors, triggers) goes through it.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import math
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from enum import Enum
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import requests

__all__ = [
    "DEFAULT_API_BASE",
    "RateLimiter",
    "ReportRunStatus",
    "StripeDataNotReadyError",
    "StripeError",
    "StripePermanentError",
    "StripeReportingClient",
    "StripeTransientError",
    "classify_response",
    "encode_form",
    "mask_key",
    "to_unix_seconds",
]

DEFAULT_API_BASE = "https://api.stripe.com"
STRIPE_API_HOST = "api.stripe.com"
STRIPE_FILES_HOST = "files.stripe.com"

# Retry policy, in the spirit of stripe-python's: a few named numbers and one decision function.
DEFAULT_MAX_RETRIES = 3
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 8.0
# After a 429, every request of the process through the same limiter waits at least this long.
RATE_LIMIT_PENALTY = 1.0
# Stripe's test mode allows 25 reads/s; stay safely under it unless the connection says otherwise.
DEFAULT_MAX_REQUESTS_PER_SECOND = 20.0
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 60.0)  # (connect, read) seconds
MAX_IDEMPOTENCY_KEY_LENGTH = 255
DOWNLOAD_CHUNK_SIZE = 1 << 20
WRITE_SLICE = 64 << 10
LIST_LIMIT_RANGE = (1, 100)
CREATED_FILTER_KEYS = ("gt", "gte", "lt", "lte")


class ReportRunStatus(str, Enum):
    """The statuses Stripe documents for ``reporting.report_run``.

    Stripe sends ``status`` as a plain string, so an unknown value is possible; it counts as
    "not finished yet", never as success.
    """

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @classmethod
    def is_terminal(cls, status: str | None) -> bool:
        return status in TERMINAL_STATUSES

    @classmethod
    def is_known(cls, status: str | None) -> bool:
        return status in {s.value for s in cls}


TERMINAL_STATUSES = frozenset({ReportRunStatus.SUCCEEDED.value, ReportRunStatus.FAILED.value})


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


# Stripe's words for an interval outside the report type's data; "through" means it comes later.
DATA_UNAVAILABLE_TEXT = "is only available"
DATA_COMES_LATER_TEXT = "is only available through"
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


def mask_key(key: str) -> str:
    """``sk_test_…abcd``: enough to tell keys apart in a message, never enough to use one."""
    prefix = key.split("_", 2)
    head = "_".join(prefix[:2]) + "_" if len(prefix) == 3 else ""
    return f"{head}…{key[-4:]}" if len(key) > 8 else "…"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def validate_api_base(api_base: str) -> str:
    """Check an API base URL and return it without a trailing slash.

    ``https://`` anywhere; plain ``http://`` only to a loopback host (the local simulator), so a
    secret key never crosses a network in clear text.
    """
    parts = urlsplit(api_base)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(
            f"The Stripe API base URL {api_base!r} is not a URL with a scheme and host; "
            f"use {DEFAULT_API_BASE} (or leave the host empty) or http://127.0.0.1:PORT for the simulator."
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(
            f"Refusing plain http:// to {parts.hostname}: a Stripe key is only sent over https, "
            "or over http to a loopback host (127.0.0.1, ::1, localhost) such as the local simulator."
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"The Stripe API base URL {api_base!r} must not carry a query, fragment or user info.")
    return api_base.rstrip("/")


def validate_secret_key(api_key: str | None, *, source: str = "the client") -> str:
    """Reject an empty or publishable key before any request is made."""
    key = (api_key or "").strip()
    if not key:
        raise ValueError(
            f"No Stripe secret key in {source}: put an sk_… or rk_… key in the Secret key (password) field."
        )
    if key.startswith("pk_"):
        raise ValueError(
            f"The Stripe key in {source} is a publishable key (pk_…), which cannot call the Reporting API; "
            "use a secret key (sk_…) or a restricted key (rk_…) with the report_runs_and_report_types_read "
            "permission."
        )
    return key


def to_unix_seconds(value: Any, name: str) -> int:
    """Convert an interval bound to UTC Unix seconds.

    Accepts an ``int`` (Unix seconds), a string of digits, an aware ``datetime`` or an ISO 8601
    string with an offset. Naive datetimes are refused: for a finance report, guessing the zone
    silently shifts the interval by hours.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a timestamp, got the boolean {value!r}.")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ValueError(f"{name} must be a whole number of Unix seconds, got {value!r}.")
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{name} must be Unix seconds, an aware datetime or an ISO 8601 date-time, got {value!r}."
            ) from None
        return to_unix_seconds(parsed, name)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"{name} is a naive datetime ({value.isoformat()}); pass a timezone-aware datetime "
                "(for example pendulum.datetime(2024, 1, 1, tz='UTC')), an ISO 8601 string with an offset, "
                "or Unix seconds."
            )
        seconds = value.timestamp()
        if not seconds.is_integer():
            raise ValueError(f"{name} ({value.isoformat()}) must fall on a whole second.")
        return int(seconds)
    raise ValueError(
        f"{name} must be Unix seconds, an aware datetime or an ISO 8601 date-time, "
        f"got {type(value).__name__} {value!r}."
    )


def encode_form(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Form-encode nested data the way Stripe's API expects.

    ``{"parameters": {"interval_start": 1, "columns": ["a", "b"]}}`` becomes
    ``parameters[interval_start]=1``, ``parameters[columns][0]=a``, ``parameters[columns][1]=b``.
    ``None`` values are left out.
    """
    pairs: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        pairs.extend(_encode_value(name, value))
    return pairs


def _encode_value(name: str, value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return encode_form(value, name)
    if isinstance(value, (list, tuple)):
        pairs: list[tuple[str, str]] = []
        for index, item in enumerate(value):
            pairs.extend(_encode_value(f"{name}[{index}]", item))
        return pairs
    if isinstance(value, bool):
        return [(name, "true" if value else "false")]
    return [(name, str(value))]


class RateLimiter:
    """At most ``rate`` request starts in any 1-second window (in fact 5 % fewer, see ``HEADROOM``),
    across threads and event loops.

    Two parts. Pacing: each caller reserves the next free slot, ``1 / rate`` after the previous
    one, under a lock, then waits for it (``time.sleep`` in a thread, ``asyncio.sleep`` in a
    trigger). The guarantee: a sleeper can wake late and the next one on time, so before starting
    each caller also checks the actual start times of the last ``rate`` requests and waits until
    the oldest is a full second (plus a little slack for network jitter) in the past. A 429 pushes
    the next free slot back for everyone sharing the limiter.
    """

    # Extra spacing on top of one second, for requests that arrive at Stripe unevenly delayed.
    WINDOW_SLACK = 0.01
    # Requests that may start together before pacing spaces them out.
    BURST = 4
    # Share of the configured rate kept free: requests reach Stripe with uneven delays (measured up
    # to 170 ms on a loaded machine), which can bunch a few more into one of Stripe's seconds.
    HEADROOM = 0.05

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._next_free = 0.0
        self._starts: collections.deque[float] = collections.deque()
        self.rate = rate

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"max_requests_per_second must be a positive number, got {value!r}.")
        with self._lock:
            self._rate = float(value)
            effective = self._rate * (1.0 - self.HEADROOM)
            self._interval = 1.0 / effective
            self._window_size = max(1, math.floor(effective))
            self._burst_tolerance = (min(self.BURST, self._window_size) - 1) * self._interval
            self._starts = collections.deque(self._starts, maxlen=self._window_size)

    def reserve(self) -> float:
        """Claim the next paced slot; return how many seconds to wait before using it.

        Pacing lets a short burst (``BURST`` requests) through at once, so a task's few sequential
        calls are not spaced ``1 / rate`` apart; the window check still caps every second.
        """
        with self._lock:
            now = self._clock()
            next_free = max(self._next_free, now)
            self._next_free = next_free + self._interval
            return max(0.0, next_free - self._burst_tolerance - now)

    def _try_start(self) -> float:
        """Record a start now and return 0, or return how long to wait for the window to allow it."""
        with self._lock:
            now = self._clock()
            starts = self._starts
            if len(starts) >= self._window_size:
                wait = starts[0] + 1.0 + self.WINDOW_SLACK - now
                if wait > 0:
                    return wait
            starts.append(now)
            return 0.0

    def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            time.sleep(delay)
        self.wait_for_window()

    def wait_for_window(self) -> None:
        """The guarantee alone: record a start now, or sleep until the 1-second window allows one."""
        while (delay := self._try_start()) > 0:
            time.sleep(delay)

    async def pace_async(self) -> None:
        """The pacing alone, awaited in an event loop. The thread that finally sends must call
        :meth:`wait_for_window` right before it starts: a busy pool can start the request late."""
        import asyncio

        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)

    async def acquire_async(self) -> None:
        import asyncio

        await self.pace_async()
        while (delay := self._try_start()) > 0:
            await asyncio.sleep(delay)

    def penalize(self, seconds: float = RATE_LIMIT_PENALTY) -> None:
        """Hold every waiter back after Stripe answered 429."""
        with self._lock:
            self._next_free = max(self._next_free, self._clock() + seconds + self._burst_tolerance)


_limiters: dict[str, RateLimiter] = {}
_limiters_lock = threading.Lock()


def shared_rate_limiter(api_base: str, api_key: str, stripe_account: str | None, rate: float) -> RateLimiter:
    """The process-wide limiter for one Stripe account at one API host.

    Stripe counts its limits per account, so every hook and trigger in a process that uses the same
    key (and connected account) shares one limiter. The newest configured rate wins.
    """
    fingerprint = hashlib.sha256(f"{api_base}\0{api_key}\0{stripe_account or ''}".encode()).hexdigest()
    with _limiters_lock:
        limiter = _limiters.get(fingerprint)
        if limiter is None:
            limiter = _limiters[fingerprint] = RateLimiter(rate)
        elif limiter.rate != rate:
            limiter.rate = rate
        return limiter


_thread_state = threading.local()
_executor_lock = threading.Lock()
_pool: Any = None
# Enough threads to keep well over Stripe's rate limits busy at loopback or WAN latencies.
ASYNC_POOL_THREADS = 16


def _executor() -> Any:
    global _pool
    with _executor_lock:
        if _pool is None:
            from concurrent.futures import ThreadPoolExecutor

            _pool = ThreadPoolExecutor(max_workers=ASYNC_POOL_THREADS, thread_name_prefix="stripe-reporting")
        return _pool


def _prelimited(client: StripeReportingClient, call: Callable[[], Any]) -> Any:
    """Run ``call`` with its first request already paced in the event loop (only the window
    check is left, at the actual start)."""
    _thread_state.prelimited = True
    try:
        return call()
    finally:
        _thread_state.prelimited = False


class _Retryable(Exception):
    """Internal: an attempt that may be tried again; ``error`` is raised if it is the last."""

    def __init__(self, error: StripeError, *, rate_limited: bool = False, retry_after: float | None = None):
        super().__init__(str(error))
        self.error = error
        self.rate_limited = rate_limited
        self.retry_after = retry_after


class StripeReportingClient:
    """A small client for Stripe's report runs, report types and result files.

    :param api_key: secret (``sk_``) or restricted (``rk_``) key; never logged nor put in errors.
    :param api_base: API base URL; ``https://`` or ``http://`` to a loopback host.
    :param stripe_account: connected account id sent as ``Stripe-Account``.
    :param api_version: pinned API version sent as ``Stripe-Version``.
    :param timeout: seconds per request, a number or ``(connect, read)``.
    :param max_retries: retries after the first attempt for retryable failures.
    :param max_requests_per_second: client-side limit shared by the whole process.
    :param initial_backoff: first retry delay in seconds (doubles per retry, capped, with jitter).
    :param source: what holds the key, for messages (``connection 'stripe_default'``).
    :param error_class: the exception type for failures of no kind (a local file that cannot be
        written); the Airflow hook passes an AirflowException subclass of :class:`StripeError`.
    :param error_classes: the exception type to raise for each kind in :data:`ERROR_KINDS` (a
        subclass of that kind); the Airflow hook passes its own, so that permanent errors fail a
        task without retries.
    """

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str = DEFAULT_API_BASE,
        stripe_account: str | None = None,
        api_version: str | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_requests_per_second: float = DEFAULT_MAX_REQUESTS_PER_SECOND,
        initial_backoff: float = INITIAL_BACKOFF,
        source: str = "the client",
        error_class: type[StripeError] = StripeError,
        error_classes: Mapping[type[StripeError], type[StripeError]] | None = None,
    ) -> None:
        self._api_key = validate_secret_key(api_key, source=source)
        self.api_base = validate_api_base(api_base)
        self.stripe_account = stripe_account or None
        self.api_version = api_version or None
        self.timeout = timeout
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ValueError(f"max_retries must be a whole number >= 0, got {max_retries!r}.")
        self.max_retries = max_retries
        self.initial_backoff = initial_backoff
        self.source = source
        self.error_class = error_class
        self.error_classes: dict[type[StripeError], type[StripeError]] = {kind: kind for kind in ERROR_KINDS}
        for kind, cls in (error_classes or {}).items():
            if kind not in ERROR_KINDS or not issubclass(cls, kind):
                raise ValueError(
                    f"error_classes maps {kind.__name__} to {cls.__name__}, which is not a subclass of it."
                )
            self.error_classes[kind] = cls
        self.rate_limiter = shared_rate_limiter(
            self.api_base, self._api_key, self.stripe_account, float(max_requests_per_second)
        )
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()
        self._sleep: Callable[[float], None] = time.sleep
        # Counters for logs and benchmarks: what this client sent and how often it retried.
        self.request_count = 0
        self.retry_count = 0

    def __repr__(self) -> str:
        return f"StripeReportingClient(api_base={self.api_base!r}, source={self.source!r})"

    # -- session ---------------------------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        """One ``requests.Session`` per client (keep-alive), created on first use."""
        if self._session is None:
            with self._session_lock:
                if self._session is None:
                    self._session = self._new_session()
        return self._session

    def _new_session(self) -> requests.Session:
        import requests
        from requests.adapters import HTTPAdapter

        from airflow_provider_reportruns import __version__

        session = requests.Session()
        # Threads (sensors in one worker, triggers' thread pool) share the client: keep enough
        # pooled connections that none is thrown away after each request.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=64, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.verify = True
        session.headers["User-Agent"] = (
            f"airflow-provider-reportruns/{__version__} {cast(str, session.headers['User-Agent'])}"
        )
        return session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> StripeReportingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- report runs -----------------------------------------------------------------------------

    def create_report_run(
        self, report_type: str, parameters: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """``POST /v1/reporting/report_runs``; one Idempotency-Key is reused on every retry.

        :param report_type: e.g. ``balance.summary.1``.
        :param parameters: ``interval_start``, ``interval_end``, ``columns``, ``payout``, … as Stripe names them.
        :param idempotency_key: the caller's key; a random one is generated when omitted.
        """
        if not isinstance(report_type, str) or not report_type.strip():
            raise ValueError("report_type must be a non-empty string such as 'balance.summary.1'.")
        key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
        if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise ValueError(f"idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters, got {len(key)}.")
        form: dict[str, Any] = {"report_type": report_type}
        if parameters:
            form["parameters"] = dict(parameters)
        return self._request(
            "POST",
            "/v1/reporting/report_runs",
            what=f"the report run for {report_type}",
            data=encode_form(form),
            idempotency_key=key,
        )

    def get_report_run(self, report_run_id: str) -> dict[str, Any]:
        """``GET /v1/reporting/report_runs/{id}``."""
        run_id = _check_id(report_run_id, "report_run_id", "frr_")
        return self._request("GET", f"/v1/reporting/report_runs/{run_id}", what=f"report run {run_id}")

    def list_report_runs(
        self,
        *,
        created: int | Mapping[str, int] | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
    ) -> dict[str, Any]:
        """``GET /v1/reporting/report_runs``: one page, newest first, as Stripe returns it.

        :param created: Unix seconds, or a mapping with any of ``gt``, ``gte``, ``lt``, ``lte``.
        :param limit: 1 to 100 (Stripe's default is 10).
        :param starting_after: cursor: runs after (older than) this id.
        :param ending_before: cursor: runs before (newer than) this id.
        """
        query: dict[str, Any] = {}
        if created is not None:
            query["created"] = _check_created(created)
        if limit is not None:
            low, high = LIST_LIMIT_RANGE
            if isinstance(limit, bool) or not isinstance(limit, int) or not low <= limit <= high:
                raise ValueError(f"limit must be a whole number from {low} to {high}, got {limit!r}.")
            query["limit"] = limit
        if starting_after and ending_before:
            raise ValueError("Pass starting_after or ending_before, not both: they are opposite cursors of one list.")
        if starting_after:
            query["starting_after"] = _check_id(starting_after, "starting_after", "frr_")
        if ending_before:
            query["ending_before"] = _check_id(ending_before, "ending_before", "frr_")
        return self._request("GET", "/v1/reporting/report_runs", what="the report run list", params=encode_form(query))

    def iter_report_runs(
        self, *, created: int | Mapping[str, int] | None = None, page_size: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Every matching report run, newest first, following ``has_more`` page by page."""
        starting_after: str | None = None
        while True:
            page = self.list_report_runs(created=created, limit=page_size, starting_after=starting_after)
            data = page.get("data") or []
            yield from data
            if not page.get("has_more") or not data:
                return
            starting_after = data[-1]["id"]

    # -- report types ----------------------------------------------------------------------------

    def list_report_types(self) -> list[dict[str, Any]]:
        """``GET /v1/reporting/report_types``: the full list (Stripe does not page it)."""
        page = self._request("GET", "/v1/reporting/report_types", what="the report type list")
        return list(page.get("data") or [])

    def get_report_type(self, report_type: str) -> dict[str, Any]:
        """``GET /v1/reporting/report_types/{id}``: availability window and default columns."""
        type_id = _check_id(report_type, "report_type")
        return self._request("GET", f"/v1/reporting/report_types/{type_id}", what=f"report type {type_id}")

    # -- result files ----------------------------------------------------------------------------

    def check_file_url(self, url: str) -> str:
        """Refuse to send the key anywhere but the API host or Stripe's file host.

        Stripe serves result files from ``https://files.stripe.com``; a local API base (the
        simulator) serves them itself. Any other host gets no request at all.
        """
        parts = urlsplit(url)
        api = urlsplit(self.api_base)
        same_as_api = (parts.scheme, parts.hostname, parts.port) == (api.scheme, api.hostname, api.port)
        stripe_files = parts.scheme == "https" and parts.hostname == STRIPE_FILES_HOST and parts.port in (None, 443)
        if not (same_as_api or stripe_files):
            raise self._error(
                StripePermanentError,
                f"Refusing to download a result file from {parts.scheme}://{parts.netloc}: the Stripe key is "
                f"only sent to {api.scheme}://{api.netloc} and https://{STRIPE_FILES_HOST}.",
            )
        return url

    @contextlib.contextmanager
    def open_file(self, url: str, *, what: str = "the result file") -> Iterator[requests.Response]:
        """Open a streamed ``GET`` of a result file (``result.url``) with the same key."""
        self.check_file_url(url)
        response = self._send("GET", url, what=what, stream=True)
        try:
            yield response
        finally:
            response.close()

    def download_file(
        self,
        url: str,
        write: Callable[[bytes | memoryview], Any],
        *,
        expected_size: int | None = None,
        chunk_size: int = DOWNLOAD_CHUNK_SIZE,
        what: str = "the result file",
    ) -> int:
        """Stream a result file through ``write`` in chunks; return the byte count.

        Raises when fewer or more bytes than ``expected_size`` (Stripe's ``result.size``) arrive,
        so a cut connection never passes for a complete report.
        """
        import requests

        received = 0
        with self.open_file(url, what=what) as response:
            try:
                for chunk in response.iter_content(chunk_size):
                    # Large reads, smaller writes: on ext4 a 1 MiB page-cache write() costs far
                    # more system time than sixteen 64 KiB ones (see the README's row 3).
                    view = memoryview(chunk)
                    for start in range(0, len(view), WRITE_SLICE):
                        write(view[start : start + WRITE_SLICE])
                    received += len(chunk)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                raise self._partial_download(
                    f"The download of {what} broke off after {received} bytes ({type(exc).__name__})."
                ) from None
        if expected_size is not None and received != expected_size:
            raise self._partial_download(
                f"The download of {what} is incomplete: received {received} bytes, Stripe announced "
                f"{expected_size} (result.size)."
            )
        return received

    def _partial_download(self, message: str) -> StripeError:
        error = self._error(StripeTransientError, message)
        error.partial_download = True
        return error

    def download_atomically(
        self,
        url: str,
        open_part: Callable[[], Any],
        commit: Callable[[], None],
        discard: Callable[[], None],
        *,
        expected_size: int | None = None,
        what: str = "the result file",
    ) -> int:
        """Stream a result file into a temporary part, then ``commit`` it; ``discard`` on failure.

        ``open_part()`` returns a fresh, empty, writable binary file object (a context manager).
        A download cut off part-way is started again from the first byte, up to ``max_retries``
        times; whatever happens, no partial file is ever committed.
        """
        attempt = 0
        while True:
            try:
                with open_part() as handle:
                    received = self.download_file(url, handle.write, expected_size=expected_size, what=what)
                commit()
                return received
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    discard()
                if getattr(exc, "partial_download", False) and attempt < self.max_retries:
                    attempt += 1
                    self.retry_count += 1
                    self._sleep(self._backoff(attempt))
                    continue
                if attempt and isinstance(exc, StripeError) and exc.partial_download:
                    _note_attempts(exc, attempt + 1)
                raise

    def download_to_path(
        self,
        url: str,
        destination: str | os.PathLike[str],
        *,
        expected_size: int | None = None,
        what: str = "the result file",
    ) -> str:
        """Stream a result file to a local path, atomically.

        Bytes go to a temporary file beside the destination, renamed into place only once the
        whole file arrived; a failed download leaves nothing at ``destination``.
        """
        import requests

        path = os.fspath(destination)
        directory = os.path.dirname(os.path.abspath(path))

        def cannot_write(exc: OSError) -> StripeError:
            reason = exc.strerror or str(exc)
            if isinstance(exc, FileExistsError) and exc.filename:
                reason = f"{exc.filename} exists and is not a directory"
            elif isinstance(exc, IsADirectoryError):
                reason = "it is a directory"
            return self.error_class(f"Cannot write {what} to {path}: {reason}.")

        try:
            os.makedirs(directory, exist_ok=True)
            fd, part = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part", dir=directory)
            os.close(fd)
        except OSError as exc:
            raise cannot_write(exc) from None

        def open_part() -> IO[bytes]:
            return open(part, "wb")

        def discard() -> None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)

        try:
            self.download_atomically(
                url, open_part, lambda: os.replace(part, path), discard, expected_size=expected_size, what=what
            )
        except OSError as exc:
            if isinstance(exc, requests.RequestException):
                raise
            # The local side failed (disk full, a directory in the way): say so, not a raw errno.
            raise cannot_write(exc) from None
        return path

    # -- the request pipeline --------------------------------------------------------------------

    def _headers(self, idempotency_key: str | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self._api_key}"}
        if self.api_version:
            headers["Stripe-Version"] = self.api_version
        if self.stripe_account:
            headers["Stripe-Account"] = self.stripe_account
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Sequence[tuple[str, str]] | None = None,
        data: list[tuple[str, str]] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        response: dict[str, Any] = self._send(
            method,
            self.api_base + path,
            what=what,
            params=params,
            data=data,
            idempotency_key=idempotency_key,
            parse_json=True,
        )
        return response

    async def arequest(self, method_name: str, *args: Any) -> Any:
        """Run one client method from an event loop without blocking it.

        The rate-limit slot is awaited in the loop (``asyncio.sleep``), then the blocking HTTP
        call runs on a small thread pool of this module's own, so a thousand waiting triggers
        neither stall the triggerer's loop nor crowd its default executor.
        """
        import asyncio
        import functools

        # Only the pacing here: the start is recorded in the worker thread when the request really
        # starts, which can be much later when every pool thread is busy (retries after 429s).
        await self.rate_limiter.pace_async()
        call = functools.partial(getattr(self, method_name), *args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_executor(), functools.partial(_prelimited, self, call))

    def _send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: Sequence[tuple[str, str]] | None = None,
        data: list[tuple[str, str]] | None = None,
        idempotency_key: str | None = None,
        stream: bool = False,
        parse_json: bool = False,
    ) -> Any:
        """Send one logical request, retrying as :meth:`_should_retry` decides.

        Returns the decoded JSON object (``parse_json``) or the open streamed response.
        """
        headers = self._headers(idempotency_key)
        attempt = 0
        prelimited = getattr(_thread_state, "prelimited", False)
        _thread_state.prelimited = False
        while True:
            if prelimited and attempt == 0:
                self.rate_limiter.wait_for_window()
            else:
                self.rate_limiter.acquire()
            self.request_count += 1
            try:
                return self._attempt(method, url, what, params, data, headers, stream, parse_json)
            except _Retryable as retryable:
                if retryable.rate_limited:
                    self.rate_limiter.penalize()
                if attempt >= self.max_retries:
                    if attempt:
                        _note_attempts(retryable.error, attempt + 1)
                    raise retryable.error from None
                attempt += 1
                self.retry_count += 1
                delay = self._backoff(attempt)
                if retryable.retry_after is not None:
                    delay = max(delay, min(retryable.retry_after, MAX_BACKOFF))
                self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        base: float = min(self.initial_backoff * 2 ** (attempt - 1), MAX_BACKOFF)
        return base * random.uniform(0.5, 1.0)

    def _attempt(
        self,
        method: str,
        url: str,
        what: str,
        params: Sequence[tuple[str, str]] | None,
        data: list[tuple[str, str]] | None,
        headers: dict[str, str],
        stream: bool,
        parse_json: bool,
    ) -> Any:
        import requests

        try:
            response = self.session.request(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                timeout=self.timeout,
                stream=stream,
                allow_redirects=False,
                verify=True,
            )
        except requests.exceptions.SSLError as exc:
            # Not retried: a certificate problem does not fix itself (stripe-python agrees).
            raise self._error(
                StripePermanentError, f"Could not verify the TLS certificate of {_origin(url)} for {what}: {exc}"
            ) from None
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            # ChunkedEncodingError: the connection broke while the answer's body was being read
            # (fewer bytes than its Content-Length); a create may have run, so retry with its key.
            if isinstance(exc, requests.Timeout):
                problem = "timed out"
            elif isinstance(exc, requests.exceptions.ChunkedEncodingError):
                problem = "broke off its answer"
            else:
                problem = "could not be reached"
            raise _Retryable(
                self._error(
                    StripeTransientError,
                    f"Stripe at {_origin(url)} {problem} while requesting {what} ({type(exc).__name__})",
                )
            ) from None

        request_id = response.headers.get("Request-Id")
        if response.status_code < 300:
            if not parse_json:
                return response
            try:
                body = response.json()
            except ValueError:
                raise _Retryable(
                    self._error(
                        StripeTransientError,
                        f"Stripe answered {what} with a body that is not valid JSON "
                        f"({response.status_code}, {len(response.content)} bytes)",
                        http_status=response.status_code,
                        request_id=request_id,
                    )
                ) from None
            if not isinstance(body, dict):
                raise _Retryable(
                    self._error(StripeTransientError, f"Stripe answered {what} with JSON that is not an object.")
                )
            return body

        try:
            error = self._error_from_response(response, what)
        finally:
            response.close()
        if error.transient:
            retry_after = _float_or_none(response.headers.get("Retry-After"))
            raise _Retryable(error, rate_limited=response.status_code == 429, retry_after=retry_after)
        raise error

    def _error_from_response(self, response: requests.Response, what: str) -> StripeError:
        request_id = response.headers.get("Request-Id")
        status = response.status_code
        fields: dict[str, Any] = {}
        try:
            body = response.json()
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                fields = body["error"]
        except (ValueError, OSError):  # OSError: requests' errors when a streamed body breaks off
            pass
        error_type = fields.get("type")
        code = fields.get("code")
        param = fields.get("param")
        stripe_message = self._scrub(str(fields.get("message") or response.reason or "no message"))
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
        hint = _hint(status, stripe_message, self.source)
        if hint and stripe_message.rstrip().endswith((".", "!", "?")):
            hint = hint[1:]  # Stripe's message already ends a sentence: no ".." before the hint
        text = f"Stripe {verb} {what} ({detail}): {stripe_message}{hint}"
        if request_id:
            text += f" (request {request_id})"
        kind = classify_response(status, response.headers.get("Stripe-Should-Retry"), stripe_message)
        return self._error(
            kind,
            text,
            http_status=status,
            error_type=error_type,
            code=code,
            param=param,
            stripe_message=stripe_message,
            request_id=request_id,
        )

    def _error(self, kind: type[StripeError] | None, message: str, **fields: Any) -> StripeError:
        """An exception of ``kind`` (``None``: a failure of no kind), as the caller asked it typed."""
        cls = self.error_classes[kind] if kind is not None else self.error_class
        return cls(self._scrub(message), **fields)

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, mask_key(self._api_key))


def _note_attempts(error: StripeError, attempts: int) -> None:
    """End the message with how many attempts were made before giving up."""
    error.message = f"{error.message}; gave up after {attempts} attempts"
    error.args = (error.message,)


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


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _check_id(value: Any, name: str, prefix: str | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}.")
    text: str = value.strip()
    if "/" in text or "?" in text or "#" in text or any(c.isspace() for c in text):
        raise ValueError(f"{name} {text!r} is not a Stripe id.")
    if prefix and not text.startswith(prefix):
        raise ValueError(f"{name} {text!r} is not a Stripe report run id (they start with {prefix!r}).")
    return text


def _check_created(created: Any) -> int | dict[str, int]:
    if isinstance(created, Mapping):
        unknown = sorted(set(created) - set(CREATED_FILTER_KEYS))
        if unknown or not created:
            raise ValueError(
                f"created filter keys must be among {', '.join(CREATED_FILTER_KEYS)}, got {sorted(created)!r}."
            )
        return {op: to_unix_seconds(value, f"created[{op}]") for op, value in created.items()}
    return to_unix_seconds(created, "created")


def result_file(report_run: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``file`` object of a succeeded run, or ``None``."""
    result = report_run.get("result")
    return result if isinstance(result, dict) else None


def canonical_json(data: Any) -> str:
    """A stable text for hashing parameters (sorted keys, no spaces)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
