"""Deferrable waiting: poll Stripe from the triggerer without blocking its event loop."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_provider_reportruns._compat import BaseTrigger, TriggerEvent
from airflow_provider_reportruns.client import ReportRunStatus, StripeError
from airflow_provider_reportruns.triggers.events import error_event
from airflow_provider_reportruns.triggers.poller import AccountPoller, ReportRunPoller, RunWait, Wait, poller_for
from airflow_provider_reportruns.waiting import run_outcome, waits_through

if TYPE_CHECKING:
    from airflow_provider_reportruns.client import StripeReportingClient

__all__ = [
    "SharedConnection",
    "StripePollingTrigger",
    "StripeReportRunTrigger",
    "get_shared_client",
    "get_shared_connection",
]

# One client per connection per process: a triggerer with a thousand waits shares one session,
# one connection pool and one rate limiter instead of building a thousand. Keyed by a digest of
# the connection's contents, so an edited connection (new key, host or extras) gets a new client.
_clients: dict[str, StripeReportingClient] = {}


class SharedConnection(NamedTuple):
    """What a trigger needs from its connection: the process's client for it, and whether its
    waits share a poller (the ``coalesce_waits`` extra)."""

    client: StripeReportingClient
    coalesce_waits: bool


def _client_for(stripe_conn_id: str) -> StripeReportingClient:
    from airflow_provider_reportruns.hooks.stripe import StripeReportingHook

    hook = StripeReportingHook(stripe_conn_id)
    try:
        conn = hook.get_connection(stripe_conn_id)
    except Exception:
        return hook.client  # raises the hook's own message (missing connection, …)
    digest = hashlib.sha256(
        json.dumps([stripe_conn_id, conn.host, conn.port, conn.password, conn.extra_dejson], sort_keys=True).encode()
    ).hexdigest()
    client = _clients.get(digest)
    if client is None:
        client = _clients[digest] = hook.client
    return client


def _shared_for(stripe_conn_id: str) -> SharedConnection:
    from airflow_provider_reportruns.hooks.stripe import StripeReportingHook, coalesce_waits

    client = _client_for(stripe_conn_id)  # raises for a missing or malformed connection
    extra = StripeReportingHook(stripe_conn_id).get_connection(stripe_conn_id).extra_dejson
    return SharedConnection(client, coalesce_waits(extra, f"connection '{stripe_conn_id}'"))


# Lookups under way, per event loop and connection id: triggers that start together (a triggerer
# picking up a thousand deferred tasks) share one lookup instead of queueing a thousand on
# asgiref's single thread while the loop pays for each hand-off (measured: a 150-250 ms stall).
_lookups: dict[tuple[int, str], asyncio.Task[SharedConnection]] = {}


async def get_shared_connection(stripe_conn_id: str) -> SharedConnection:
    """The process's client for ``stripe_conn_id`` and its wait settings, looked up off the event loop.

    ``sync_to_async`` runs lookups one at a time in one thread (Airflow 3's triggerer requires
    connections to be read that way). A trigger starting while a lookup for the same connection
    is under way awaits that one; a later start looks again, so an edited connection is seen.
    """
    from asgiref.sync import sync_to_async

    loop = asyncio.get_running_loop()
    key = (id(loop), stripe_conn_id)
    lookup = _lookups.get(key)
    if lookup is None:
        lookup = loop.create_task(sync_to_async(_shared_for)(stripe_conn_id))
        _lookups[key] = lookup
        lookup.add_done_callback(lambda _: _lookups.pop(key, None))
    return await asyncio.shield(lookup)


async def get_shared_client(stripe_conn_id: str) -> StripeReportingClient:
    """The process's client for ``stripe_conn_id`` (see :func:`get_shared_connection`)."""
    return (await get_shared_connection(stripe_conn_id)).client


