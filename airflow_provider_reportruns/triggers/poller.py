"""One poller per Stripe account in the triggerer: the deferred waits of an account share its requests.

Polling each wait on its own costs one request per wait per poll interval: a thousand waits at
30 s are 33 requests a second, over Stripe's test-mode limit. Stripe's run list returns whole
report run objects, a hundred to a page, newest first; the report type list carries every type's
``data_available_end``. So every wait of one account in one event loop registers with one
poller, which answers the waits that are due with as few requests as it can and hands each wait
its own outcome. Each wait keeps its own poll interval, first poll and deadline: the poller only
decides how to ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import time
import weakref
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from airflow_provider_reportruns.client import ReportRunStatus, StripeError
from airflow_provider_reportruns.waiting import data_covers, run_outcome, waits_through

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from airflow_provider_reportruns.client import AccountResources, StripeReportingClient

__all__ = [
    "LIST_PAGE_SIZE",
    "SETTLE_SECONDS",
    "AccountPoller",
    "DataWait",
    "ReportDataPoller",
    "ReportRunPoller",
    "RunWait",
    "Wait",
    "active_pollers",
    "poller_for",
]

log = logging.getLogger(__name__)

# Stripe's largest page.
LIST_PAGE_SIZE = 100
# Waits that register together (a triggerer picking up many deferred tasks at once) wait this
# long for each other, so one cycle answers them all instead of one cycle each.
SETTLE_SECONDS = 0.05

W = TypeVar("W", bound="Wait")
P = TypeVar("P", bound="AccountPoller[Any]")


class Wait:
    """One deferred wait registered with a poller: when it is due, until when, and how it ended.

    The poller resolves :attr:`outcome` with the Stripe object that ended the wait, with ``None``
    when the deadline passed first, or with the exception that ended it. Warnings meant for the
    waiting task's own log are queued as notes (see :meth:`news`): the poller's task is not the
    trigger's, so it does not log them itself.

    :param key: what the wait watches: a report run id or a report type id.
    :param poll_interval: the wait is never checked later than this many seconds after its last check.
    :param first_poll_at: Unix time of its first check (``None``: at once).
    :param end_time: Unix time it gives up (``None``: never).
    """

    def __init__(self, key: str, *, poll_interval: float, first_poll_at: float | None, end_time: float | None) -> None:
        self.key = key
        self.poll_interval = poll_interval
        self.end_time = end_time
        first = first_poll_at if first_poll_at is not None else time.time()
        self.due_at = min(first, end_time) if end_time is not None else first
        # A page may show the run finished before the wait's own first poll. The outcome is held
        # until then, as a wait polled on its own would have found it: a trigger that fires
        # within seconds of deferring races the deferring task's exit in Airflow and gets it retried.
        self.hold_until = self.due_at if first_poll_at is not None else -math.inf
        self._held: asyncio.TimerHandle | None = None
        self.last_seen: dict[str, Any] | None = None
        self.last_status: str | None = None
        self.outcome: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._notes: list[str] = []
        self._news = asyncio.Event()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key} due {self.due_at:.1f}>"

    @property
    def done(self) -> bool:
        """Whether the wait has its outcome (perhaps held until its first poll's time)."""
        return self._held is not None or self.outcome.done()

    def close(self) -> None:
        """Drop an outcome still held: the wait left the poller."""
        if self._held is not None:
            self._held.cancel()

    def checked(self, seen: dict[str, Any], status: str, at: float) -> None:
        """The poller saw the object at ``at`` (a cycle's start) and the wait goes on."""
        self.last_seen = seen
        self.last_status = status
        self.reschedule(at)

    def reschedule(self, at: float) -> None:
        """Next check one interval after ``at``, and at the deadline at the latest."""
        due = at + self.poll_interval
        self.due_at = min(due, self.end_time) if self.end_time is not None else due

    def expire(self, now: float) -> None:
        """End the wait with ``None`` (a timeout) when its deadline has passed."""
        if not self.done and self.end_time is not None and now >= self.end_time:
            self._settle(lambda: self.outcome.set_result(None))

    def resolve(self, seen: dict[str, Any]) -> None:
        self.last_seen = seen
        self._settle(lambda: self.outcome.set_result(seen))

    def fail(self, exc: BaseException) -> None:
        self._settle(lambda: self.outcome.set_exception(exc))

    def note(self, message: str) -> None:
        self._notes.append(message)
        self._news.set()

    async def news(self) -> list[str]:
        """Wait for a note or the outcome; the notes queued since the last call."""
        await self._news.wait()
        self._news.clear()
        notes, self._notes = self._notes, []
        return notes

    def _settle(self, set_outcome: Callable[[], None]) -> None:
        if self.done:
            return
        hold = self.hold_until - time.time()
        if hold > 0:
            self._held = asyncio.get_running_loop().call_later(hold, self._release, set_outcome)
        else:
            self._release(set_outcome)

    def _release(self, set_outcome: Callable[[], None]) -> None:
        if not self.outcome.done():
            set_outcome()
            self._news.set()


class RunWait(Wait):
    """A wait for report run ``key`` to finish.

    :param created: the run's ``created`` (Unix seconds), which places it in the run list;
        ``None`` (a trigger serialized by an older version) until a retrieve by id tells it.
    """

    def __init__(self, key: str, *, created: int | None, **kwargs: Any) -> None:
        super().__init__(key, **kwargs)
        self.created = created


class DataWait(Wait):
    """A wait for report type ``key`` to have data through ``interval_end``."""

    def __init__(self, key: str, *, interval_end: int, **kwargs: Any) -> None:
        super().__init__(key, **kwargs)
        self.interval_end = interval_end


class AccountPoller(Generic[W]):
    """The waits of one Stripe account in one event loop, and the task that answers them.

    The task sleeps until the earliest wait is due, then runs one cycle for every wait due by
    then, and stops when the last wait leaves. A cycle that Stripe does not answer (connection
    error, 429 or 5xx after the client's own retries) holds the whole poller back one interval,
    not each wait separately; every request goes through the account's rate limiter.

    :param client: the account's client; the newest wait to register brings the client used.
    """

    kind: ClassVar[str] = "waits"

    def __init__(self, client: StripeReportingClient) -> None:
        self.client = client
        self.cycles = 0
        self._waits: dict[str, list[W]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self._waits)} {self.kind}>"

    def register(self, wait: W, client: StripeReportingClient) -> None:
        """Start answering ``wait``; the poller's task starts with its first wait."""
        self.client = client
        self._waits.setdefault(wait.key, []).append(wait)
        self._wake.set()
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            # An empty context: the task must not log as the trigger that happened to start it.
            self._task = contextvars.Context().run(loop.create_task, self._run())

    def unregister(self, wait: W) -> None:
        """Forget ``wait`` at once (its trigger ended or was cancelled); stop with the last one."""
        wait.close()
        waits = self._waits.get(wait.key)
        if waits is not None and wait in waits:
            waits.remove(wait)
            if not waits:
                del self._waits[wait.key]
        if not self._waits:
            if self._task is not None:
                self._task.cancel()
                self._task = None
            _forget(self)

    def pending(self, key: str | None = None) -> list[W]:
        """The waits not yet resolved (of ``key`` only, when given)."""
        groups = self._waits.values() if key is None else [self._waits.get(key, [])]
        return [wait for group in groups for wait in group if not wait.done]

    async def _run(self) -> None:
        while True:
            pending = self.pending()
            now = time.time()
            next_due = min((wait.due_at for wait in pending), default=math.inf)
            if next_due > now:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), None if next_due == math.inf else next_due - now)
                if self._wake.is_set():
                    await asyncio.sleep(SETTLE_SECONDS)
                continue
            due = [wait for wait in pending if wait.due_at <= now]
            self.cycles += 1
            try:
                await self.cycle(due, pending, now)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must end the waits it hit, not hang them all
                log.exception("The Stripe %s poller failed a cycle.", self.kind)
                for wait in due:
                    wait.fail(exc)
            finished = time.time()
            for wait in due:
                if not wait.done and wait.due_at <= now:  # not reached this cycle
                    wait.reschedule(now)
                wait.expire(finished)

    async def cycle(self, due: list[W], pending: list[W], now: float) -> None:
        """Check every wait in ``due`` (``pending`` may be checked too, for free), resolving those
        that ended and rescheduling the rest from ``now``."""
        raise NotImplementedError

    def waited_through(self, waits: Iterable[W], exc: StripeError, now: float) -> None:
        """Stripe did not answer for these waits: they note it and wait one more interval."""
        for wait in waits:
            wait.note(f"Stripe did not answer this poll; still waiting: {exc}")
            wait.reschedule(now)

    async def by_id(self, keys: Iterable[str], method: str, now: float) -> None:
        """Ask for each of ``keys`` on its own (``client.<method>(key)``), together."""

        async def one(key: str) -> None:
            try:
                seen = await self.client.arequest(method, key)
            except StripeError as exc:
                if waits_through(exc):
                    self.waited_through(self.pending(key), exc, now)
                    return
                for wait in self.pending(key):
                    wait.fail(exc)
                return
            except ValueError as exc:  # an id the client refuses before any request
                for wait in self.pending(key):
                    wait.fail(exc)
                return
            self.seen(key, seen, now)

        await asyncio.gather(*(one(key) for key in keys))

    def seen(self, key: str, seen: dict[str, Any], now: float) -> None:
        """Stripe's current object for ``key``: resolve or reschedule its waits."""
        raise NotImplementedError


