"""The deferrable triggers run as the triggerer runs them: ``run()`` coroutines in one event loop,
polling the simulator over HTTP through the process's shared client and rate limiter."""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _sim import sim, start_sim, stripe_conn  # noqa: F401

from airflow_provider_reportruns.testing.simulator import Fault, StripeSimulator
from airflow_provider_reportruns.triggers import report_run as report_run_triggers
from airflow_provider_reportruns.triggers.report_run import StripeReportRunTrigger
from airflow_provider_reportruns.triggers.report_type import StripeReportDataAvailableTrigger

UTC = dt.timezone.utc
MAR_1 = int(dt.datetime(2024, 3, 1, tzinfo=UTC).timestamp())
MAR_2 = int(dt.datetime(2024, 3, 2, tzinfo=UTC).timestamp())
RECOGNISABLE_KEY = "sk_test_TriggerKeyMustNeverBeSerialized4242"


@pytest.fixture(autouse=True)
def fresh_shared_clients() -> Iterator[None]:
    """Triggers share one client per connection per process; each test starts without one."""
    report_run_triggers._clients.clear()
    yield
    report_run_triggers._clients.clear()


def create_runs_at(url: str, api_key: str, count: int) -> list[str]:
    """Runs made with plain HTTP: the setup stays out of the provider's rate limiter and clients."""
    import requests

    form = {"report_type": "balance.summary.1", "parameters[interval_start]": MAR_1, "parameters[interval_end]": MAR_2}
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {api_key}"
        return [session.post(f"{url}/v1/reporting/report_runs", data=form).json()["id"] for _ in range(count)]


def create_runs(simulator: StripeSimulator, count: int = 1) -> list[str]:
    ids = create_runs_at(simulator.url, simulator.api_key, count)
    simulator.clear_requests()
    return ids


