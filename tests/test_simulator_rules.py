"""The rules of a create: form decoding and validation, authentication, idempotency, accounts."""

from __future__ import annotations

import threading
import time

import jsonschema
import pytest
import requests
from _openapi import validate_component, validate_create_form
from _simulator_api import (  # noqa: F401
    AVAILABLE_END,
    MAY_8,
    MAY_9,
    RUNS,
    T0,
    TYPES,
    Api,
    FakeClock,
    api,
    assert_error,
    clock,
    interval_form,
    sim,
)

from airflow_provider_reportruns.testing import Fault, StripeSimulator

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
