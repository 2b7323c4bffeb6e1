"""Errors as types: what kind of failure an answer is, decided once, raised as the caller's class."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _client import DAY, JAN_1, client  # noqa: F401

from airflow_provider_reportruns.client import (
    ERROR_KINDS,
    StripeDataNotReadyError,
    StripeError,
    StripePermanentError,
    StripeReportingClient,
    StripeTransientError,
    classify_response,
)
from airflow_provider_reportruns.testing.simulator import Fault, StripeSimulator


@pytest.fixture
def sim() -> Iterator[StripeSimulator]:
    with StripeSimulator() as simulator:
        yield simulator


def test_stripe_error_names_status_type_param_message_and_request_id(client):
    with pytest.raises(StripeError) as caught:
        client.create_report_run("balance.summary.1", {"interval_start": JAN_1, "interval_end": 4102444800})
    error = caught.value
    assert error.http_status == 400
    assert error.error_type == "invalid_request_error"
    assert error.param == "parameters[interval_end]"
    assert error.request_id and error.request_id.startswith("req_")
    assert error.is_data_unavailable
    assert str(error).startswith(
        "Stripe rejected the report run for balance.summary.1 (400 invalid_request_error, param parameters[interval_end]):"
    )
    assert f"(request {error.request_id})" in str(error)


def test_unknown_run_is_a_404_with_stripes_message(client):
    with pytest.raises(StripeError, match=r"404 invalid_request_error.*No such reporting.report_run: 'frr_nope'") as e:
        client.get_report_run("frr_nope")
    assert e.value.transient is False


DATA_LATER = "Data for the report type balance.summary.1 is only available through 2024-03-01 00:00:00 UTC."
DATA_EARLIER = "Data for the report type balance.summary.1 is only available starting from 2015-01-01 00:00:00 UTC."


@pytest.mark.parametrize(
    ("status", "should_retry", "message", "kind"),
    [
        (409, None, "Keys for idempotent requests can only be used once at a time.", StripeTransientError),
        (429, None, "Too many requests.", StripeTransientError),
        (500, None, "", StripeTransientError),
        (502, None, None, StripeTransientError),
        (503, None, None, StripeTransientError),
        # Stripe-Should-Retry decides first, either way.
        (400, "true", "anything", StripeTransientError),
        (404, "true", "No such reporting.report_run", StripeTransientError),
        (429, "false", "Too many requests.", StripePermanentError),
        (409, "false", None, StripePermanentError),
        (500, "false", None, StripePermanentError),
        # Data that comes later is not ready; data from before the account's start never will be.
        (400, None, DATA_LATER, StripeDataNotReadyError),
        (400, "false", DATA_LATER, StripeDataNotReadyError),
        (400, None, DATA_EARLIER, StripePermanentError),
        (400, None, None, StripePermanentError),
        (401, None, "Invalid API Key provided", StripePermanentError),
        (403, None, "The provided key does not have access", StripePermanentError),
        (404, None, "No such reporting.report_run: 'frr_x'", StripePermanentError),
    ],
)
def test_classify_response_decides_each_answer_once(status, should_retry, message, kind):
    assert classify_response(status, should_retry, message) is kind


class MyTransient(StripeTransientError):
    pass


class MyNotReady(StripeDataNotReadyError):
    pass


class MyPermanent(StripePermanentError):
    pass


class MyLocal(StripeError):
    pass


@pytest.fixture
def typed_client(sim):
    with StripeReportingClient(
        sim.api_key,
        api_base=sim.url,
        max_requests_per_second=1000,
        max_retries=0,
        error_class=MyLocal,
        error_classes={
            StripeTransientError: MyTransient,
            StripeDataNotReadyError: MyNotReady,
            StripePermanentError: MyPermanent,
        },
    ) as stripe_client:
        yield stripe_client


def test_a_transient_failure_is_raised_as_the_callers_transient_class(sim, typed_client):
    sim.add_fault(Fault("report_types", "503"))
    with pytest.raises(MyTransient, match=r"Stripe failed on the report type list \(503 api_error"):
        typed_client.list_report_types()


def test_data_not_ready_is_raised_as_the_callers_not_ready_class(sim, typed_client):
    end = typed_client.get_report_type("balance.summary.1")["data_available_end"]
    with pytest.raises(MyNotReady, match="is only available through") as caught:
        typed_client.create_report_run("balance.summary.1", {"interval_start": JAN_1, "interval_end": end + DAY})
    assert caught.value.is_data_unavailable and not caught.value.transient


def test_a_permanent_refusal_is_raised_as_the_callers_permanent_class(typed_client):
    with pytest.raises(MyPermanent, match=r"No such reporting\.report_run: 'frr_nope'"):
        typed_client.get_report_run("frr_nope")


def test_a_refused_file_host_is_permanent_and_a_local_failure_is_of_no_kind(typed_client, tmp_path):
    with pytest.raises(MyPermanent, match=r"Refusing to download a result file from https://evil\.example"):
        typed_client.download_file("https://evil.example/v1/files/file_1/contents", lambda chunk: None)
    (tmp_path / "taken").write_text("a file where a directory should be")
    with pytest.raises(MyLocal) as caught:
        typed_client.download_to_path(typed_client.api_base + "/v1/files/x", tmp_path / "taken" / "r.csv")
    assert type(caught.value) is MyLocal
    assert str(caught.value).startswith(f"Cannot write the result file to {tmp_path / 'taken' / 'r.csv'}: ")


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (
            {StripePermanentError: MyTransient},
            "error_classes maps StripePermanentError to MyTransient, which is not a subclass of it.",
        ),
        (
            {StripeTransientError: ValueError},
            "error_classes maps StripeTransientError to ValueError, which is not a subclass of it.",
        ),
        (
            {StripeTransientError: "MyTransient"},
            "error_classes maps StripeTransientError to 'MyTransient', which is not a subclass of it.",
        ),
        (
            {StripeError: MyLocal},
            "error_classes maps StripeError, which is not one of the kinds StripeTransientError, "
            "StripeDataNotReadyError, StripePermanentError.",
        ),
    ],
)
def test_a_mapping_that_is_not_kind_to_subclass_is_refused(mapping, message):
    with pytest.raises(ValueError) as caught:
        StripeReportingClient("sk_test_x", error_classes=mapping)
    assert str(caught.value) == message


def test_every_kind_maps_to_itself_by_default():
    assert StripeReportingClient("sk_test_x").error_classes == {kind: kind for kind in ERROR_KINDS}


def test_an_error_keeps_its_kind_and_fields_through_pickling():
    import pickle

    error = MyNotReady("not yet", http_status=400, param="parameters[interval_end]", request_id="req_1")
    error.partial_download = True
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is MyNotReady
    assert (str(copy), copy.http_status, copy.param, copy.request_id, copy.partial_download) == (
        "not yet",
        400,
        "parameters[interval_end]",
        "req_1",
        True,
    )