class StripePollingTrigger(BaseTrigger):
    """Shared loop: check every ``poll_interval`` seconds until the wait is over or the deadline
    passes. Stripe errors are judged by the wait model's one rule
    (:func:`~airflow_provider_reportruns.waiting.waits_through`): errors that may pass
    (connection, 429, 5xx) keep the wait going; any other ends it with an ``error`` event that
    carries the error's kind.

    With ``coalesce`` (or the connection's ``coalesce_waits`` extra when ``coalesce`` is ``None``)
    the wait registers with its account's poller in this event loop, which answers many waits
    with one list request (see :mod:`~airflow_provider_reportruns.triggers.poller`); otherwise it
    polls on its own with :meth:`check`. The events are the same either way.

    ``first_poll_at`` (Unix seconds) holds the first poll back: the task that defers has just
    seen the status itself, so asking again at once would be a request repeated without need.
    """

    poller_class: type[AccountPoller[Any]]

    def __init__(
        self,
        *,
        stripe_conn_id: str,
        poll_interval: float,
        end_time: float | None,
        first_poll_at: float | None = None,
        coalesce: bool | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger.__init__ has no annotations
        self.stripe_conn_id = stripe_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = float(end_time) if end_time is not None else None
        self.first_poll_at = float(first_poll_at) if first_poll_at is not None else None
        self.coalesce = bool(coalesce) if coalesce is not None else None
        # The poller and the wait while registered, for cleanup() (Airflow 3 calls it on removal).
        self._registration: tuple[AccountPoller[Any], Wait] | None = None

    def _common_kwargs(self) -> dict[str, Any]:
        return {
            "stripe_conn_id": self.stripe_conn_id,
            "poll_interval": self.poll_interval,
            "end_time": self.end_time,
            "first_poll_at": self.first_poll_at,
            "coalesce": self.coalesce,
        }

    async def check(self, client: StripeReportingClient) -> tuple[dict[str, Any] | None, str]:
        """One poll on its own: an event payload when the wait is over, else ``None``; plus the status seen."""
        raise NotImplementedError

    def new_wait(self) -> Wait:
        """This trigger's registration with its account's poller."""
        raise NotImplementedError

    def finished_event(self, seen: dict[str, Any]) -> dict[str, Any]:
        """The event payload for the Stripe object that ended the wait."""
        raise NotImplementedError

    def timeout_event(
        self, last_status: str | None, waited: float, last_seen: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.time()
        try:
            shared = await get_shared_connection(self.stripe_conn_id)
        except StripeError as exc:
            yield TriggerEvent(error_event(exc))
            return
        coalesce = shared.coalesce_waits if self.coalesce is None else self.coalesce
        if coalesce:
            payload = await self._wait_with_poller(shared.client, started)
        else:
            payload = await self._wait_alone(shared.client, started)
        yield TriggerEvent(payload)

    async def cleanup(self) -> None:
        """Leave the poller at once: the triggerer is done with this trigger (the task was
        cleared, the trigger cancelled, or it fired)."""
        registration, self._registration = self._registration, None
        if registration is not None:
            poller, wait = registration
            poller.unregister(wait)
        await super().cleanup()

    async def _wait_with_poller(self, client: StripeReportingClient, started: float) -> dict[str, Any]:
        poller = poller_for(self.poller_class, client)
        wait = self.new_wait()
        poller.register(wait, client)
        self._registration = (poller, wait)
        try:
            while True:
                for note in await wait.news():
                    self.log.warning("%s", note)
                if wait.outcome.done():
                    break
        finally:
            self._registration = None
            poller.unregister(wait)
        try:
            seen = wait.outcome.result()
        except Exception as exc:
            return error_event(exc)
        if seen is None:
            return self.timeout_event(wait.last_status, time.time() - started, wait.last_seen)
        return self.finished_event(seen)

    async def _wait_alone(self, client: StripeReportingClient, started: float) -> dict[str, Any]:
        last_status: str | None = None
        if self.first_poll_at is not None:
            hold = self.first_poll_at - time.time()
            if self.end_time is not None:
                hold = min(hold, self.end_time - time.time())
            if hold > 0:  # after a triggerer restart the moment has usually passed: poll at once
                await asyncio.sleep(hold)
        while True:
            try:
                payload, last_status = await self.check(client)
            except StripeError as exc:
                if not waits_through(exc):
                    return error_event(exc)
                self.log.warning("Stripe did not answer this poll; still waiting: %s", exc)
            else:
                if payload is not None:
                    return payload
            now = time.time()
            if self.end_time is not None and now >= self.end_time:
                return self.timeout_event(last_status, now - started)
            delay = self.poll_interval
            if self.end_time is not None:
                delay = min(delay, max(self.end_time - now, 0.0))
            await asyncio.sleep(delay)


class StripeReportRunTrigger(StripePollingTrigger):
    """Wait for a report run to reach ``succeeded`` or ``failed``.

    Emits one event: ``{"status": "succeeded" | "failed", "report_run": …}``,
    ``{"status": "timeout", "last_status": …}`` or ``{"status": "error", "message": …,
    "error_kind": "permanent" | "data_not_ready" | "transient" | None}``.
    It only reads the run: re-created from :meth:`serialize` after a triggerer restart, it
    resumes the same wait and never creates a run.

    :param report_run_id: the ``frr_…`` id to watch.
    :param stripe_conn_id: the Airflow connection; the key itself is never serialized.
    :param poll_interval: seconds between polls.
    :param end_time: give up at this Unix time (seconds, float), or never when ``None``.
    :param first_poll_at: Unix time of the first poll (``None``: at once).
    :param coalesce: share the account's poller (``True``), poll this run on its own
        (``False``), or do as the connection's ``coalesce_waits`` extra says (``None``, on by default).
    :param created: the run's ``created`` (Unix seconds), which places it in Stripe's run list;
        without it the poller retrieves the run by id once to learn it.
    """

    poller_class = ReportRunPoller

    def __init__(
        self,
        report_run_id: str,
        stripe_conn_id: str = "stripe_default",
        poll_interval: float = 30.0,
        end_time: float | None = None,
        first_poll_at: float | None = None,
        coalesce: bool | None = None,
        created: int | None = None,
    ) -> None:
        super().__init__(
            stripe_conn_id=stripe_conn_id,
            poll_interval=poll_interval,
            end_time=end_time,
            first_poll_at=first_poll_at,
            coalesce=coalesce,
        )
        self.report_run_id = report_run_id
        self.created = int(created) if created is not None else None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"report_run_id": self.report_run_id, **self._common_kwargs(), "created": self.created},
        )

    def new_wait(self) -> RunWait:
        return RunWait(
            self.report_run_id,
            created=self.created,
            poll_interval=self.poll_interval,
            first_poll_at=self.first_poll_at,
            end_time=self.end_time,
        )

    def finished_event(self, seen: dict[str, Any]) -> dict[str, Any]:
        return {"status": run_outcome(seen), "report_run_id": self.report_run_id, "report_run": seen}

    async def check(self, client: StripeReportingClient) -> tuple[dict[str, Any] | None, str]:
        run = await client.arequest("get_report_run", self.report_run_id)
        status = str(run.get("status"))
        if run_outcome(run) is not None:
            return self.finished_event(run), status
        if not ReportRunStatus.is_known(status):
            self.log.warning(
                "Report run %s has status %r, unknown to this provider; waiting on.", self.report_run_id, status
            )
        return None, status

    def timeout_event(
        self, last_status: str | None, waited: float, last_seen: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "status": "timeout",
            "report_run_id": self.report_run_id,
            "last_status": last_status,
            "message": (
                f"Stripe report run {self.report_run_id} did not finish in time: last status {last_status!r} "
                f"after waiting {waited:.0f} s."
            ),
        }
