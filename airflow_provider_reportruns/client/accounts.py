"""What clients share within a process, one set per Stripe account.

Stripe counts its limits per account, and a slow or rate-limited account must not hold up
another: so the rate limiter and the worker threads behind ``arequest`` are kept per account
(API base, key and connected account), never process-wide. Keys are only ever held as digests
here.
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING

from airflow_provider_reportruns.client.limiter import RateLimiter

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["ASYNC_POOL_THREADS", "AccountResources", "account_resources", "shared_rate_limiter"]

# Per account: enough threads to keep well over Stripe's rate limits busy at loopback or WAN
# latencies.
ASYNC_POOL_THREADS = 16


class AccountResources:
    """The rate limiter and the worker threads that every client of one account in this process
    shares.

    :param rate: the limiter's ``max_requests_per_second``.
    """

    def __init__(self, rate: float) -> None:
        self.rate_limiter = RateLimiter(rate)
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The threads that run this account's blocking calls for ``arequest``, started on first use."""
        with self._lock:
            if self._executor is None:
                from concurrent.futures import ThreadPoolExecutor

                self._executor = ThreadPoolExecutor(
                    max_workers=ASYNC_POOL_THREADS, thread_name_prefix="stripe-reporting"
                )
            return self._executor


_accounts: dict[str, AccountResources] = {}
_accounts_lock = threading.Lock()


def account_resources(api_base: str, api_key: str, stripe_account: str | None, rate: float) -> AccountResources:
    """The process-wide resources of one Stripe account at one API host.

    Every hook and trigger in a process that uses the same key (and connected account) gets the
    same ones. The newest configured rate wins.
    """
    fingerprint = hashlib.sha256(f"{api_base}\0{api_key}\0{stripe_account or ''}".encode()).hexdigest()
    with _accounts_lock:
        resources = _accounts.get(fingerprint)
        if resources is None:
            resources = _accounts[fingerprint] = AccountResources(rate)
        elif resources.rate_limiter.rate != rate:
            resources.rate_limiter.rate = rate
        return resources


def shared_rate_limiter(api_base: str, api_key: str, stripe_account: str | None, rate: float) -> RateLimiter:
    """The process-wide limiter for one Stripe account at one API host (see :func:`account_resources`)."""
    return account_resources(api_base, api_key, stripe_account, rate).rate_limiter
