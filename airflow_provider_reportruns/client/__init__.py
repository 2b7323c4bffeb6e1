"""Stripe Reporting API wire protocol over ``requests``, with no Airflow inside.

One concern a module: :mod:`.errors` (what kind of failure an answer is, decided once),
:mod:`.forms` (form encoding, ids, timestamps, statuses), :mod:`.security` (where a key may go),
:mod:`.limiter` (the rate limit), :mod:`.accounts` (what clients of one account share),
:mod:`.transport` (sessions, retries, idempotency, ``arequest``), :mod:`.files` (result files on
disk) and :mod:`.reporting` (the Reporting API's calls). The Airflow hook builds one
:class:`StripeReportingClient` from a connection; everything above the hook (operators, sensors,
triggers) goes through it. Every name is importable from here.
"""

from __future__ import annotations

from airflow_provider_reportruns.client.accounts import (
    ASYNC_POOL_THREADS,
    AccountResources,
    account_resources,
    shared_rate_limiter,
)
from airflow_provider_reportruns.client.errors import (
    DATA_COMES_LATER_TEXT,
    DATA_UNAVAILABLE_TEXT,
    ERROR_KINDS,
    StripeDataNotReadyError,
    StripeError,
    StripePermanentError,
    StripeTransientError,
    classify_response,
)
from airflow_provider_reportruns.client.files import DOWNLOAD_CHUNK_SIZE, WRITE_SLICE
from airflow_provider_reportruns.client.forms import (
    CREATED_FILTER_KEYS,
    LIST_LIMIT_RANGE,
    TERMINAL_STATUSES,
    ReportRunStatus,
    canonical_json,
    encode_form,
    result_file,
    to_unix_seconds,
)
from airflow_provider_reportruns.client.limiter import (
    DEFAULT_MAX_REQUESTS_PER_SECOND,
    RATE_LIMIT_PENALTY,
    RateLimiter,
)
from airflow_provider_reportruns.client.reporting import StripeReportingClient
from airflow_provider_reportruns.client.security import (
    DEFAULT_API_BASE,
    STRIPE_API_HOST,
    STRIPE_FILES_HOST,
    is_loopback,
    mask_key,
    validate_api_base,
    validate_secret_key,
)
from airflow_provider_reportruns.client.transport import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    INITIAL_BACKOFF,
    MAX_BACKOFF,
    MAX_IDEMPOTENCY_KEY_LENGTH,
)

# The name this helper had before it was public.
_is_loopback = is_loopback

__all__ = [
    "ASYNC_POOL_THREADS",
    "CREATED_FILTER_KEYS",
    "DATA_COMES_LATER_TEXT",
    "DATA_UNAVAILABLE_TEXT",
    "DEFAULT_API_BASE",
    "DEFAULT_MAX_REQUESTS_PER_SECOND",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "DOWNLOAD_CHUNK_SIZE",
    "ERROR_KINDS",
    "INITIAL_BACKOFF",
    "LIST_LIMIT_RANGE",
    "MAX_BACKOFF",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "RATE_LIMIT_PENALTY",
    "STRIPE_API_HOST",
    "STRIPE_FILES_HOST",
    "TERMINAL_STATUSES",
    "WRITE_SLICE",
    "AccountResources",
    "RateLimiter",
    "ReportRunStatus",
    "StripeDataNotReadyError",
    "StripeError",
    "StripePermanentError",
    "StripeReportingClient",
    "StripeTransientError",
    "account_resources",
    "canonical_json",
    "classify_response",
    "encode_form",
    "is_loopback",
    "mask_key",
    "result_file",
    "shared_rate_limiter",
    "to_unix_seconds",
    "validate_api_base",
    "validate_secret_key",
]