class ReportRunPoller(AccountPoller[RunWait]):
    """Answers report run waits from ``GET /v1/reporting/report_runs`` pages.

    Each cycle lists the account's runs created at or after the oldest due wait's run, newest
    first, a hundred to a page, and follows the pages while some of the due runs still unseen
    can be reached in fewer pages than there are such runs (see :func:`_next_page_pays`); those
    it did not reach (one old run behind thousands of newer ones) are retrieved by id. A page only pays when it
    can answer at least two runs: a lone wait is retrieved by id, as it would be on its own.
    """

    kind = "report run waits"

    def __init__(self, client: StripeReportingClient) -> None:
        super().__init__(client)
        self.may_list = True

    async def cycle(self, due: list[RunWait], pending: list[RunWait], now: float) -> None:
        unseen = {wait.key for wait in due}
        dated = {wait.key: wait.created for wait in pending if wait.created is not None}
        listable = {key for key in unseen if key in dated}
        if self.may_list and len(dated) >= 2 and listable:
            try:
                unseen -= await self._list(listable, dated, now)
            except StripeError as exc:
                if waits_through(exc):
                    # Hold the whole poller back: no retrieves fired into a rate limit or an outage.
                    self.waited_through(due, exc, now)
                    return
                log.warning("Stripe refused the report run list (%s); checking each run by id from now on.", exc)
                self.may_list = False
        await self.by_id(sorted(unseen), "get_report_run", now)

    async def _list(self, wanted: set[str], dated: dict[str, int], now: float) -> set[str]:
        """Page through the run list until every run in ``wanted`` is seen, or retrieving the rest
        by id is cheaper than the pages still expected; the ids of the waited-for runs seen."""
        remaining = set(wanted)
        seen: set[str] = set()
        floor = min(dated[key] for key in remaining)
        cursor: str | None = None
        newest: int | None = None
        pages = 0
        while remaining:
            page = await self.client.arequest(
                "list_report_runs", created={"gte": floor}, limit=LIST_PAGE_SIZE, starting_after=cursor
            )
            pages += 1
            runs = [run for run in page.get("data") or [] if isinstance(run, dict)]
            for run in runs:
                run_id = run.get("id")
                if isinstance(run_id, str) and run_id in self._waits:
                    self.seen(run_id, run, now)
                    seen.add(run_id)
                    remaining.discard(run_id)
            if not page.get("has_more") or not runs or not remaining:
                break
            cursor = str(runs[-1]["id"])
            reached = int(runs[-1].get("created") or floor)
            newest = int(runs[0].get("created") or reached) if newest is None else newest
            if not _next_page_pays(pages, newest, reached, [dated[key] for key in remaining]):
                break
        return seen

    def seen(self, key: str, seen: dict[str, Any], now: float) -> None:
        status = str(seen.get("status"))
        created = seen.get("created")
        finished = run_outcome(seen) is not None
        for wait in self.pending(key):
            if wait.created is None and isinstance(created, int):
                wait.created = created
            if finished:
                wait.resolve(seen)
                continue
            wait.checked(seen, status, now)
            if not ReportRunStatus.is_known(status):
                wait.note(f"Report run {key} has status {status!r}, unknown to this provider; waiting on.")


