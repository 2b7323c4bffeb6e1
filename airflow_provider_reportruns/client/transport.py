"""The HTTP side of the client: sessions, authentication, retries with backoff and idempotency
keys, the host allow-list, and ``arequest`` for event loops."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_reportruns.client.accounts import AccountResources, account_resources
from airflow_provider_reportruns.client.errors import (
    ERROR_KINDS,
    StripeError,
    StripePermanentError,
    StripeTransientError,
    classify_response,
    describe_error_response,
    note_attempts,
)
from airflow_provider_reportruns.client.limiter import DEFAULT_MAX_REQUESTS_PER_SECOND
from airflow_provider_reportruns.client.security import (
    DEFAULT_API_BASE,
    file_url_refusal,
    mask_key,
    origin,
    validate_api_base,
    validate_secret_key,
)

if TYPE_CHECKING:
    import requests

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "INITIAL_BACKOFF",
    "MAX_BACKOFF",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "StripeTransport",
]

# Retry policy, in the spirit of stripe-python's: a few named numbers and one decision function.
DEFAULT_MAX_RETRIES = 3
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 8.0
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 60.0)  # (connect, read) seconds
MAX_IDEMPOTENCY_KEY_LENGTH = 255

_Transport = TypeVar("_Transport", bound="StripeTransport")
_thread_state = threading.local()


def _prelimited(call: Callable[[], Any]) -> Any:
    """Run ``call`` with its first request already paced in the event loop (only the check right
    before sending is left, at the actual start)."""
    _thread_state.prelimited = True
    try:
        return call()
    finally:
        _thread_state.prelimited = False


class _Retryable(Exception):
    """An attempt that may be tried again; ``error`` is raised if it is the last."""

    def __init__(self, error: StripeError, *, rate_limited: bool = False, retry_after: float | None = None):
        super().__init__(str(error))
        self.error = error
        self.rate_limited = rate_limited
        self.retry_after = retry_after


class StripeTransport:
    """Authenticated, retried, rate-limited requests to one Stripe account; the base of
    :class:`~airflow_provider_reportruns.client.StripeReportingClient`.

    :param api_key: secret (``sk_``) or restricted (``rk_``) key; never logged nor put in errors.
    :param api_base: API base URL; ``https://`` or ``http://`` to a loopback host.
    :param stripe_account: connected account id sent as ``Stripe-Account``.
    :param api_version: pinned API version sent as ``Stripe-Version``.
    :param timeout: seconds per request, a number or ``(connect, read)``.
    :param max_retries: retries after the first attempt for retryable failures.
    :param max_requests_per_second: client-side limit, shared by every client of the same account
        in this process (see :mod:`~airflow_provider_reportruns.client.limiter`).
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
            if kind not in ERROR_KINDS:
                kinds = ", ".join(k.__name__ for k in ERROR_KINDS)
                raise ValueError(f"error_classes maps {_name(kind)}, which is not one of the kinds {kinds}.")
            if not isinstance(cls, type) or not issubclass(cls, kind):
                raise ValueError(f"error_classes maps {kind.__name__} to {_name(cls)}, which is not a subclass of it.")
            self.error_classes[kind] = cls
        self._account = account_resources(
            self.api_base, self._api_key, self.stripe_account, float(max_requests_per_second)
        )
        self.rate_limiter = self._account.rate_limiter
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()
        self._sleep: Callable[[float], None] = time.sleep
        # Counters for logs and benchmarks: what this client sent and how often it retried.
        self.request_count = 0
        self.retry_count = 0

    @property
    def account(self) -> AccountResources:
        """What every client of this account (API base, key, connected account) in this process
        shares; one object per account, so it also names the account without holding its key."""
        return self._account

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_base={self.api_base!r}, source={self.source!r})"

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
        from requests.utils import default_user_agent

        from airflow_provider_reportruns import __version__

        session = requests.Session()
        # Threads (sensors in one worker, triggers' thread pool) share the client: keep enough
        # pooled connections that none is thrown away after each request.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=64, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.verify = True
        # requests' own agent string, typed str in every version of its stubs (the header is not).
        session.headers["User-Agent"] = f"airflow-provider-reportruns/{__version__} {default_user_agent()}"
        return session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self: _Transport) -> _Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_file_url(self, url: str) -> str:
        """Refuse to send the key anywhere but the API host or Stripe's file host (no request at all)."""
        refusal = file_url_refusal(url, self.api_base)
        if refusal:
            raise self._error(StripePermanentError, refusal)
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

    async def arequest(self, method_name: str, *args: Any, **kwargs: Any) -> Any:
        """Run one client method from an event loop without blocking it.

        The rate-limit slot is awaited in the loop (``asyncio.sleep``), then the blocking HTTP
        call runs on a small thread pool of this account's own, so a thousand waiting triggers
        neither stall the triggerer's loop nor crowd its default executor, and a slow account's
        calls never queue another account's.
        """
        import asyncio
        import functools

        # Only the pacing here: the start is recorded in the worker thread when the request really
        # starts, which can be much later when every pool thread is busy (retries after 429s).
        await self.rate_limiter.pace_async()
        call = functools.partial(getattr(self, method_name), *args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._account.executor, functools.partial(_prelimited, call))

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
        # Built (and requests imported) before the limiter records the start, so that the start
        # it records is when the request goes out, not a first import earlier.
        self.session  # noqa: B018
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
                        note_attempts(retryable.error, attempt + 1)
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
                StripePermanentError, f"Could not verify the TLS certificate of {origin(url)} for {what}: {exc}"
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
                    f"Stripe at {origin(url)} {problem} while requesting {what} ({type(exc).__name__})",
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
            retry_after = _seconds_or_none(response.headers.get("Retry-After"))
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
        stripe_message = self._scrub(str(fields.get("message") or response.reason or "no message"))
        text = describe_error_response(
            status, fields, stripe_message, what=what, source=self.source, request_id=request_id
        )
        kind = classify_response(status, response.headers.get("Stripe-Should-Retry"), stripe_message)
        return self._error(
            kind,
            text,
            http_status=status,
            error_type=fields.get("type"),
            code=fields.get("code"),
            param=fields.get("param"),
            stripe_message=stripe_message,
            request_id=request_id,
        )

    def _error(self, kind: type[StripeError] | None, message: str, **fields: Any) -> StripeError:
        """An exception of ``kind`` (``None``: a failure of no kind), as the caller asked it typed."""
        cls = self.error_classes[kind] if kind is not None else self.error_class
        return cls(self._scrub(message), **fields)

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, mask_key(self._api_key))


def _name(value: object) -> str:
    return value.__name__ if isinstance(value, type) else repr(value)


def _seconds_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
