"""The local Stripe Reporting simulator answers like Stripe, over real HTTP on loopback."""

from __future__ import annotations

import ast
import http.client
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
from _openapi import validate_component, validate_create_form, validate_response

from airflow_provider_reportruns.testing import Fault, StripeSimulator
from airflow_provider_reportruns.testing import simulator as simulator_package

RUNS = "/v1/reporting/report_runs"
TYPES = "/v1/reporting/report_types"
# 2022-05-08 12:00:00 UTC: the data_available_end of Stripe's documented error message.
AVAILABLE_END = 1652011200
MAY_8 = 1651968000  # 2022-05-08 00:00:00 UTC
MAY_9 = MAY_8 + 86400
T0 = 1_700_000_000.0


class FakeClock:
    """A clock the tests move by hand, so run completion and ``created`` need no sleeping."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Api:
    """A keep-alive client for one simulator (one key, optionally one Stripe-Account)."""

    def __init__(self, sim: StripeSimulator, key: str | None = None, account: str | None = None) -> None:
        self.sim = sim
        self.session = requests.Session()
        self.key = sim.api_key if key is None else key
        self.account = account

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        if self.account:
            headers["Stripe-Account"] = self.account
        headers.update(extra or {})
        return headers

    def create(
        self, form: Any, idempotency_key: str | None = None, headers: dict[str, str] | None = None, **kw: Any
    ) -> requests.Response:
        extra = dict(headers or {})
        if idempotency_key is not None:
            extra["Idempotency-Key"] = idempotency_key
        return self.session.post(self.sim.url + RUNS, data=form, headers=self.headers(extra), timeout=10, **kw)

    def get(self, path: str, params: Any = None, **kw: Any) -> requests.Response:
        url = path if path.startswith("http") else self.sim.url + path
        return self.session.get(url, params=params, headers=self.headers(kw.pop("headers", None)), timeout=10, **kw)


def interval_form(report_type: str = "balance.summary.1", start: int = MAY_8, end: int = AVAILABLE_END) -> dict:
    return {"report_type": report_type, "parameters[interval_start]": start, "parameters[interval_end]": end}


def assert_error(response: requests.Response, status: int, message: str, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Request-Id"].startswith("req_")
    body = response.json()
    validate_component(body, "error", strict=True)
    validate_response(body, "post" if response.request.method == "POST" else "get", RUNS, status, strict=True)
    assert body["error"]["message"] == message
    assert body["error"].get("param") == param
    return body["error"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[StripeSimulator]:
    with StripeSimulator(run_delay=30, data_available_end=AVAILABLE_END, clock=clock) as simulator:
        yield simulator


@pytest.fixture
def api(sim: StripeSimulator) -> Api:
    return Api(sim)


# ------------------------------------------------------------------------------------ lifecycle


def test_run_is_pending_until_run_delay_then_succeeds_in_real_time() -> None:
    with StripeSimulator(run_delay=0.3, data_available_end=AVAILABLE_END) as sim:
        api = Api(sim)
        created = api.create(interval_form()).json()
        assert created["status"] == "pending"
        assert api.get(f"{RUNS}/{created['id']}").json()["status"] == "pending"
        time.sleep(0.35)
        done = api.get(f"{RUNS}/{created['id']}").json()
    assert done["status"] == "succeeded"
    assert done["succeeded_at"] >= created["created"]
    assert done["result"]["size"] == len(sim.result_content(created["id"]))


def test_run_state_follows_the_clock_and_validates_against_the_schema(
    sim: StripeSimulator, api: Api, clock: FakeClock
) -> None:
    response = api.create(interval_form())
    assert response.status_code == 200
    run = response.json()
    validate_component(run, "reporting.report_run", strict=True)
    validate_response(run, "post", RUNS, strict=True)
    assert run["id"].startswith("frr_") and len(run["id"]) == 28 and run["id"][4:].isalnum()
    assert (run["status"], run["result"], run["succeeded_at"], run["error"]) == ("pending", None, None, None)
    assert run["created"] == int(T0) and run["livemode"] is False
    assert sim.succeeded_at(run["id"]) == T0 + 30

    clock.advance(29.9)
    assert api.get(f"{RUNS}/{run['id']}").json()["status"] == "pending"
    clock.advance(0.1)
    done = api.get(f"{RUNS}/{run['id']}").json()
    validate_response(done, "get", RUNS + "/{report_run}", strict=True)
    assert done["status"] == "succeeded" and done["succeeded_at"] == int(T0 + 30)
    result = done["result"]
    assert result["id"].startswith("file_") and len(result["id"]) == 29
    assert result["url"] == f"{sim.url}/v1/files/{result['id']}/contents"
    assert result["expires_at"] == int(T0 + 30 + 3600)
    assert (result["purpose"], result["type"], result["object"]) == ("finance_report_run", "csv", "file")
    assert result["links"] == {
        "object": "list",
        "data": [],
        "has_more": False,
        "url": f"/v1/file_links?file={result['id']}",
    }
    assert sim.report_runs() == [done]


def test_create_answers_pending_even_with_zero_delay(clock: FakeClock) -> None:
    with StripeSimulator(run_delay=0, data_available_end=AVAILABLE_END, clock=clock) as sim:
        api = Api(sim)
        run = api.create(interval_form()).json()
        assert run["status"] == "pending"
        assert api.get(f"{RUNS}/{run['id']}").json()["status"] == "succeeded"


def test_failed_report_types_end_failed_with_the_failure_message(clock: FakeClock) -> None:
    with StripeSimulator(
        run_delay=1,
        fail_report_types=["payouts.itemized.3"],
        failure_message="Report generation failed.",
        data_available_end=AVAILABLE_END,
        clock=clock,
    ) as sim:
        api = Api(sim)
        failing = api.create(interval_form("payouts.itemized.3")).json()
        fine = api.create(interval_form("payouts.itemized.1")).json()
        clock.advance(1)
        failed = api.get(f"{RUNS}/{failing['id']}").json()
        succeeded = api.get(f"{RUNS}/{fine['id']}").json()
    validate_component(failed, "reporting.report_run", strict=True)
    assert (failed["status"], failed["error"], failed["result"], failed["succeeded_at"]) == (
        "failed",
        "Report generation failed.",
        None,
        None,
    )
    assert succeeded["status"] == "succeeded"


def test_finish_report_run_forces_any_status(sim: StripeSimulator, api: Api, clock: FakeClock) -> None:
    first = api.create(interval_form()).json()["id"]
    second = api.create(interval_form()).json()["id"]
    third = api.create(interval_form()).json()["id"]
    sim.finish_report_run(first, "failed", error="Boom.")
    sim.finish_report_run(second, "canceled")
    sim.finish_report_run(third)
    runs = {r["id"]: r for r in api.get(RUNS).json()["data"]}
    assert (runs[first]["status"], runs[first]["error"]) == ("failed", "Boom.")
    assert (runs[second]["status"], runs[second]["result"]) == ("canceled", None)
    assert runs[third]["status"] == "succeeded" and runs[third]["result"]["size"] > 0
    assert sim.succeeded_at(third) == clock.now
    assert sim.succeeded_at(second) == float("inf")
    for run in runs.values():
        validate_component(run, "reporting.report_run", strict=True)


def test_callable_run_delay_staggers_completion(clock: FakeClock) -> None:
    seen: list[tuple[str, dict, int]] = []

    def delay(report_type: str, parameters: Any, sequence_no: int) -> float:
        seen.append((report_type, dict(parameters), sequence_no))
        return 10.0 * sequence_no

    with StripeSimulator(run_delay=delay, data_available_end=AVAILABLE_END, clock=clock) as sim:
        api = Api(sim)
        ids = [api.create(interval_form()).json()["id"] for _ in range(3)]
        clock.advance(15)
        statuses = [api.get(f"{RUNS}/{i}").json()["status"] for i in ids]
        assert [sim.succeeded_at(i) for i in ids] == [T0, T0 + 10, T0 + 20]
    assert statuses == ["succeeded", "succeeded", "pending"]
    assert seen[2] == ("balance.summary.1", {"interval_start": MAY_8, "interval_end": AVAILABLE_END}, 2)


# ------------------------------------------------------------------------------------ create form


def test_nested_parameters_lists_and_expand_are_decoded_without_invented_defaults(
    sim: StripeSimulator, api: Api
) -> None:
    form = [
        ("report_type", "balance_change_from_activity.itemized.3"),
        ("parameters[interval_start]", str(MAY_8)),
        ("parameters[interval_end]", str(AVAILABLE_END)),
        ("parameters[columns][0]", "gross"),
        ("parameters[columns][1]", "balance_transaction_id"),
        ("parameters[columns][2]", "created"),
        ("parameters[timezone]", "America/New_York"),
        ("parameters[currency]", "eur"),
        ("expand[0]", "result"),
    ]
    run = api.create(form).json()
    assert run["parameters"] == {
        "interval_start": MAY_8,
        "interval_end": AVAILABLE_END,
        "columns": ["gross", "balance_transaction_id", "created"],
        "timezone": "America/New_York",
        "currency": "eur",
    }
    logged = sim.requests()[-1]
    assert logged.kind == "create" and logged.form_pairs == tuple(form)
    assert logged.form["parameters"]["columns"] == ["gross", "balance_transaction_id", "created"]
    decoded = validate_create_form(logged.form)
    assert decoded["parameters"]["interval_start"] == MAY_8
    assert validate_create_form(logged.form_pairs) == decoded

    minimal = api.create(interval_form()).json()
    assert minimal["parameters"] == {"interval_start": MAY_8, "interval_end": AVAILABLE_END}
    header = sim.result_content(run["id"]).split(b"\n", 1)[0]
    assert header == b"gross,balance_transaction_id,created"


def test_create_form_validator_rejects_what_stripe_rejects() -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate_create_form({"report_type": "balance.summary.1", "parameters[interval_start]": "abc"})
    with pytest.raises(jsonschema.ValidationError):
        validate_create_form({"report_type": "balance.summary.1", "parameters[bogus]": "1"})
    with pytest.raises(jsonschema.ValidationError):
        validate_create_form({"parameters[interval_end]": "1"})
    with pytest.raises(ValueError):
        validate_create_form([("report_type", "x"), ("parameters[columns][1]", "a")])
    with pytest.raises(jsonschema.ValidationError):
        validate_component({"id": "frr_1", "object": "reporting.report_run"}, "reporting.report_run")


@pytest.mark.parametrize(
    ("form", "message", "param"),
    [
        pytest.param(
            {**interval_form(), "foo": "bar"}, "Received unknown parameter: foo", "foo", id="unknown-top-level"
        ),
        pytest.param(
            {**interval_form(), "parameters[bogus]": "1"},
            "Received unknown parameter: parameters[bogus]",
            "parameters[bogus]",
            id="unknown-parameter",
        ),
        pytest.param(
            {"parameters[interval_start]": MAY_8, "parameters[interval_end]": AVAILABLE_END},
            "Missing required param: report_type.",
            "report_type",
            id="missing-report-type",
        ),
        pytest.param(
            interval_form("balance.nope.1"),
            "Invalid report_type: `balance.nope.1` is not a valid report type. See "
            "https://stripe.com/docs/reporting/statements/api#report-types for the available types.",
            "report_type",
            id="unknown-report-type",
        ),
        pytest.param(
            {**interval_form(), "parameters[interval_start]": "abc"},
            "Invalid integer: abc",
            "parameters[interval_start]",
            id="invalid-integer",
        ),
        pytest.param(
            {"report_type": "payouts.summary.1", "parameters[interval_end]": AVAILABLE_END},
            "Missing required param: parameters[interval_start].",
            "parameters[interval_start]",
            id="interval-type-needs-start",
        ),
        pytest.param(
            {"report_type": "payouts.summary.1", "parameters[interval_start]": MAY_8},
            "Missing required param: parameters[interval_end].",
            "parameters[interval_end]",
            id="interval-type-needs-end",
        ),
        pytest.param(
            {"report_type": "payout_reconciliation.by_id.itemized.4"},
            "Missing required param: parameters[payout].",
            "parameters[payout]",
            id="by-id-needs-payout",
        ),
        pytest.param(
            {**interval_form("payout_reconciliation.by_id.itemized.4"), "parameters[payout]": "po_1"},
            "The report type payout_reconciliation.by_id.itemized.4 does not accept the parameter `interval_end`.",
            "parameters[interval_end]",
            id="by-id-rejects-intervals",
        ),
        pytest.param(
            {**interval_form(), "parameters[connected_account]": "acct_1"},
            "The report type balance.summary.1 does not accept the parameter `connected_account`.",
            "parameters[connected_account]",
            id="parameter-not-for-this-type",
        ),
        pytest.param(
            interval_form(start=AVAILABLE_END, end=AVAILABLE_END),
            "`interval_start` (2022-05-08 12:00:00 UTC) must be before `interval_end` (2022-05-08 12:00:00 UTC).",
            "parameters[interval_start]",
            id="start-not-before-end",
        ),
        pytest.param(
            interval_form("payout_reconciliation.itemized.5", end=MAY_9),
            "Data for the report type payout_reconciliation.itemized.5 is only available through "
            "2022-05-08 12:00:00 UTC; you requested `interval_end` = 2022-05-09 00:00:00 UTC.",
            "parameters[interval_end]",
            id="end-after-available-data",
        ),
        pytest.param(
            interval_form(start=1577750400),
            "Data for the report type balance.summary.1 is only available starting from "
            "2020-01-01 00:00:00 UTC; you requested `interval_start` = 2019-12-31 00:00:00 UTC.",
            "parameters[interval_start]",
            id="start-before-available-data",
        ),
        pytest.param(
            {"report_type": "ending_balance_reconciliation.summary.1", "parameters[interval_end]": MAY_9},
            "Data for the report type ending_balance_reconciliation.summary.1 is only available through "
            "2022-05-08 12:00:00 UTC; you requested `interval_end` = 2022-05-09 00:00:00 UTC.",
            "parameters[interval_end]",
            id="ending-balance-end-after-available-data",
        ),
        pytest.param(
            interval_form("connected_account_balance.summary.1"),
            "The report type connected_account_balance.summary.1 is only available with live-mode data; "
            "a live-mode API key is required (see https://stripe.com/docs/keys#test-live-modes).",
            "report_type",
            id="live-only-type-with-test-key",
        ),
        pytest.param(
            {"report_type": "balance.summary.1", "parameters": "x"}, "Invalid object", "parameters", id="not-object"
        ),
        pytest.param(
            {**interval_form(), "parameters[columns]": "gross"},
            "Invalid array",
            "parameters[columns]",
            id="columns-not-array",
        ),
    ],
)
def test_create_rejects_bad_requests_like_stripe(
    sim: StripeSimulator, api: Api, form: dict, message: str, param: str
) -> None:
    assert_error(api.create(form), 400, message, param)
    assert sim.report_runs() == []


def test_interval_boundaries_are_inclusive_and_other_shapes_are_accepted(sim: StripeSimulator, api: Api) -> None:
    ok = [
        interval_form(start=sim.data_available_start, end=AVAILABLE_END),
        {"report_type": "ending_balance_reconciliation.itemized.4", "parameters[interval_end]": AVAILABLE_END},
        {"report_type": "payout_reconciliation.by_id.summary.1", "parameters[payout]": "po_123"},
    ]
    for form in ok:
        response = api.create(form)
        assert response.status_code == 200, response.text
        validate_component(response.json(), "reporting.report_run", strict=True)
        validate_create_form(sim.requests()[-1].form)


def test_live_key_can_run_live_only_types(clock: FakeClock) -> None:
    with StripeSimulator(api_key="sk_live_sim_1", data_available_end=AVAILABLE_END, clock=clock) as sim:
        api = Api(sim)
        run = api.create(interval_form("connected_account_balance.summary.1")).json()
        types = api.get(TYPES).json()["data"]
    assert run["livemode"] is True
    assert "connected_account_balance.summary.1" in {t["id"] for t in types}
    assert all(t["livemode"] for t in types)


def test_moving_data_available_end_forward_makes_the_interval_valid(sim: StripeSimulator, api: Api) -> None:
    form = interval_form("payouts.itemized.3", end=MAY_9)
    assert api.create(form).status_code == 400
    sim.set_data_available_end(MAY_9, "payouts.itemized.3")
    assert api.create(form).status_code == 200
    assert api.create(interval_form("payouts.itemized.1", end=MAY_9)).status_code == 400
    sim.set_data_available_end(MAY_9 + 3600)
    assert api.get(f"{TYPES}/payouts.itemized.3").json()["data_available_end"] == MAY_9 + 3600
    assert api.create(interval_form("payouts.itemized.1", end=MAY_9)).status_code == 200


def test_default_data_available_end_is_the_start_of_the_current_utc_day(clock: FakeClock) -> None:
    with StripeSimulator(clock=clock) as sim:
        end = Api(sim).get(f"{TYPES}/balance.summary.1").json()["data_available_end"]
    assert end == int(T0) // 86400 * 86400


# ------------------------------------------------------------------------------------ auth


def test_missing_and_wrong_keys_answer_401(sim: StripeSimulator) -> None:
    missing = Api(sim, key="").get(TYPES)
    assert missing.status_code == 401
    assert missing.json()["error"]["message"].startswith("You did not provide an API key.")
    assert_error(
        Api(sim, key="sk_test_wrongkey1234abcd").get(TYPES),
        401,
        "Invalid API Key provided: sk_test_************abcd",
    )
    assert_error(
        Api(sim, key="sk_test_wrongkey1234abcd").create(interval_form()),
        401,
        "Invalid API Key provided: sk_test_************abcd",
    )
    assert sim.report_runs() == []


def test_basic_auth_with_the_key_as_user_name_is_accepted(sim: StripeSimulator) -> None:
    response = requests.get(sim.url + TYPES, auth=(sim.api_key, ""), timeout=10)
    assert response.status_code == 200


def test_restricted_keys_need_the_report_runs_permission(clock: FakeClock) -> None:
    keys = {"rk_test_goodkey123456": True, "rk_test_badkey654321": False}
    with StripeSimulator(restricted_keys=keys, data_available_end=AVAILABLE_END, clock=clock) as sim:
        assert Api(sim, key="rk_test_goodkey123456").create(interval_form()).status_code == 200
        for response in (
            Api(sim, key="rk_test_badkey654321").create(interval_form()),
            Api(sim, key="rk_test_badkey654321", account="acct_123").get(RUNS),
        ):
            account = "acct_123" if response.request.method == "GET" else sim.account_id
            assert_error(
                response,
                403,
                f"The provided key 'rk_test_***654321' does not have the required permissions for this "
                f"endpoint on account '{account}'. Having the 'report_runs_and_report_types_read' "
                "permission would allow this request to continue.",
            )
        assert len(sim.report_runs()) == 1


def test_request_log_keeps_headers_but_never_the_key(sim: StripeSimulator, api: Api) -> None:
    response = api.create(interval_form(), idempotency_key="key-1", headers={"Stripe-Version": "2023-08-16"})
    api.get(RUNS, params={"limit": 3})
    Api(sim, key="").get(TYPES)
    assert response.headers["Stripe-Version"] == "2023-08-16"
    create, listing, anonymous = sim.requests()
    assert create.headers == {"Idempotency-Key": "key-1", "Stripe-Version": "2023-08-16"}
    assert create.authorization_present and not anonymous.authorization_present
    assert (create.status, create.fault, create.replayed, create.run_id) == (200, None, False, response.json()["id"])
    assert create.request_id == response.headers["Request-Id"]
    assert (listing.kind, listing.query, anonymous.kind, anonymous.status) == (
        "list",
        {"limit": "3"},
        "report_types",
        401,
    )
    assert T0 <= create.timestamp <= listing.timestamp
    assert sim.api_key not in repr(sim.requests())


# ------------------------------------------------------------------------------------ idempotency


def test_idempotent_replay_returns_the_same_run_and_creates_no_second_one(sim: StripeSimulator, api: Api) -> None:
    first = api.create(interval_form(), idempotency_key="k1")
    again = api.create(interval_form(), idempotency_key="k1")
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Original-Request"] == first.headers["Request-Id"]
    assert again.headers["Request-Id"] != first.headers["Request-Id"]
    assert "Idempotent-Replayed" not in first.headers
    assert len(sim.report_runs()) == 1
    assert [r.replayed for r in sim.requests()] == [False, True]
    # Keys are per account: the same key for another account is a new request.
    other = Api(sim, account="acct_other").create(interval_form(), idempotency_key="k1")
    assert other.json()["id"] != first.json()["id"]


def test_same_key_with_other_parameters_is_an_idempotency_error(sim: StripeSimulator, api: Api) -> None:
    api.create(interval_form(), idempotency_key="k1")
    error = assert_error(
        api.create(interval_form("payouts.summary.1"), idempotency_key="k1"),
        400,
        "Keys for idempotent requests can only be used with the same parameters they were first used with. "
        "Try using a key other than 'k1' if you meant to execute a different request.",
    )
    assert error["type"] == "idempotency_error"
    assert len(sim.report_runs()) == 1


def test_idempotency_keys_longer_than_255_characters_are_rejected(sim: StripeSimulator, api: Api) -> None:
    assert api.create(interval_form(), idempotency_key="k" * 255).status_code == 200
    response = api.create(interval_form(), idempotency_key="k" * 256)
    assert_error(
        response,
        400,
        "Invalid Idempotency-Key: keys may be at most 255 characters long, but the one provided has 256.",
        "Idempotency-Key",
    )


def test_key_still_in_flight_answers_409_then_replays(clock: FakeClock) -> None:
    faults = [Fault("create", "slow", delay=1.0, times=1)]
    with StripeSimulator(faults=faults, data_available_end=AVAILABLE_END, clock=clock) as sim:
        results: dict[str, requests.Response] = {}
        first = threading.Thread(target=lambda: results.update(first=Api(sim).create(interval_form(), "k1")))
        first.start()
        time.sleep(0.3)
        conflict = Api(sim).create(interval_form(), idempotency_key="k1")
        first.join()
        replay = Api(sim).create(interval_form(), idempotency_key="k1")
    error = assert_error(
        conflict,
        409,
        "There is currently another in-progress request using this Idempotent Key (that probably means you "
        "submitted twice, and the other request is still going through): k1. Please try again later.",
    )
    assert (error["type"], error["code"]) == ("idempotency_error", "idempotency_key_in_use")
    assert results["first"].status_code == 200
    assert replay.json()["id"] == results["first"].json()["id"]
    assert len(sim.report_runs()) == 1


def test_errors_after_execution_started_are_replayed_but_validation_errors_are_not(
    sim: StripeSimulator, api: Api
) -> None:
    late = interval_form(end=MAY_9)
    first = api.create(late, idempotency_key="late")
    assert first.status_code == 400
    sim.set_data_available_end(MAY_9)
    replay = api.create(late, idempotency_key="late")
    assert replay.status_code == 400 and replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert api.create(late, idempotency_key="fresh").status_code == 200

    assert (
        api.create({**interval_form(), "parameters[interval_start]": "x"}, idempotency_key="shape").status_code == 400
    )
    assert api.create(interval_form(), idempotency_key="shape").status_code == 200


def test_rate_limit_happens_before_idempotency(clock: FakeClock) -> None:
    with StripeSimulator(
        faults=[Fault("create", "429", times=1)], data_available_end=AVAILABLE_END, clock=clock
    ) as sim:
        api = Api(sim)
        limited = api.create(interval_form(), idempotency_key="k1")
        retried = api.create(interval_form(), idempotency_key="k1")
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit"
    assert retried.status_code == 200 and "Idempotent-Replayed" not in retried.headers
    assert len(sim.report_runs()) == 1


# ------------------------------------------------------------------------------------ accounts


def test_runs_are_scoped_to_the_stripe_account(sim: StripeSimulator) -> None:
    platform, connected = Api(sim), Api(sim, account="acct_A")
    mine = connected.create(interval_form()).json()
    ours = platform.create(interval_form()).json()
    assert connected.get(f"{RUNS}/{mine['id']}").status_code == 200
    assert_error(platform.get(f"{RUNS}/{mine['id']}"), 404, f"No such reporting.report_run: '{mine['id']}'", "id")
    assert [r["id"] for r in platform.get(RUNS).json()["data"]] == [ours["id"]]
    assert [r["id"] for r in connected.get(RUNS).json()["data"]] == [mine["id"]]
    assert sim.requests()[0].account == "acct_A" and sim.requests()[1].account is None
    assert [r["id"] for r in sim.report_runs(account="acct_A")] == [mine["id"]]


# ------------------------------------------------------------------------------------ list


@pytest.fixture
def three_runs(sim: StripeSimulator, api: Api, clock: FakeClock) -> list[str]:
    ids = []
    for _ in range(3):
        ids.append(api.create(interval_form()).json()["id"])
        clock.advance(1)
    return ids  # created T0, T0+1, T0+2


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"created": int(T0) + 1}, [1]),
        ({"created[gt]": int(T0)}, [2, 1]),
        ({"created[gte]": int(T0) + 1}, [2, 1]),
        ({"created[lt]": int(T0) + 2}, [1, 0]),
        ({"created[lte]": int(T0) + 1}, [1, 0]),
        ({"created[gt]": int(T0), "created[lt]": int(T0) + 2}, [1]),
        ({}, [2, 1, 0]),
    ],
)
def test_list_filters_on_created(api: Api, three_runs: list[str], params: dict, expected: list[int]) -> None:
    page = api.get(RUNS, params=params).json()
    validate_response(page, "get", RUNS, strict=True)
    assert [r["id"] for r in page["data"]] == [three_runs[i] for i in expected]
    assert page["has_more"] is False and page["url"] == RUNS


@pytest.mark.parametrize(
    ("params", "message", "param"),
    [
        ({"limit": 0}, "This value must be greater than or equal to 1.", "limit"),
        ({"limit": 101}, "This value must be less than or equal to 100.", "limit"),
        ({"limit": "ten"}, "Invalid integer: ten", "limit"),
        ({"created[gt]": "abc"}, "Invalid integer: abc", "created[gt]"),
        ({"created[after]": 1}, "Received unknown parameter: created[after]", "created[after]"),
        ({"status": "pending"}, "Received unknown parameter: status", "status"),
        (
            {"starting_after": "frr_a", "ending_before": "frr_b"},
            "You may only specify one of these parameters: ending_before, starting_after.",
            None,
        ),
        ({"starting_after": "frr_nope"}, "No such reporting.report_run: 'frr_nope'", "starting_after"),
    ],
)
def test_list_rejects_bad_queries(api: Api, params: dict, message: str, param: str | None) -> None:
    expected_status = 404 if "frr_nope" in params.values() else 400
    assert_error(api.get(RUNS, params=params), expected_status, message, param)


def test_limit_bounds_and_default(sim: StripeSimulator, api: Api) -> None:
    for _ in range(12):
        api.create(interval_form())
    assert len(api.get(RUNS).json()["data"]) == 10
    assert api.get(RUNS).json()["has_more"] is True
    assert len(api.get(RUNS, params={"limit": 1}).json()["data"]) == 1
    assert len(api.get(RUNS, params={"limit": 100}).json()["data"]) == 12


def test_cursor_paging_covers_every_run_newest_first_without_overlap(
    sim: StripeSimulator, api: Api, clock: FakeClock
) -> None:
    created = []
    for i in range(25):
        created.append(api.create(interval_form()).json()["id"])
        if i % 3 == 2:  # several runs share each created second: order must still be total
            clock.advance(1)
    newest_first = created[::-1]

    forward, cursor, pages = [], None, 0
    while True:
        page = api.get(RUNS, params={"limit": 7, **({"starting_after": cursor} if cursor else {})}).json()
        forward += [r["id"] for r in page["data"]]
        pages += 1
        if not page["has_more"]:
            break
        cursor = page["data"][-1]["id"]
    assert forward == newest_first and pages == 4

    backward, cursor = [], newest_first[-1]
    while True:
        page = api.get(RUNS, params={"limit": 7, "ending_before": cursor}).json()
        ids = [r["id"] for r in page["data"]]
        assert ids == sorted(ids, key=newest_first.index)  # each page is still newest first
        backward = ids + backward
        if not page["has_more"]:
            break
        cursor = ids[0]
    assert backward == newest_first[:-1]


# ------------------------------------------------------------------------------------ report types


def test_report_types_list_and_retrieve(sim: StripeSimulator, api: Api) -> None:
    listing = api.get(TYPES).json()
    validate_response(listing, "get", TYPES, strict=True)
    ids = {t["id"] for t in listing["data"]}
    required = {
        "balance.summary.1",
        "balance_change_from_activity.itemized.1",
        "balance_change_from_activity.itemized.3",
        "balance_change_from_activity.summary.1",
        "payouts.itemized.3",
        "payouts.summary.1",
        "payout_reconciliation.itemized.5",
        "payout_reconciliation.summary.1",
        "payout_reconciliation.by_id.itemized.4",
        "payout_reconciliation.by_id.summary.1",
        "ending_balance_reconciliation.itemized.4",
        "ending_balance_reconciliation.summary.1",
    }
    assert required <= ids
    assert not any(i.startswith("connected_account") for i in ids)  # live-only with a test key
    assert (listing["has_more"], listing["url"]) == (False, TYPES)

    one = api.get(f"{TYPES}/balance.summary.1").json()
    validate_component(one, "reporting.report_type", strict=True)
    validate_response(one, "get", TYPES + "/{report_type}", strict=True)
    assert one["default_columns"] == ["category", "description", "net_amount", "currency"]
    assert (one["data_available_start"], one["data_available_end"], one["version"]) == (
        1577836800,
        AVAILABLE_END,
        1,
    )
    assert_error(
        api.get(f"{TYPES}/balance.nope.1"), 404, "No such reporting.report_type: 'balance.nope.1'", "report_type"
    )


# ------------------------------------------------------------------------------------ files


def _succeeded(api: Api, clock: FakeClock, form: dict) -> dict:
    run = api.create(form).json()
    clock.advance(30)
    return api.get(f"{RUNS}/{run['id']}").json()


def test_file_contents_need_the_key_and_serve_the_exact_result(
    sim: StripeSimulator, api: Api, clock: FakeClock
) -> None:
    run = _succeeded(api, clock, interval_form())
    url = run["result"]["url"]
    anonymous = requests.get(url, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["message"].startswith("You did not provide an API key.")
    response = api.get(url)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv"
    assert int(response.headers["Content-Length"]) == run["result"]["size"] == len(response.content)
    assert response.content == sim.result_content(run["id"])
    lines = response.content.decode().splitlines()
    assert lines[0] == "category,description,net_amount,currency"
    assert [line.split(",")[0] for line in lines[1:]] == ["starting_balance", "activity", "payouts", "ending_balance"]
    assert sim.requests()[-1].kind == "file_contents"

    file_object = api.get(f"/v1/files/{run['result']['id']}").json()
    validate_component(file_object, "file", strict=True)
    assert file_object == run["result"]


def test_result_content_is_a_function_of_report_type_and_parameters(
    sim: StripeSimulator, api: Api, clock: FakeClock
) -> None:
    form = interval_form("payouts.itemized.1", start=MAY_8 - 86400)
    a = _succeeded(api, clock, form)
    b = _succeeded(api, clock, form)
    c = _succeeded(api, clock, {**form, "parameters[currency]": "eur"})
    assert a["result"]["id"] != b["result"]["id"]
    assert sim.result_content(a["id"]) == sim.result_content(b["id"]) == api.get(b["result"]["url"]).content
    assert sim.result_content(c["id"]) != sim.result_content(a["id"])
    rows = sim.result_content(a["id"]).decode().splitlines()
    assert len(rows) == 1 + 36  # header + one row per hour of the 36-hour interval
    with StripeSimulator(seed=99, data_available_end=AVAILABLE_END) as other:
        run = Api(other).create(form).json()
        assert other.result_content(run["id"]) == sim.result_content(a["id"])


@pytest.mark.parametrize("extra", [1, 7, 150, 1000, 3 * (1 << 20) + 11])
def test_result_size_pads_every_file_to_exactly_that_size(
    sim: StripeSimulator, api: Api, clock: FakeClock, extra: int
) -> None:
    run = _succeeded(api, clock, interval_form("balance_change_from_activity.itemized.1"))
    natural = sim.result_content(run["id"])
    sim.result_size = len(natural) + extra
    content = sim.result_content(run["id"])
    assert len(content) == sim.result_size and content.startswith(natural)
    assert b"".join(sim.iter_result_content(run["id"], chunk=4096)) == content
    header_fields = natural.split(b"\n", 1)[0].count(b",")
    assert all(line.count(b",") == header_fields for line in content.splitlines() if line.strip())
    refreshed = api.get(f"{RUNS}/{run['id']}").json()
    assert refreshed["result"]["size"] == sim.result_size
    if extra > 1 << 20:
        assert api.get(refreshed["result"]["url"]).content == content


def test_result_size_smaller_than_the_report_truncates_it(sim: StripeSimulator, api: Api, clock: FakeClock) -> None:
    run = _succeeded(api, clock, interval_form("balance_change_from_activity.itemized.1"))
    natural = sim.result_content(run["id"])
    sim.result_size = 100
    assert sim.result_content(run["id"]) == natural[:100]


def test_large_result_files_stream_fast() -> None:
    size = 64 << 20
    with StripeSimulator(result_size=size, data_available_end=AVAILABLE_END) as sim:
        api = Api(sim)
        run = api.create(interval_form()).json()
        url = api.get(f"{RUNS}/{run['id']}").json()["result"]["url"]
        started = time.perf_counter()
        with api.get(url, stream=True) as response:
            received = sum(len(chunk) for chunk in response.iter_content(1 << 20))
        elapsed = time.perf_counter() - started
    assert received == size
    assert elapsed < 4.0, f"64 MiB took {elapsed:.2f}s"


def test_files_expire_after_file_ttl(clock: FakeClock) -> None:
    with StripeSimulator(file_ttl=60, data_available_end=AVAILABLE_END, clock=clock) as sim:
        api = Api(sim)
        run = api.get(f"{RUNS}/{api.create(interval_form()).json()['id']}").json()
        assert api.get(run["result"]["url"]).status_code == 200
        clock.advance(60)
        response = api.get(run["result"]["url"])
    assert_error(response, 404, f"The file {run['result']['id']} has expired and is no longer available.", "file")


def test_no_file_ttl_gives_null_expires_at(clock: FakeClock) -> None:
    with StripeSimulator(file_ttl=None, data_available_end=AVAILABLE_END, clock=clock) as sim:
        api = Api(sim)
        run = api.get(f"{RUNS}/{api.create(interval_form()).json()['id']}").json()
    assert run["result"]["expires_at"] is None
    validate_component(run, "reporting.report_run", strict=True)


def test_files_of_a_connected_account_need_its_stripe_account_header(sim: StripeSimulator, clock: FakeClock) -> None:
    connected = Api(sim, account="acct_A")
    run = _succeeded(connected, clock, interval_form())
    assert connected.get(run["result"]["url"]).status_code == 200
    assert Api(sim).get(run["result"]["url"]).status_code == 404


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


def _raw(sim: StripeSimulator, method: str, path: str, body: str | None = None, key: str | None = None) -> Any:
    conn = http.client.HTTPConnection(sim.host, sim.port, timeout=5)
    headers = {"Authorization": f"Bearer {sim.api_key}", "Idempotency-Key": key or "raw"}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=headers)
    return conn, conn.getresponse()


FORM_BODY = f"report_type=balance.summary.1&parameters[interval_start]={MAY_8}&parameters[interval_end]={AVAILABLE_END}"


def test_reset_closes_the_connection_without_a_response(clock: FakeClock) -> None:
    with StripeSimulator(
        faults=[Fault("create", "reset", times=1)], data_available_end=AVAILABLE_END, clock=clock
    ) as sim:
        with pytest.raises(ConnectionResetError):
            _raw(sim, "POST", RUNS, FORM_BODY)
        assert sim.report_runs() == []
        assert Api(sim).create(interval_form(), idempotency_key="raw").status_code == 200
        assert sim.requests()[0].status is None and sim.requests()[0].fault == "reset"


def test_lost_response_executes_the_create_then_drops_the_connection(clock: FakeClock) -> None:
    faults = [Fault("create", "lost_response", times=1)]
    with StripeSimulator(faults=faults, data_available_end=AVAILABLE_END, clock=clock) as sim:
        with pytest.raises(ConnectionError):
            _raw(sim, "POST", RUNS, FORM_BODY, key="lost")
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
        conn, response = _raw(sim, "GET", path)
        assert response.status == 200 and response.getheader("Content-Length") == "100000"
        with pytest.raises(http.client.IncompleteRead) as info:
            response.read()
        conn.close()
        assert len(info.value.partial) == 25_000
        assert api.get(run["result"]["url"]).content == sim.result_content(run["id"])


# ------------------------------------------------------------------------------------ HTTP


def test_every_response_has_a_request_id_and_json_errors_for_unknown_urls(sim: StripeSimulator, api: Api) -> None:
    response = api.get("/v1/charges")
    assert_error(
        response,
        404,
        "Unrecognized request URL (GET: /v1/charges). Please see https://stripe.com/docs or we can help at "
        "https://support.stripe.com/.",
    )
    ids = {api.get(TYPES).headers["Request-Id"] for _ in range(3)}
    assert len(ids) == 3


def test_keep_alive_requests_do_not_stall(sim: StripeSimulator, api: Api) -> None:
    api.get(TYPES)
    started = time.perf_counter()
    for _ in range(50):
        assert api.get(f"{TYPES}/balance.summary.1").status_code == 200
    elapsed = time.perf_counter() - started
    # With Nagle's algorithm on, each response would wait ~40 ms for a delayed ACK: 2 s in all.
    assert elapsed < 1.5, f"50 keep-alive requests took {elapsed:.2f}s"
    assert len({r.client for r in sim.requests()}) == 1


def test_two_hundred_concurrent_keep_alive_clients(sim: StripeSimulator) -> None:
    clients, per_client = 200, 3
    barrier = threading.Barrier(clients)
    statuses: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        api = Api(sim)
        barrier.wait()
        got = [api.get(f"{TYPES}/payouts.summary.1").status_code for _ in range(per_client)]
        with lock:
            statuses.extend(got)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    assert statuses == [200] * clients * per_client
    assert len({r.client for r in sim.requests()}) == clients  # one kept-alive connection each
    assert elapsed < 8.0


def test_stop_drops_idle_keep_alive_connections(clock: FakeClock) -> None:
    sim = StripeSimulator(clock=clock).start()
    conn = http.client.HTTPConnection(sim.host, sim.port, timeout=5)
    conn.request("GET", TYPES, headers={"Authorization": f"Bearer {sim.api_key}"})
    assert conn.getresponse().read()
    sim.stop()
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        conn.request("GET", TYPES, headers={"Authorization": f"Bearer {sim.api_key}"})
        conn.getresponse()
    conn.close()


# ------------------------------------------------------------------------------------ pytest plugin and CLI


def test_connection_fixture_points_airflow_at_the_simulator(stripe_simulator_connection: StripeSimulator) -> None:
    conn = json.loads(os.environ["AIRFLOW_CONN_STRIPE_DEFAULT"])
    assert conn == {
        "conn_type": "stripe",
        "password": stripe_simulator_connection.api_key,
        "host": stripe_simulator_connection.url,
    }
    assert Api(stripe_simulator_connection).get(TYPES).status_code == 200


@pytest.mark.stripe_simulator(run_delay=5.0, api_key="sk_test_marker")
def test_marker_configures_the_fixture(stripe_simulator: StripeSimulator) -> None:
    assert (stripe_simulator.run_delay, stripe_simulator.api_key) == (5.0, "sk_test_marker")
    assert Api(stripe_simulator).get(TYPES).status_code == 200


def test_command_line_serves_until_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_reportruns.testing",
            "--port",
            "0",
            "--api-key",
            "sk_test_cli",
            "--run-delay",
            "0",
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "simulator did not become ready"
            time.sleep(0.02)
        url = ready.read_text().strip()
        response = requests.get(url + TYPES, headers={"Authorization": "Bearer sk_test_cli"}, timeout=5)
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    line = next(x for x in out.splitlines() if x.startswith("AIRFLOW_CONN_STRIPE_DEFAULT="))
    conn = json.loads(shlex.split(line.split("=", 1)[1])[0])
    assert conn == {"conn_type": "stripe", "password": "sk_test_cli", "host": url}
    assert url in out


def test_simulator_imports_only_the_standard_library_and_the_plugin_imports_nothing_heavy() -> None:
    probe = (
        "import sys\n"
        "import airflow_provider_reportruns.testing\n"
        "import airflow_provider_reportruns.testing.pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m.startswith('airflow_provider_reportruns.testing.simulator')\n"
        "             or m == 'http.server'))\n"
        "import airflow_provider_reportruns.testing.simulator\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'requests', 'urllib3')\n"
        "             or m in ('airflow_provider_reportruns.client', 'airflow_provider_reportruns.hooks')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "[]"]


def test_simulator_modules_stay_small_and_share_no_private_names() -> None:
    package = Path(simulator_package.__file__).parent
    private_imports = []
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 500, f"{path.name} wants splitting"
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("airflow_provider_reportruns"):
                private_imports += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert private_imports == []
