"""The read endpoints: listing and paging runs, report types, result files and their expiry."""

from __future__ import annotations

import pytest
import requests
from _openapi import validate_component, validate_response
from _simulator_api import (  # noqa: F401
    AVAILABLE_END,
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
    succeeded,
)

from airflow_provider_reportruns.testing import StripeSimulator

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


def test_file_contents_need_the_key_and_serve_the_exact_result(
    sim: StripeSimulator, api: Api, clock: FakeClock
) -> None:
    run = succeeded(api, clock, interval_form())
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
    run = succeeded(connected, clock, interval_form())
    assert connected.get(run["result"]["url"]).status_code == 200
    assert Api(sim).get(run["result"]["url"]).status_code == 404
