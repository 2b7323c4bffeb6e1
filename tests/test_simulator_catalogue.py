"""The simulator's report-type catalogue: full column sets, unknown columns refused, every column filled."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
import requests
from _openapi import validate_component
from _simulator_api import AVAILABLE_END, MAY_8, RUNS

from airflow_provider_reportruns.client import StripeError, StripeReportingClient
from airflow_provider_reportruns.testing.simulator import StripeSimulator
from airflow_provider_reportruns.testing.simulator.catalogue import (
    DEFAULT_LIVE_ONLY_REPORT_TYPES,
    REPORT_TYPE_IDS,
    REPORT_TYPES,
    interval_reading,
)

MAY_7 = MAY_8 - 86400
TYPO_MESSAGE = (
    "Invalid column `reporting_categroy` for the report type balance_change_from_activity.itemized.3. "
    "Did you mean `reporting_category`? The columns it supports are listed at "
    "https://stripe.com/docs/reports/report-types."
)


@pytest.fixture
def sim() -> Iterator[StripeSimulator]:
    # A live key, so the connected_account_* types run too.
    with StripeSimulator(api_key="sk_live_catalogue", data_available_end=AVAILABLE_END) as simulator:
        yield simulator


def create(sim: StripeSimulator, report_type: str, columns: list[str], **parameters: object) -> requests.Response:
    spec = REPORT_TYPES[report_type]
    form: dict[str, object] = {"report_type": report_type}
    if "interval_start" in spec.required:
        form["parameters[interval_start]"] = MAY_7
    if "interval_end" in spec.required:
        form["parameters[interval_end]"] = MAY_7 + 86400
    if "payout" in spec.required:
        form["parameters[payout]"] = "po_1Catalogue"
    for name, value in parameters.items():
        form[f"parameters[{name}]"] = value
    for index, column in enumerate(columns):
        form[f"parameters[columns][{index}]"] = column
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    return requests.post(sim.url + RUNS, data=form, headers=headers, timeout=10)


def test_a_misspelt_column_is_a_stripe_shaped_400_naming_it(sim: StripeSimulator) -> None:
    response = create(sim, "balance_change_from_activity.itemized.3", ["net", "reporting_categroy"])
    assert response.status_code == 400, response.text
    validate_component(response.json(), "error", strict=True)
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "parameter_unknown"
    assert error["param"] == "parameters[columns]"
    assert error["message"] == TYPO_MESSAGE
    assert sim.report_runs() == []


def test_several_unknown_columns_name_the_first_and_count_the_rest(sim: StripeSimulator) -> None:
    response = create(sim, "payouts.summary.1", ["net", "nope", "balance_transaction_id", "created_utc"])
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("Invalid column `nope` for the report type payouts.summary.1. (2 more unknown columns")


def test_client_raises_the_400_with_stripes_fields(sim: StripeSimulator) -> None:
    with (
        StripeReportingClient(sim.api_key, api_base=sim.url, max_requests_per_second=1000) as client,
        pytest.raises(StripeError) as caught,
    ):
        client.create_report_run(
            "balance_change_from_activity.itemized.3",
            {"interval_start": MAY_7, "interval_end": MAY_7 + 86400, "columns": ["net", "reporting_categroy"]},
        )
    error = caught.value
    assert (error.http_status, error.error_type, error.code, error.param) == (
        400,
        "invalid_request_error",
        "parameter_unknown",
        "parameters[columns]",
    )
    assert error.stripe_message == TYPO_MESSAGE
    assert "reporting_categroy" in str(error)
    assert not error.transient
    assert sim.report_runs() == []


def test_a_column_of_another_report_type_is_refused(sim: StripeSimulator) -> None:
    # payout_id exists on payouts.itemized.*, not on the balance change reports.
    response = create(sim, "balance_change_from_activity.itemized.1", ["payout_id"])
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(
        "Invalid column `payout_id` for the report type balance_change_from_activity.itemized.1."
    )


def test_local_time_columns_need_a_type_that_takes_timezone(sim: StripeSimulator) -> None:
    assert create(sim, "balance_change_from_activity.itemized.3", ["created", "created_utc"]).status_code == 200
    refused = create(sim, "balance_change_from_activity.itemized.2", ["created"])
    assert refused.status_code == 400
    assert "Did you mean `created_utc`?" in refused.json()["error"]["message"]


def test_metadata_columns_take_any_key_on_itemized_transaction_reports_only(sim: StripeSimulator) -> None:
    ok = create(sim, "payout_reconciliation.itemized.5", ["balance_transaction_id", "payment_metadata[order_id]"])
    assert ok.status_code == 200, ok.text
    content = sim.result_content(ok.json()["id"]).decode()
    rows = list(csv.reader(io.StringIO(content)))
    assert rows[0] == ["balance_transaction_id", "payment_metadata[order_id]"]
    assert all(row[1].startswith("order_id-") for row in rows[1:])
    for bad in (["payment_metadata[]"], ["payment_metadata"], ["invoice_metadata[x]"]):
        assert create(sim, "payout_reconciliation.itemized.5", bad).status_code == 400, bad
    assert create(sim, "payout_reconciliation.summary.1", ["payment_metadata[order_id]"]).status_code == 400


@pytest.mark.parametrize("report_type", REPORT_TYPE_IDS)
def test_every_column_of_every_report_type_gets_a_value(sim: StripeSimulator, report_type: str) -> None:
    spec = REPORT_TYPES[report_type]
    columns = list(spec.columns)
    response = create(sim, report_type, columns, timezone="America/New_York") if "timezone" in spec.optional else None
    if response is None:
        response = create(sim, report_type, columns)
    assert response.status_code == 200, response.text
    rows = list(csv.reader(io.StringIO(sim.result_content(response.json()["id"]).decode())))
    assert rows[0] == columns
    assert len(rows) > 1
    for row in rows[1:]:
        empty = [column for column, cell in zip(columns, row, strict=True) if cell == ""]
        assert empty == [], f"{report_type}: no value for {empty}"


def test_the_catalogue_is_consistent() -> None:
    for rid, spec in REPORT_TYPES.items():
        assert spec.columns[: len(spec.default_columns)] == spec.default_columns, rid
        assert len(set(spec.columns)) == len(spec.columns), rid
        assert "columns" in spec.optional and not spec.required & spec.optional, rid
        assert spec.live_mode_only == (rid in DEFAULT_LIVE_ONLY_REPORT_TYPES) == rid.startswith("connected_account_")
        if rid.startswith("connected_account_"):
            base = REPORT_TYPES[rid.removeprefix("connected_account_")]
            assert spec.columns == ("connected_account", *base.columns)
            assert spec.optional == base.optional | {"connected_account"}
    assert interval_reading(REPORT_TYPES["payouts.itemized.3"]).startswith("`interval_start` (inclusive)")
    assert "no `interval_start`" in interval_reading(REPORT_TYPES["ending_balance_reconciliation.itemized.4"])
    assert interval_reading(REPORT_TYPES["payout_reconciliation.by_id.summary.1"]).startswith("no interval")
