"""The Reporting API calls: report runs (create, retrieve, list, paging) and report types,
with every argument checked before a request goes out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _client import DAY, JAN_1, client  # noqa: F401

from airflow_provider_reportruns.client import ReportRunStatus
from airflow_provider_reportruns.testing.simulator import StripeSimulator


@pytest.fixture
def sim() -> Iterator[StripeSimulator]:
    with StripeSimulator() as simulator:
        yield simulator


def test_create_sends_form_encoded_parameters_the_simulator_decodes(sim, client):
    run = client.create_report_run(
        "balance.summary.1",
        {"interval_start": JAN_1, "interval_end": JAN_1 + DAY, "columns": ["category", "net_amount"]},
    )
    (request,) = [r for r in sim.requests() if r.kind == "create"]
    assert request.form_pairs == (
        ("report_type", "balance.summary.1"),
        ("parameters[interval_start]", str(JAN_1)),
        ("parameters[interval_end]", str(JAN_1 + DAY)),
        ("parameters[columns][0]", "category"),
        ("parameters[columns][1]", "net_amount"),
    )
    assert run["parameters"]["interval_start"] == JAN_1
    assert run["parameters"]["columns"] == ["category", "net_amount"]
    assert run["status"] in {status.value for status in ReportRunStatus}


def test_iter_report_runs_follows_has_more_newest_first_without_overlap(sim, client):
    ids = [
        client.create_report_run("balance.summary.1", {"interval_start": JAN_1, "interval_end": JAN_1 + (i + 1) * DAY})[
            "id"
        ]
        for i in range(7)
    ]
    seen = [run["id"] for run in client.iter_report_runs(page_size=3)]
    assert seen == list(reversed(ids))
    assert sum(1 for r in sim.requests() if r.kind == "list") == 3


def test_list_passes_created_filters_and_cursors(sim, client):
    first = client.create_report_run("balance.summary.1", {"interval_start": JAN_1, "interval_end": JAN_1 + DAY})
    page = client.list_report_runs(created={"gte": first["created"]}, limit=5)
    assert [r["id"] for r in page["data"]] == [first["id"]]
    assert client.list_report_runs(created={"lt": first["created"]})["data"] == []
    assert client.list_report_runs(created=first["created"])["data"][0]["id"] == first["id"]
    assert client.list_report_runs(ending_before=first["id"])["data"] == []
    query = next(r.query for r in sim.requests() if r.kind == "list")
    assert query == {"created[gte]": str(first["created"]), "limit": "5"}


@pytest.mark.parametrize("limit", [0, 101, -1, True, 2.5])
def test_limit_outside_1_to_100_is_refused_before_any_request(sim, client, limit):
    with pytest.raises(ValueError, match=r"limit must be a whole number from 1 to 100"):
        client.list_report_runs(limit=limit)
    assert sim.requests() == []


def test_both_cursors_are_refused_before_any_request(sim, client):
    with pytest.raises(ValueError, match="Pass starting_after or ending_before, not both"):
        client.list_report_runs(starting_after="frr_a", ending_before="frr_b")
    assert sim.requests() == []


def test_unknown_created_operator_is_refused(client):
    with pytest.raises(ValueError, match="created filter keys must be among gt, gte, lt, lte"):
        client.list_report_runs(created={"after": 1})


def test_report_run_id_must_look_like_one(sim, client):
    with pytest.raises(ValueError, match=r"report_run_id '\.\./v1/charges' is not a Stripe id"):
        client.get_report_run("../v1/charges")
    with pytest.raises(ValueError, match=r"'file_1' is not a Stripe report run id \(they start with 'frr_'\)"):
        client.get_report_run("file_1")
    assert sim.requests() == []


def test_report_types_list_and_get(client):
    types = client.list_report_types()
    assert "balance.summary.1" in {t["id"] for t in types}
    one = client.get_report_type("balance.summary.1")
    assert one["data_available_end"] > one["data_available_start"]