def _next_page_pays(pages: int, newest: int, reached: int, remaining_created: list[int]) -> bool:
    """Whether listing on beats retrieving the unseen runs by id, for some of them.

    The pages so far say how many seconds of the account's runs a page holds. Listing down to
    the k-th newest unseen run costs the pages to get there and answers k runs; the runs beyond
    are retrieved by id either way. So another page pays when, for some k, fewer than k pages
    reach the k-th newest: a thousand waits spread over twenty pages are listed, and the one run
    a day older than the rest is retrieved, without either deciding for the other.
    """
    seconds_per_page = max(newest - reached, 1) / pages
    # Runs created after the last page's oldest were on the pages already or are not listed
    # under this cursor: no page reaches them.
    reachable = sorted((created for created in remaining_created if created <= reached), reverse=True)
    return any(
        max(1, math.ceil((reached - created) / seconds_per_page)) < k for k, created in enumerate(reachable, start=1)
    )


class ReportDataPoller(AccountPoller[DataWait]):
    """Answers data waits from one ``GET /v1/reporting/report_types`` per cycle, which carries
    every type's ``data_available_end``; waits on a single report type ask for that type alone."""

    kind = "data waits"

    def __init__(self, client: StripeReportingClient) -> None:
        super().__init__(client)
        self.may_list = True

    async def cycle(self, due: list[DataWait], pending: list[DataWait], now: float) -> None:
        unseen = {wait.key for wait in due}
        if self.may_list and len({wait.key for wait in pending}) >= 2:
            try:
                listed = await self.client.arequest("list_report_types")
            except StripeError as exc:
                if waits_through(exc):
                    self.waited_through(due, exc, now)
                    return
                log.warning("Stripe refused the report type list (%s); checking each type by id from now on.", exc)
                self.may_list = False
                listed = []
            for report_type in listed:
                type_id = report_type.get("id")
                if isinstance(type_id, str) and type_id in self._waits:
                    self.seen(type_id, report_type, now)
                    unseen.discard(type_id)
        await self.by_id(sorted(unseen), "get_report_type", now)

    def seen(self, key: str, seen: dict[str, Any], now: float) -> None:
        status = f"available through {seen.get('data_available_end')}"
        for wait in self.pending(key):
            if data_covers(seen, wait.interval_end):
                wait.resolve(seen)
            else:
                wait.checked(seen, status, now)


# Per event loop (a triggerer has one; tests start many), per poller kind and account.
_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, AccountResources], Any]] = (
    weakref.WeakKeyDictionary()
)


def poller_for(kind: type[P], client: StripeReportingClient) -> P:
    """The running loop's ``kind`` poller for ``client``'s account, made on first use. Accounts
    are told apart by the client's shared account resources, which hold no key."""
    loop = asyncio.get_running_loop()
    pollers = _pollers.setdefault(loop, {})
    key = (kind.__qualname__, client.account)
    poller = pollers.get(key)
    if poller is None:
        poller = pollers[key] = kind(client)
    return poller


def active_pollers() -> list[AccountPoller[Any]]:
    """The running loop's pollers that still have waits registered."""
    return list(_pollers.get(asyncio.get_running_loop(), {}).values())


def _forget(poller: AccountPoller[Any]) -> None:
    with contextlib.suppress(RuntimeError):
        pollers = _pollers.get(asyncio.get_running_loop(), {})
        for key, known in list(pollers.items()):
            if known is poller:
                del pollers[key]