def events_of(trigger: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Run one trigger to its end in a fresh event loop; the payloads it yielded."""

    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), timeout))


def import_class(classpath: str) -> Any:
    """What the triggerer does with a serialized classpath."""
    import importlib

    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)


def retrieves(simulator: StripeSimulator, run_id: str | None = None) -> list[Any]:
    return [r for r in simulator.requests() if r.kind == "retrieve" and (run_id is None or r.run_id == run_id)]


# ---------------------------------------------------------------------------------------------
# serialize()


def _primitives_only(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _primitives_only(v) for k, v in value.items())
    return value is None or isinstance(value, (str, int, float, bool))


@pytest.mark.parametrize(
    "make",
    [
        lambda run_id: StripeReportRunTrigger(run_id, poll_interval=0.1, end_time=time.time() + 30),
        lambda run_id: StripeReportDataAvailableTrigger("balance.summary.1", MAR_2, poll_interval=0.1),
    ],
    ids=["report-run", "data-available"],
)
def test_serialize_round_trips_through_primitives_and_never_holds_the_key(start_sim, make) -> None:
    simulator = start_sim(api_key=RECOGNISABLE_KEY)
    [run_id] = create_runs(simulator)
    trigger = make(run_id)
    assert events_of(trigger)[0]["status"] in ("succeeded", "available")  # it has used the key by now

    classpath, kwargs = trigger.serialize()

    assert import_class(classpath) is type(trigger)
    assert _primitives_only(kwargs)
    assert RECOGNISABLE_KEY not in json.dumps([classpath, kwargs])
    assert RECOGNISABLE_KEY not in repr(trigger.__dict__)
    assert type(trigger)(**kwargs).serialize() == (classpath, kwargs)


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        (
            StripeReportRunTrigger(
                "frr_1",
                stripe_conn_id="stripe_eu",
                poll_interval=7.5,
                end_time=1700000600.5,
                first_poll_at=1700000010.0,
            ),
            (
                "airflow_provider_reportruns.triggers.report_run.StripeReportRunTrigger",
                {
                    "report_run_id": "frr_1",
                    "stripe_conn_id": "stripe_eu",
                    "poll_interval": 7.5,
                    "end_time": 1700000600.5,
                    "first_poll_at": 1700000010.0,
                    "coalesce": None,
                    "created": None,
                },
            ),
        ),
        (
            StripeReportDataAvailableTrigger(
                "balance.summary.1",
                MAR_2,
                stripe_conn_id="stripe_eu",
                poll_interval=600.0,
                end_time=1700000600.5,
                first_poll_at=None,
            ),
            (
                "airflow_provider_reportruns.triggers.report_type.StripeReportDataAvailableTrigger",
                {
                    "report_type": "balance.summary.1",
                    "interval_end": MAR_2,
                    "stripe_conn_id": "stripe_eu",
                    "poll_interval": 600.0,
                    "end_time": 1700000600.5,
                    "first_poll_at": None,
                    "coalesce": None,
                },
            ),
        ),
    ],
    ids=["report-run", "data-available"],
)
def test_serialize_gives_exactly_the_complete_kwargs(trigger: Any, expected: tuple[str, dict[str, Any]]) -> None:
    assert trigger.serialize() == expected


@pytest.mark.parametrize("kind", ["report-run", "data-available"])
def test_a_trigger_rebuilt_from_serialize_still_ends_at_its_deadline(start_sim, kind: str) -> None:
    simulator = start_sim(run_delay=3600.0, data_available_end=MAR_2 - (3600 if kind == "data-available" else 0))
    if kind == "report-run":
        [run_id] = create_runs(simulator)
        first: Any = StripeReportRunTrigger(run_id, poll_interval=0.1, end_time=time.time() + 1.0)
    else:
        first = StripeReportDataAvailableTrigger(
            "balance.summary.1", MAR_2, poll_interval=0.1, end_time=time.time() + 1.0
        )
    classpath, kwargs = first.serialize()
    rebuilt = import_class(classpath)(**kwargs)

    [event] = events_of(rebuilt, timeout=10.0)  # a lost end_time would wait for ever

    assert event["status"] == "timeout"


def test_the_http_call_runs_off_the_event_loop_even_when_stripe_is_slow(start_sim) -> None:
    # Each status check takes 1.5 s at the simulator: a call made on the loop would stop the
    # ticker below for that long (loopback alone answers too fast to show it).
    simulator = start_sim(run_delay=3600.0, faults=[Fault("retrieve", "slow", delay=1.5, times=1)])
    [run_id] = create_runs(simulator)
    gaps: list[float] = []

    async def tick_while_polling() -> None:
        trigger = StripeReportRunTrigger(run_id, poll_interval=0.1, end_time=time.time() + 2.5)
        waiting = asyncio.ensure_future(trigger.run().__anext__())
        last = time.monotonic()
        while not waiting.done():
            await asyncio.sleep(0.02)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
        await waiting

    asyncio.run(asyncio.wait_for(tick_while_polling(), 30))

    [slow] = [r for r in retrieves(simulator) if r.fault == "slow"]
    assert slow.duration >= 1.4
    assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.2f} s during a request"


def test_a_trigger_recreated_from_serialize_resumes_the_same_run_and_never_creates_one(start_sim) -> None:
    simulator = start_sim(run_delay=3600.0)
    [run_id] = create_runs(simulator)

    polled_before_restart: list[int] = []

    async def restart_midway() -> list[dict[str, Any]]:
        first = StripeReportRunTrigger(run_id, poll_interval=0.1)
        waiting = asyncio.ensure_future(first.run().__anext__())
        while len(retrieves(simulator, run_id)) < 2:
            await asyncio.sleep(0.02)
        waiting.cancel()  # the triggerer went away
        await asyncio.sleep(0.15)
        polled_before_restart.append(len(retrieves(simulator, run_id)))
        classpath, kwargs = first.serialize()
        second = import_class(classpath)(**kwargs)
        asyncio.get_running_loop().call_later(0.3, simulator.finish_report_run, run_id)
        return [event.payload async for event in second.run()]

    events = asyncio.run(asyncio.wait_for(restart_midway(), 30))

    assert [(e["status"], e["report_run_id"]) for e in events] == [("succeeded", run_id)]
    assert events[0]["report_run"]["result"]["url"]
    kinds = {r.kind for r in simulator.requests()}
    assert kinds == {"retrieve"}, "the trigger only reads the run"
    assert len(simulator.report_runs()) == 1
    assert len(retrieves(simulator, run_id)) > polled_before_restart[0], "the new trigger polled the same run"


# ---------------------------------------------------------------------------------------------
# Events


def test_a_succeeded_run_gives_a_succeeded_event_with_the_run(stripe_conn) -> None:
    [run_id] = create_runs(stripe_conn)

    [event] = events_of(StripeReportRunTrigger(run_id, poll_interval=0.1))

    assert event["status"] == "succeeded"
    assert event["report_run_id"] == run_id
    assert event["report_run"] == stripe_conn.report_run(run_id)


def test_a_failed_run_gives_a_failed_event_carrying_stripes_error(start_sim) -> None:
    simulator = start_sim(run_delay=0.3, fail_report_types=["balance.summary.1"])
    [run_id] = create_runs(simulator)

    [event] = events_of(StripeReportRunTrigger(run_id, poll_interval=0.1))

    assert event["status"] == "failed"
    assert event["report_run_id"] == run_id
    assert event["report_run"]["error"] == simulator.failure_message


def test_a_run_that_does_not_finish_by_end_time_gives_a_timeout_event(start_sim) -> None:
    simulator = start_sim(run_delay=3600.0)
    [run_id] = create_runs(simulator)
    started = time.monotonic()

    [event] = events_of(StripeReportRunTrigger(run_id, poll_interval=0.2, end_time=time.time() + 1.0))

    assert 0.9 <= time.monotonic() - started < 3
    assert event["status"] == "timeout"
    assert event["last_status"] == "pending"
    assert (
        event["message"]
        == f"Stripe report run {run_id} did not finish in time: last status 'pending' after waiting 1 s."
    )


def test_a_non_transient_stripe_error_ends_the_wait_with_an_error_event(stripe_conn) -> None:
    [event] = events_of(StripeReportRunTrigger("frr_doesnotexist000000000", poll_interval=0.1))

    assert event["status"] == "error"
    assert event["error_kind"] == "permanent"  # so the task fails without retries, as a poke does
    assert "404" in event["message"]
    assert "No such reporting.report_run: 'frr_doesnotexist000000000'" in event["message"]


def test_a_missing_connection_gives_an_error_event_naming_it(airflow_db: None) -> None:
    [event] = events_of(StripeReportRunTrigger("frr_any", stripe_conn_id="stripe_nowhere", poll_interval=0.1))

    assert event["status"] == "error"
    assert event["error_kind"] is None
    assert "The Airflow connection 'stripe_nowhere' is not defined" in event["message"]


def test_transient_errors_are_logged_and_the_wait_goes_on(
    start_sim, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # max_retries=0: each 503 reaches the trigger, which must not give up on it.
    simulator = start_sim(extra={"max_retries": 0}, faults=[Fault("retrieve", "503", times=2)])
    [run_id] = create_runs(simulator)

    with caplog.at_level(logging.WARNING):
        [event] = events_of(StripeReportRunTrigger(run_id, poll_interval=0.1))

    assert event["status"] == "succeeded"
    polls = retrieves(simulator)
    assert [r.status for r in polls] == [503, 503, 200]
    # Airflow 2 logs through stdlib logging, Airflow 3's structlog writes to stdout.
    logged = caplog.text + capsys.readouterr().out
    for failed in polls[:2]:
        assert re.search(rf"Stripe did not answer this poll; still waiting: .*\(request {failed.request_id}\)", logged)


def test_the_data_available_trigger_fires_once_data_reaches_the_interval_end(start_sim) -> None:
    simulator = start_sim(data_available_end=MAR_2 - 3600)

    async def refresh_later() -> list[dict[str, Any]]:
        asyncio.get_running_loop().call_later(0.5, simulator.set_data_available_end, MAR_2)
        trigger = StripeReportDataAvailableTrigger("balance.summary.1", MAR_2, poll_interval=0.1)
        return [event.payload async for event in trigger.run()]

    [event] = asyncio.run(asyncio.wait_for(refresh_later(), 30))

    assert event["status"] == "available"
    assert event["report_type"]["data_available_end"] == MAR_2
    checks = [r for r in simulator.requests() if r.kind == "report_type"]
    assert len(checks) >= 3


def test_the_data_available_trigger_times_out_with_what_it_last_saw(start_sim) -> None:
    start_sim(data_available_end=MAR_2 - 3600)
    trigger = StripeReportDataAvailableTrigger(
        "balance.summary.1", MAR_2, poll_interval=0.1, end_time=time.time() + 0.5
    )

    [event] = events_of(trigger)

    assert event["status"] == "timeout"
    assert event["message"].startswith(
        f"Stripe's data for balance.summary.1 did not reach interval_end {MAR_2} in time "
        f"(available through {MAR_2 - 3600}) after waiting"
    )


# ---------------------------------------------------------------------------------------------
# Many waits in one triggerer


def busiest_second(timestamps: list[float]) -> int:
    """The most requests that arrived within any half-open window of one second."""
    times = sorted(timestamps)
    return max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))


# The simulator in a process of its own, as Stripe is: in this process its arrival timestamps
# would wait for the GIL behind 16 client threads and the event loop, tens of ms late.
SIMULATOR_PROCESS = """
import json, sys
from airflow_provider_reportruns.testing.simulator import Fault, StripeSimulator
kwargs = json.loads(sys.argv[1])
kwargs["faults"] = [Fault(**fault) for fault in kwargs.get("faults", [])]
with StripeSimulator(**kwargs) as simulator:
    print(json.dumps([simulator.url, simulator.api_key]), flush=True)
    sys.stdin.readline()
    print(json.dumps([[r.timestamp, r.kind, r.status, r.run_id] for r in simulator.requests()]), flush=True)
"""


@pytest.fixture
def simulator_process(airflow_conn: Callable[..., str]) -> Iterator[Callable[..., Any]]:
    """Factory ``(extra=..., **simulator_kwargs) -> (url, api_key, stop)``; ``stop()`` ends the
    process and returns its request log as ``[timestamp, kind, status, run_id]`` rows."""
    import subprocess
    import sys

    processes: list[subprocess.Popen[str]] = []

    def start(*, extra: dict[str, Any], **kwargs: Any) -> tuple[str, str, Callable[[], list[list[Any]]]]:
        process = subprocess.Popen(
            [sys.executable, "-c", SIMULATOR_PROCESS, json.dumps(kwargs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None and process.stdin is not None
        url, api_key = json.loads(process.stdout.readline())
        airflow_conn("stripe_default", conn_type="stripe", host=url, password=api_key, extra=extra)

        def stop() -> list[list[Any]]:
            out, _ = process.communicate("stop\n", timeout=30)
            return json.loads(out)

        return url, api_key, stop

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_two_hundred_concurrent_triggers_all_finish_under_the_rate_limit_despite_429s(simulator_process) -> None:
    rate = 50
    url, api_key, stop = simulator_process(
        extra={"max_requests_per_second": rate},
        run_delay=1.0,
        faults=[{"kind": "retrieve", "fault": "429", "rate": 0.1}],
    )
    run_ids = create_runs_at(url, api_key, 200)

    async def wait_for_all() -> list[list[dict[str, Any]]]:
        async def one(run_id: str) -> list[dict[str, Any]]:
            # Per-run polling: the load on the limiter is what this proves (coalesced: test_triggers_coalesced).
            trigger = StripeReportRunTrigger(run_id, poll_interval=0.5, coalesce=False)
            return [e.payload async for e in trigger.run()]

        return await asyncio.gather(*(one(run_id) for run_id in run_ids))

    results = asyncio.run(asyncio.wait_for(wait_for_all(), 120))
    log = stop()

    assert [[(e["status"], e["report_run_id"]) for e in events] for events in results] == [
        [("succeeded", run_id)] for run_id in run_ids
    ]
    polls = [row for row in log if row[1] != "create"]
    assert {kind for _, kind, _, _ in polls} == {"retrieve"}
    assert len([row for row in polls if row[2] == 429]) >= 10
    assert busiest_second([timestamp for timestamp, *_ in polls]) <= rate


def test_a_429_holds_back_every_waiter_sharing_the_limiter(start_sim) -> None:
    simulator = start_sim(run_delay=3600.0, extra={"max_requests_per_second": 50})
    first, second = create_runs(simulator, 2)

    async def two_waits() -> None:
        triggers = [StripeReportRunTrigger(run_id, poll_interval=0.05, coalesce=False) for run_id in (first, second)]
        tasks = [asyncio.ensure_future(t.run().__anext__()) for t in triggers]
        while len(simulator.requests()) < 6:  # both are polling steadily
            await asyncio.sleep(0.02)
        simulator.add_fault(Fault("retrieve", "429", times=1))
        while True:  # until both waiters polled again well after the 429
            requests = simulator.requests()
            limited = [r for r in requests if r.status == 429]
            if limited and {r.run_id for r in requests if r.timestamp > limited[0].timestamp + 1.0} == {first, second}:
                break
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()

    asyncio.run(asyncio.wait_for(two_waits(), 30))

    requests = simulator.requests()
    [limited] = [r for r in requests if r.status == 429]
    after = [r for r in requests if r.seq > limited.seq]
    # At most the other waiter's request already on its way; then a one-second hush for both.
    assert len([r for r in after if r.timestamp < limited.timestamp + 0.9]) <= 1
    resumed = [r for r in after if r.timestamp >= limited.timestamp + 0.9]
    assert {r.run_id for r in resumed} == {first, second}


def test_triggers_starting_together_share_one_connection_lookup_and_later_ones_look_again(
    stripe_conn, monkeypatch
) -> None:
    lookups: list[str] = []
    real_shared_for = report_run_triggers._shared_for

    def counting_shared_for(conn_id: str) -> Any:
        lookups.append(conn_id)
        return real_shared_for(conn_id)

    monkeypatch.setattr(report_run_triggers, "_shared_for", counting_shared_for)

    async def start_many(count: int) -> list[Any]:
        return await asyncio.gather(*(report_run_triggers.get_shared_client("stripe_default") for _ in range(count)))

    clients = asyncio.run(start_many(50))
    assert len(lookups) == 1
    assert all(client is clients[0] for client in clients)

    asyncio.run(start_many(1))
    assert len(lookups) == 2  # a later start reads the connection again (an edit would be seen)


# ---------------------------------------------------------------------------------------------
# first_poll_at: the task that defers has just seen the status, so the first poll waits


@pytest.mark.parametrize(
    "make",
    [
        lambda at: StripeReportRunTrigger("frr_any", poll_interval=0.1, end_time=time.time() + 60, first_poll_at=at),
        lambda at: StripeReportDataAvailableTrigger("balance.summary.1", MAR_2, poll_interval=0.1, first_poll_at=at),
    ],
    ids=["report-run", "data-available"],
)
def test_serialize_carries_first_poll_at_through_the_round_trip(make) -> None:
    at = time.time() + 12.5
    trigger = make(at)

    classpath, kwargs = trigger.serialize()

    assert kwargs["first_poll_at"] == at
    assert _primitives_only(kwargs)
    recreated = import_class(classpath)(**json.loads(json.dumps(kwargs)))  # as stored in the DB
    assert recreated.first_poll_at == at
    assert recreated.serialize() == (classpath, kwargs)
    assert make(None).serialize()[1]["first_poll_at"] is None  # None stays None: poll at once


def first_requests(simulator: StripeSimulator, make: Callable[[float | None], Any], first_poll_at: float | None):
    """Run the trigger made by ``make(first_poll_at)``; (its events, its requests, when it started)."""
    started = time.time()
    events = events_of(make(first_poll_at))
    return events, [r for r in simulator.requests() if r.kind in ("retrieve", "report_type")], started


def _run_trigger(run_id: str) -> Callable[[float | None], Any]:
    return lambda at: StripeReportRunTrigger(run_id, poll_interval=0.1, end_time=time.time() + 30, first_poll_at=at)


def _data_trigger(_: str) -> Callable[[float | None], Any]:
    return lambda at: StripeReportDataAvailableTrigger("balance.summary.1", MAR_2, poll_interval=0.1, first_poll_at=at)


@pytest.mark.parametrize("make", [_run_trigger, _data_trigger], ids=["report-run", "data-available"])
def test_a_first_poll_at_one_second_ahead_holds_the_first_request_back_that_long(stripe_conn, make) -> None:
    [run_id] = create_runs(stripe_conn)  # succeeded already: the first poll ends the wait
    at = time.time() + 1.0

    events, polls, started = first_requests(stripe_conn, make(run_id), at)

    assert [e["status"] for e in events] in (["succeeded"], ["available"])
    [poll] = polls
    assert poll.timestamp >= at - 0.02
    assert poll.timestamp - started >= 0.95


@pytest.mark.parametrize("make", [_run_trigger, _data_trigger], ids=["report-run", "data-available"])
def test_a_first_poll_at_already_past_polls_at_once(stripe_conn, make) -> None:
    # After a triggerer restart the moment has passed: no reason to wait any longer.
    [run_id] = create_runs(stripe_conn)

    events, polls, started = first_requests(stripe_conn, make(run_id), time.time() - 30)

    assert [e["status"] for e in events] in (["succeeded"], ["available"])
    [poll] = polls
    assert poll.timestamp - started < 0.5


def test_a_first_poll_at_beyond_end_time_still_ends_the_wait_at_end_time(start_sim) -> None:
    simulator = start_sim(run_delay=3600.0)
    [run_id] = create_runs(simulator)
    started = time.time()
    trigger = StripeReportRunTrigger(run_id, poll_interval=0.1, end_time=started + 0.5, first_poll_at=started + 60)

    [event] = events_of(trigger, timeout=10)

    assert time.time() - started < 2
    assert event["status"] == "timeout"
    assert event["last_status"] == "pending"  # it did look once before giving up
    assert len(retrieves(simulator, run_id)) == 1
