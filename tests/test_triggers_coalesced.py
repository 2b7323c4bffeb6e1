"""Coalesced waiting: the deferred waits of one account share one poller in the triggerer's event
loop. Real HTTP to the simulator; the triggers run as the triggerer runs them, ``run()`` coroutines
in one event loop."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _sim import start_sim  # noqa: F401

from airflow_provider_reportruns.hooks.stripe import StripeReportingError, coalesce_waits
from airflow_provider_reportruns.testing.simulator import Fault, StripeSimulator
from airflow_provider_reportruns.triggers import poller as poller_module
from airflow_provider_reportruns.triggers import report_run as report_run_triggers
from airflow_provider_reportruns.triggers.report_run import StripeReportRunTrigger
from airflow_provider_reportruns.triggers.report_type import StripeReportDataAvailableTrigger

UTC = dt.timezone.utc
MAR_1 = int(dt.datetime(2024, 3, 1, tzinfo=UTC).timestamp())
MAR_2 = int(dt.datetime(2024, 3, 2, tzinfo=UTC).timestamp())
NEVER = 10**7  # a run delay no test waits out: such runs finish when the test says so
POLLING = ("list", "retrieve", "report_types", "report_type")


@pytest.fixture(autouse=True)
def fresh_shared_clients() -> Iterator[None]:
    report_run_triggers._clients.clear()
    yield
    report_run_triggers._clients.clear()


def create_runs(simulator: StripeSimulator, count: int) -> list[tuple[str, int]]:
    """``count`` runs made with plain HTTP (outside the provider's limiter): their ids and
    ``created``, newest last; the request log starts empty afterwards."""
    import requests

    form = {"report_type": "balance.summary.1", "parameters[interval_start]": MAR_1, "parameters[interval_end]": MAR_2}
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {simulator.api_key}"
        runs = [session.post(f"{simulator.url}/v1/reporting/report_runs", data=form).json() for _ in range(count)]
    simulator.clear_requests()
    return [(run["id"], run["created"]) for run in runs]


def run_waits(runs: list[tuple[str, int]], **kwargs: Any) -> list[StripeReportRunTrigger]:
    return [StripeReportRunTrigger(run_id, created=created, **kwargs) for run_id, created in runs]


async def first_event(trigger: Any) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("the trigger ended without an event")


def all_events(triggers: list[Any], timeout: float = 30.0) -> list[dict[str, Any]]:
    """Run the triggers together in a fresh event loop; the first event of each."""

    async def together() -> list[dict[str, Any]]:
        return await asyncio.gather(*(first_event(t) for t in triggers))

    return asyncio.run(asyncio.wait_for(together(), timeout))


def polls(simulator: StripeSimulator, settle: float = 0.5) -> list[Any]:
    return [r for r in simulator.requests(settle=settle) if r.kind in POLLING]


def cycles_of(requests: list[Any]) -> list[list[Any]]:
    """The requests grouped by poll cycle: a list request without a cursor opens a cycle."""
    cycles: list[list[Any]] = []
    for request in requests:
        if not cycles or (request.kind == "list" and "starting_after" not in request.query):
            cycles.append([])
        cycles[-1].append(request)
    return cycles


# ---------------------------------------------------------------------------------------------
# Request economy


def test_three_hundred_waits_finishing_over_ten_seconds_cost_under_a_tenth_of_per_run_polling(start_sim) -> None:
    interval = 1.0
    # Runs finish one after another over ten seconds, from a second after they were created.
    simulator = start_sim(run_delay=lambda _type, _params, seq: 1.0 + (seq % 300) * 10.0 / 300)
    runs = create_runs(simulator, 300)
    received: dict[str, float] = {}

    async def wait_for_all() -> list[dict[str, Any]]:
        async def one(trigger: StripeReportRunTrigger) -> dict[str, Any]:
            event = await first_event(trigger)
            received[trigger.report_run_id] = time.time()
            return event

        return await asyncio.gather(*(one(t) for t in run_waits(runs, poll_interval=interval)))

    started = time.time()
    events = asyncio.run(asyncio.wait_for(wait_for_all(), 60))

    assert [(e["status"], e["report_run_id"]) for e in events] == [("succeeded", run_id) for run_id, _ in runs]
    assert all(e["report_run"]["result"]["url"] for e in events)
    requests = polls(simulator)
    # Per-run polling asks each run at least once per interval until it has finished.
    per_run = sum(math.floor(max(simulator.succeeded_at(run_id) - started, 0.0) / interval) + 1 for run_id, _ in runs)
    assert per_run >= 1500
    assert len(requests) < per_run / 10, f"{len(requests)} requests; per-run polling needs {per_run}"
    assert {r.kind for r in requests} <= {"list", "retrieve"}
    for cycle in cycles_of([r for r in requests if r.kind == "list"]):
        assert len(cycle) <= math.ceil(300 / 100) + 1
    # No loss in how fast a finished run is noticed: within the interval and a second.
    delays = sorted(received[run_id] - simulator.succeeded_at(run_id) for run_id, _ in runs)
    assert delays[-1] <= interval + 1.0, f"slowest detection {delays[-1]:.2f} s"


def test_a_wait_on_an_old_run_completes_without_paging_through_the_newer_runs(start_sim) -> None:
    offset = [-86400.0]  # the old run is created a day before the rest
    simulator = start_sim(run_delay=NEVER, clock=lambda: time.time() + offset[0])
    [old] = create_runs(simulator, 1)
    offset[0] = 0.0
    create_runs(simulator, 450)  # others' runs, nobody waits on them
    new = create_runs(simulator, 20)

    async def wait_then_finish() -> list[dict[str, Any]]:
        waits = asyncio.gather(*(first_event(t) for t in run_waits([old, *new], poll_interval=0.3)))
        await asyncio.sleep(1.0)
        for run_id, _ in [old, *new]:
            simulator.finish_report_run(run_id)
        return await waits

    events = asyncio.run(asyncio.wait_for(wait_then_finish(), 30))

    assert [(e["status"], e["report_run_id"]) for e in events] == [("succeeded", old[0])] + [
        ("succeeded", run_id) for run_id, _ in new
    ]
    requests = polls(simulator)
    lists = [r for r in requests if r.kind == "list"]
    assert lists and all("starting_after" not in r.query for r in lists), "paged through the others' runs"
    assert {r.query["created[gte]"] for r in lists} == {str(old[1])}
    assert {r.run_id for r in requests if r.kind == "retrieve"} == {old[0]}
    # One page for the twenty new runs and one retrieve for the old one, each cycle.
    for cycle in cycles_of(requests):
        assert [r.kind for r in cycle] in (["list", "retrieve"], ["list"])


def test_waits_without_created_are_retrieved_once_then_answered_by_the_list(start_sim) -> None:
    # Triggers serialized by a version without ``created`` (or a run sensor's).
    simulator = start_sim(run_delay=NEVER)
    runs = create_runs(simulator, 5)
    triggers = [StripeReportRunTrigger(run_id, poll_interval=0.2) for run_id, _ in runs]

    async def wait_then_finish() -> list[dict[str, Any]]:
        waits = asyncio.gather(*(first_event(t) for t in triggers))
        await asyncio.sleep(1.0)
        for run_id, _ in runs:
            simulator.finish_report_run(run_id)
        return await waits

    events = asyncio.run(asyncio.wait_for(wait_then_finish(), 30))

    assert [e["status"] for e in events] == ["succeeded"] * 5
    kinds = [r.kind for r in polls(simulator)]
    assert kinds[:5] == ["retrieve"] * 5
    assert set(kinds[5:]) == {"list"}
    assert len(kinds) >= 8


def test_a_lone_wait_is_retrieved_by_id_as_it_would_be_on_its_own(start_sim) -> None:
    simulator = start_sim(run_delay=0.5)
    [run] = create_runs(simulator, 1)

    event = asyncio.run(asyncio.wait_for(first_event(run_waits([run], poll_interval=0.2)[0]), 30))

    assert event["status"] == "succeeded"
    assert {r.kind for r in polls(simulator)} == {"retrieve"}


# ---------------------------------------------------------------------------------------------
# Each wait keeps its own semantics


def test_each_wait_keeps_its_own_deadline_and_events(start_sim) -> None:
    simulator = start_sim(run_delay=NEVER)
    runs = create_runs(simulator, 3)
    [quick] = run_waits(runs[:1], poll_interval=0.2, end_time=time.time() + 0.8)
    slow, failing = run_waits(runs[1:], poll_interval=0.2)
    missing = StripeReportRunTrigger("frr_doesnotexist000000000", poll_interval=0.2, created=runs[0][1])

    async def scenario() -> list[dict[str, Any]]:
        waits = asyncio.gather(*(first_event(t) for t in (quick, slow, failing, missing)))
        await asyncio.sleep(1.5)
        simulator.finish_report_run(runs[1][0])
        simulator.finish_report_run(runs[2][0], status="failed", error="No data for this interval.")
        return await waits

    timed_out, succeeded, failed, error = asyncio.run(asyncio.wait_for(scenario(), 30))

    assert timed_out == {
        "status": "timeout",
        "report_run_id": runs[0][0],
        "last_status": "pending",
        "message": f"Stripe report run {runs[0][0]} did not finish in time: last status 'pending' after waiting 1 s.",
    }
    assert (succeeded["status"], succeeded["report_run_id"]) == ("succeeded", runs[1][0])
    assert (failed["status"], failed["report_run"]["error"]) == ("failed", "No data for this interval.")
    assert error["status"] == "error"
    assert error["error_kind"] == "permanent"
    assert "No such reporting.report_run: 'frr_doesnotexist000000000'" in error["message"]


def test_first_poll_at_holds_a_coalesced_wait_back(start_sim) -> None:
    simulator = start_sim(run_delay=0.0)
    runs = create_runs(simulator, 3)
    at = time.time() + 1.0

    events = all_events(run_waits(runs, poll_interval=0.2, first_poll_at=at))

    assert [e["status"] for e in events] == ["succeeded"] * 3
    [page] = polls(simulator)
    assert page.kind == "list"
    assert page.timestamp >= at - 0.02


# ---------------------------------------------------------------------------------------------
# Cancelling, restarting


def test_cancelling_half_the_waits_midway_leaves_the_poller_at_once_and_the_rest_correct(start_sim) -> None:
    simulator = start_sim(run_delay=NEVER)
    runs = create_runs(simulator, 100)
    left_after_cancel: list[int] = []

    async def scenario() -> tuple[list[Any], list[Any]]:
        tasks = [asyncio.ensure_future(first_event(t)) for t in run_waits(runs, poll_interval=0.2)]
        while len([r for r in simulator.requests(settle=0) if r.kind == "list"]) < 2:
            await asyncio.sleep(0.05)
        for task in tasks[::2]:
            task.cancel()
        await asyncio.sleep(0)  # the cancelled run() coroutines unwind
        [poller] = poller_module.active_pollers()
        left_after_cancel.append(len(poller.pending()))
        for run_id, _ in runs:
            simulator.finish_report_run(run_id)
        done = await asyncio.gather(*tasks[1::2])
        await asyncio.sleep(0)
        return done, poller_module.active_pollers()

    events, pollers_left = asyncio.run(asyncio.wait_for(scenario(), 30))

    assert left_after_cancel == [50]
    assert [(e["status"], e["report_run_id"]) for e in events] == [("succeeded", r) for r, _ in runs[1::2]]
    assert pollers_left == [], "a poller with no waits left stops"


def test_a_restart_rebuilds_every_wait_from_serialize_and_loses_none(start_sim) -> None:
    simulator = start_sim(run_delay=NEVER)
    runs = create_runs(simulator, 60)
    first = run_waits(runs, poll_interval=0.2, end_time=time.time() + 60)

    async def until_the_triggerer_dies() -> list[Any]:
        tasks = [asyncio.ensure_future(first_event(t)) for t in first]
        while len([r for r in simulator.requests(settle=0) if r.kind == "list"]) < 2:
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return poller_module.active_pollers()

    assert asyncio.run(asyncio.wait_for(until_the_triggerer_dies(), 30)) == []
    stored = [json.loads(json.dumps(t.serialize())) for t in first]  # as the database keeps them

    async def after_restart() -> list[dict[str, Any]]:
        rebuilt = [StripeReportRunTrigger(**kwargs) for _, kwargs in stored]
        waits = asyncio.gather(*(first_event(t) for t in rebuilt))
        await asyncio.sleep(0.5)
        for run_id, _ in runs:
            simulator.finish_report_run(run_id)
        return await waits

    events = asyncio.run(asyncio.wait_for(after_restart(), 30))

    assert all(kwargs["created"] == created for (_, kwargs), (_, created) in zip(stored, runs, strict=True))
    assert [(e["status"], e["report_run_id"]) for e in events] == [("succeeded", r) for r, _ in runs]
    assert "create" not in {r.kind for r in simulator.requests()}


# ---------------------------------------------------------------------------------------------
# Rate limits


def test_a_429_storm_holds_the_whole_poller_back(
    start_sim, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # max_retries=0: every 429 reaches the poller, which must neither give up nor fall back to
    # retrieving each run while Stripe limits the account.
    simulator = start_sim(run_delay=NEVER, extra={"max_retries": 0})
    runs = create_runs(simulator, 50)

    async def scenario() -> list[dict[str, Any]]:
        waits = asyncio.gather(*(first_event(t) for t in run_waits(runs, poll_interval=0.2)))
        while not [r for r in simulator.requests(settle=0) if r.kind == "list"]:
            await asyncio.sleep(0.02)
        simulator.add_fault(Fault("list", "429", times=3))
        while len([r for r in simulator.requests(settle=0) if r.status == 429]) < 3:
            await asyncio.sleep(0.05)
        for run_id, _ in runs:
            simulator.finish_report_run(run_id)
        return await waits

    with caplog.at_level(logging.WARNING):
        events = asyncio.run(asyncio.wait_for(scenario(), 30))

    assert [e["status"] for e in events] == ["succeeded"] * 50
    requests = polls(simulator)
    assert {r.kind for r in requests} == {"list"}, "no wait polled on its own during the storm"
    limited = [r for r in requests if r.status == 429]
    assert len(limited) == 3
    for storm in limited:  # nothing at all for the limiter's hold-back after each 429
        after = [r for r in requests if r.seq > storm.seq]
        assert after and after[0].timestamp - storm.timestamp >= 0.9
    logged = caplog.text + capsys.readouterr().out
    assert len(re.findall(r"Stripe did not answer this poll; still waiting: .*429", logged)) >= 50


# ---------------------------------------------------------------------------------------------
# Data waits


def test_data_waits_make_one_report_types_request_per_cycle(start_sim) -> None:
    simulator = start_sim(data_available_end=MAR_1)
    types = ["balance.summary.1", "balance_change_from_activity.itemized.1", "payouts.itemized.1"]
    triggers = [
        StripeReportDataAvailableTrigger(report_type, MAR_1 + 3600 * hours, poll_interval=0.3)
        for report_type in types
        for hours in (1, 2, 3, 4)
    ]

    async def data_arrives() -> list[dict[str, Any]]:
        waits = asyncio.gather(*(first_event(t) for t in triggers))
        await asyncio.sleep(0.8)
        simulator.set_data_available_end(MAR_1 + 2 * 3600)
        await asyncio.sleep(0.8)
        simulator.set_data_available_end(MAR_2)
        return await waits

    started = time.time()
    events = asyncio.run(asyncio.wait_for(data_arrives(), 30))
    elapsed = time.time() - started

    assert [e["status"] for e in events] == ["available"] * 12
    assert [e["report_type"]["id"] for e in events] == [t.report_type for t in triggers]
    requests = polls(simulator)
    assert {r.kind for r in requests} == {"report_types"}
    assert 4 <= len(requests) <= elapsed / 0.3 + 2


def test_data_waits_on_one_report_type_ask_for_that_type_alone(start_sim) -> None:
    simulator = start_sim(data_available_end=MAR_2)
    triggers = [StripeReportDataAvailableTrigger("balance.summary.1", MAR_2, poll_interval=0.2) for _ in range(3)]

    events = all_events(triggers)

    assert [e["status"] for e in events] == ["available"] * 3
    assert [r.kind for r in polls(simulator)] == ["report_type"]


# ---------------------------------------------------------------------------------------------
# The switch


@pytest.mark.parametrize(
    ("extra", "coalesce", "kinds"),
    [
        ({}, None, {"list"}),
        ({"coalesce_waits": False}, None, {"retrieve"}),
        ({"coalesce_waits": "false"}, None, {"retrieve"}),  # as the Airflow 2 form's text field saves it
        ({"coalesce_waits": False}, True, {"list"}),
        ({}, False, {"retrieve"}),
    ],
    ids=["default-on", "extra-off", "extra-off-as-text", "argument-forces-on", "argument-turns-off"],
)
def test_the_connection_extra_and_the_argument_choose_how_waits_poll(start_sim, extra, coalesce, kinds) -> None:
    simulator = start_sim(run_delay=0.6, extra=extra)
    runs = create_runs(simulator, 4)

    events = all_events(run_waits(runs, poll_interval=0.2, coalesce=coalesce))

    assert [e["status"] for e in events] == ["succeeded"] * 4
    assert {r.kind for r in polls(simulator)} == kinds


def test_serialize_carries_coalesce_and_created_as_primitives() -> None:
    trigger = StripeReportRunTrigger("frr_1", poll_interval=5.0, coalesce=False, created=1700000000)
    data = StripeReportDataAvailableTrigger("balance.summary.1", MAR_2, coalesce=True)

    assert trigger.serialize()[1]["coalesce"] is False
    assert trigger.serialize()[1]["created"] == 1700000000
    assert data.serialize()[1]["coalesce"] is True
    assert StripeReportRunTrigger(**trigger.serialize()[1]).serialize() == trigger.serialize()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, True), (True, True), (False, False), ("true", True), ("No", False), ("0", False), ("", True)],
)
def test_coalesce_waits_reads_yes_or_no(value: Any, expected: bool) -> None:
    extra = {} if value is None else {"coalesce_waits": value}

    assert coalesce_waits(extra, "connection 'stripe_default'") is expected


def test_a_coalesce_waits_that_is_not_yes_or_no_is_refused_with_its_name(start_sim) -> None:
    with pytest.raises(StripeReportingError) as refused:
        coalesce_waits({"coalesce_waits": "sometimes"}, "connection 'stripe_default'")

    assert str(refused.value) == (
        "The extra field coalesce_waits in connection 'stripe_default' must be true or false, got 'sometimes'."
    )
    # And a trigger on such a connection ends with that message rather than guessing.
    start_sim(extra={"coalesce_waits": "sometimes"})
    event = asyncio.run(asyncio.wait_for(first_event(StripeReportRunTrigger("frr_any", poll_interval=0.2)), 30))
    assert event["status"] == "error"
    assert "The extra field coalesce_waits in connection 'stripe_default' must be true or false" in event["message"]


def test_cleanup_takes_the_wait_out_of_the_poller_and_may_run_twice(start_sim) -> None:
    simulator = start_sim(run_delay=NEVER)
    runs = create_runs(simulator, 3)
    triggers = run_waits(runs, poll_interval=0.2)

    async def scenario() -> tuple[int, int, list[Any]]:
        tasks = [asyncio.ensure_future(first_event(t)) for t in triggers]
        while not [r for r in simulator.requests(settle=0) if r.kind == "list"]:
            await asyncio.sleep(0.02)
        [poller] = poller_module.active_pollers()
        before = len(poller.pending())
        await triggers[0].cleanup()  # what Airflow 3's triggerer calls when it drops a trigger
        await triggers[0].cleanup()
        after = len(poller.pending())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return before, after, poller_module.active_pollers()

    before, after, left = asyncio.run(asyncio.wait_for(scenario(), 30))

    assert (before, after, left) == (3, 2, [])


class _TaskInstance:
    """What the operators read of ``context["ti"]``: its identity and ``xcom_push``."""

    dag_id, run_id, map_index, try_number = "coalesced", "manual__2024-03-02", -1, 1
    task_id = "create"

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def test_the_deferring_sensor_and_operator_hand_the_runs_created_to_the_trigger(start_sim) -> None:
    try:  # Airflow 3
        from airflow.sdk.exceptions import TaskDeferred
    except ImportError:  # Airflow 2
        from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]

    from airflow_provider_reportruns.operators.report_run import StripeCreateReportRunOperator
    from airflow_provider_reportruns.sensors.report_run import StripeReportRunSensor

    simulator = start_sim(run_delay=NEVER)
    [(run_id, created)] = create_runs(simulator, 1)
    day = dt.datetime(2024, 3, 2, tzinfo=UTC)
    context: dict[str, Any] = {
        "data_interval_start": day - dt.timedelta(days=1),
        "data_interval_end": day,
        "ti": _TaskInstance(),
    }
    tasks = [
        StripeReportRunSensor(task_id="wait", report_run_id=run_id, deferrable=True, poke_interval=30),
        StripeCreateReportRunOperator(
            task_id="create",
            report_type="balance.summary.1",
            wait_for_completion=True,
            deferrable=True,
            poll_interval=30,
        ),
    ]
    handed: list[Any] = []
    for task in tasks:
        with pytest.raises(TaskDeferred) as deferred:
            task.execute(context)
        handed.append(deferred.value.trigger.serialize()[1])

    assert [(kwargs["report_run_id"], kwargs["created"]) for kwargs in handed] == [
        (run_id, created),
        (run_id, created),  # the operator reused the interval's pending run
    ]


def test_a_run_seen_finished_on_a_page_before_its_first_poll_fires_no_earlier_than_that(start_sim) -> None:
    # In Airflow, a trigger firing within seconds of deferring races the deferring task's exit.
    simulator = start_sim(run_delay=NEVER)
    [busy, finished] = create_runs(simulator, 2)
    simulator.finish_report_run(finished[0])
    fired: dict[str, float] = {}

    async def scenario() -> dict[str, Any]:
        [other] = run_waits([busy], poll_interval=0.2)
        keep_polling = asyncio.ensure_future(first_event(other))
        while not [r for r in simulator.requests(settle=0) if r.kind in POLLING]:
            await asyncio.sleep(0.02)
        fired["first_poll_at"] = time.time() + 1.5
        [late] = run_waits([finished], poll_interval=0.2, first_poll_at=fired["first_poll_at"])
        event = await first_event(late)
        fired["event"] = time.time()
        keep_polling.cancel()
        await asyncio.gather(keep_polling, return_exceptions=True)
        return event

    event = asyncio.run(asyncio.wait_for(scenario(), 30))

    assert event["status"] == "succeeded"
    lists_before = [r for r in polls(simulator) if r.kind == "list" and r.timestamp < fired["first_poll_at"] - 0.5]
    assert lists_before, "a page held the finished run before its first poll"
    assert fired["first_poll_at"] - 0.02 <= fired["event"] < fired["first_poll_at"] + 0.5
