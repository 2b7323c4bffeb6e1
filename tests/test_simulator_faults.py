"""Scripted faults: seeded draws, firing rules, and what each one does to the response."""

from __future__ import annotations

import http.client
import json
import time

import pytest
import requests
from _openapi import validate_component
from _simulator_api import (  # noqa: F401
    AVAILABLE_END,
    FORM_BODY,
    RUNS,
    TYPES,
    Api,
    FakeClock,
    api,
    clock,
    interval_form,
    raw,
    sim,
)

from airflow_provider_reportruns.testing import Fault, StripeSimulator

# ------------------------------------------------------------------------------------ faults


def _statuses(seed: int) -> list[int]:
    with StripeSimulator(seed=seed, faults=[Fault("report_types", "500", rate=0.5)]) as sim:
        api = Api(sim)
        return [api.get(TYPES).status_code for _ in range(40)]


def test_faults_replay_exactly_under_the_same_seed() -> None:
    first, again, other = _statuses(7), _statuses(7), _statuses(8)
    assert first == again
    assert first != other
    assert {200, 500} == set(first)


def test_fault_times_kind_and_order(clock: FakeClock) -> None:
    faults = [
        Fault("retrieve", "503"),
        Fault("report_types", "502", times=2),
        Fault("any", "429_should_retry_true", times=1),
    ]
    with StripeSimulator(faults=faults, clock=clock) as sim:
        api = Api(sim)
        statuses = [api.get(TYPES).status_code for _ in range(4)]
        assert api.get(f"{RUNS}/frr_x").status_code == 503
        sim.clear_faults()
        assert api.get(f"{RUNS}/frr_x").status_code == 404
        sim.add_fault(Fault("report_type", "500_should_retry_false"))
        response = api.get(f"{TYPES}/balance.summary.1")
    assert statuses == [502, 502, 429, 200]
    assert sim.fault_counts == {"502": 2, "429_should_retry_true": 1, "503": 1, "500_should_retry_false": 1}
    assert [r.fault for r in sim.requests()][:4] == ["502", "502", "429_should_retry_true", None]
    assert response.headers["Stripe-Should-Retry"] == "false"


@pytest.mark.parametrize(
    ("fault", "status", "should_retry", "error_type"),
    [
        ("429", 429, None, "invalid_request_error"),
        ("429_should_retry_true", 429, "true", "invalid_request_error"),
        ("429_should_retry_false", 429, "false", "invalid_request_error"),
        ("500", 500, None, "api_error"),
        ("502", 502, None, "api_error"),
        ("503", 503, None, "api_error"),
        ("500_should_retry_false", 500, "false", "api_error"),
    ],
)
def test_status_faults_answer_stripe_shaped_errors_and_execute_nothing(
    clock: FakeClock, fault: str, status: int, should_retry: str | None, error_type: str
) -> None:
    with StripeSimulator(faults=[Fault("create", fault)], data_available_end=AVAILABLE_END, clock=clock) as sim:
        response = Api(sim).create(interval_form(), idempotency_key="k")
        assert sim.report_runs() == []
    assert response.status_code == status
    assert response.headers.get("Stripe-Should-Retry") == should_retry
    assert response.json()["error"]["type"] == error_type
    validate_component(response.json(), "error", strict=True)


def test_stored_500_is_replayed_for_the_same_key(clock: FakeClock) -> None:
    faults = [Fault("create", "500", times=1, stored=True)]
    with StripeSimulator(faults=faults, data_available_end=AVAILABLE_END, clock=clock) as sim:
        api = Api(sim)
        first = api.create(interval_form(), idempotency_key="k")
        replay = api.create(interval_form(), idempotency_key="k")
        fresh = api.create(interval_form(), idempotency_key="k2")
        assert len(sim.report_runs()) == 1
    assert first.status_code == replay.status_code == 500
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.json() == first.json()
    assert fresh.status_code == 200


def test_reset_closes_the_connection_without_a_response(clock: FakeClock) -> None:
    with StripeSimulator(
        faults=[Fault("create", "reset", times=1)], data_available_end=AVAILABLE_END, clock=clock
    ) as sim:
        with pytest.raises(ConnectionResetError):
            raw(sim, "POST", RUNS, FORM_BODY)
        assert sim.report_runs() == []
        assert Api(sim).create(interval_form(), idempotency_key="raw").status_code == 200
        assert sim.requests()[0].status is None and sim.requests()[0].fault == "reset"


def test_lost_response_executes_the_create_then_drops_the_connection(clock: FakeClock) -> None:
    faults = [Fault("create", "lost_response", times=1)]
    with StripeSimulator(faults=faults, data_available_end=AVAILABLE_END, clock=clock) as sim:
        with pytest.raises(ConnectionError):
            raw(sim, "POST", RUNS, FORM_BODY, key="lost")
        assert len(sim.report_runs()) == 1
        retry = Api(sim).create(interval_form(), idempotency_key="lost")
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert retry.json()["id"] == sim.report_runs()[0]["id"]
        assert len(sim.report_runs()) == 1


def test_slow_fault_exceeds_a_client_read_timeout() -> None:
    with StripeSimulator(faults=[Fault("report_types", "slow", delay=0.5, times=1)]) as sim:
        api = Api(sim)
        with pytest.raises(requests.exceptions.ReadTimeout):
            api.session.get(sim.url + TYPES, headers=api.headers(), timeout=0.2)
        started = time.perf_counter()
        assert api.get(TYPES).status_code == 200
        assert time.perf_counter() - started < 0.45  # the fault fired once only


def test_bad_json_answers_200_with_html(clock: FakeClock) -> None:
    with StripeSimulator(faults=[Fault("retrieve", "bad_json")], clock=clock) as sim:
        response = Api(sim).get(f"{RUNS}/frr_x")
    assert response.status_code == 200 and response.headers["Content-Type"] == "text/html"
    with pytest.raises(ValueError):
        response.json()


def test_truncated_json_cuts_the_body_with_a_matching_content_length(clock: FakeClock) -> None:
    faults = [Fault("create", "truncated_json", times=1)]
    with StripeSimulator(faults=faults, data_available_end=AVAILABLE_END, clock=clock) as sim:
        api = Api(sim)
        cut = api.create(interval_form(), idempotency_key="k")
        whole = api.create(interval_form(), idempotency_key="k")
    assert cut.status_code == 200 and int(cut.headers["Content-Length"]) == len(cut.content)
    with pytest.raises(ValueError):
        json.loads(cut.content)
    assert whole.content.startswith(cut.content) and len(cut.content) < len(whole.content)
    assert whole.json()["id"] == sim.report_runs()[0]["id"]


def test_cut_download_sends_part_of_the_file_then_closes(clock: FakeClock) -> None:
    with StripeSimulator(result_size=100_000, data_available_end=AVAILABLE_END, clock=clock) as sim:
        api = Api(sim)
        run = api.get(f"{RUNS}/{api.create(interval_form()).json()['id']}").json()
        sim.add_fault(Fault("file_contents", "cut_download", times=1, fraction=0.25))
        path = run["result"]["url"][len(sim.url) :]
        conn, response = raw(sim, "GET", path)
        assert response.status == 200 and response.getheader("Content-Length") == "100000"
        with pytest.raises(http.client.IncompleteRead) as info:
            response.read()
        conn.close()
        assert len(info.value.partial) == 25_000
        assert api.get(run["result"]["url"]).content == sim.result_content(run["id"])
