"""StripeReportingHook: Airflow connection → client, over real HTTP to the simulator."""

from __future__ import annotations

import pytest
from _sim import FAST_BACKOFF, sim, stripe_conn  # noqa: F401

from airflow_provider_reportruns.hooks.stripe import (
    StripeReportingError,
    StripeReportingHook,
    StripeReportRunFailed,
    check_report_run,
    report_run_from_metadata,
    result_file_metadata,
)

JAN_1 = 1704067200
DAY = 86400
PARAMS = {"interval_start": JAN_1, "interval_end": JAN_1 + DAY}


def hook(**kwargs) -> StripeReportingHook:
    return StripeReportingHook(initial_backoff=FAST_BACKOFF, **kwargs)


def test_hook_runs_the_whole_flow_against_the_simulator(stripe_conn, tmp_path):
    h = hook()
    run = h.create_report_run("balance.summary.1", PARAMS)
    assert h.get_report_run(run["id"])["id"] == run["id"]
    stripe_conn.finish_report_run(run["id"])
    assert [r["id"] for r in h.iter_report_runs()] == [run["id"]]
    assert h.list_report_runs(limit=1)["data"][0]["id"] == run["id"]
    assert "balance.summary.1" in {t["id"] for t in h.list_report_types()}
    assert h.get_report_type("balance.summary.1")["id"] == "balance.summary.1"
    path = h.download_report_run(run["id"], tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_bytes() == stripe_conn.result_content(run["id"])
    assert path == str(tmp_path / "out.csv")


def test_download_of_a_pending_run_is_refused_with_its_status(stripe_conn, tmp_path):
    h = hook()
    run = h.create_report_run("balance.summary.1", PARAMS)
    stripe_conn.finish_report_run(run["id"], status="pending")
    with pytest.raises(
        StripeReportingError, match=rf"Report run {run['id']} has no result file to download yet \(status 'pending'\)"
    ):
        h.download_report_run(run["id"], tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_download_refreshes_a_run_whose_file_is_about_to_expire(stripe_conn, tmp_path):
    h = hook()
    run = h.create_report_run("balance.summary.1", PARAMS)
    stripe_conn.finish_report_run(run["id"])
    stale = h.get_report_run(run["id"])
    stale["result"] = dict(stale["result"], expires_at=1, url=stale["result"]["url"] + "-stale")
    stripe_conn.clear_requests()
    h.download_report_run(stale, tmp_path / "x.csv")
    kinds = [r.kind for r in stripe_conn.requests()]
    assert kinds == ["retrieve", "file_contents"]


def test_metadata_round_trip_gives_a_downloadable_run(stripe_conn, tmp_path):
    h = hook()
    run = h.create_report_run("balance.summary.1", PARAMS)
    stripe_conn.finish_report_run(run["id"])
    metadata = result_file_metadata(h.get_report_run(run["id"]))
    assert set(metadata) == {"report_run_id", "report_type", "id", "url", "size", "type", "filename", "expires_at"}
    stripe_conn.clear_requests()
    h.download_report_run(report_run_from_metadata(metadata), tmp_path / "m.csv")
    assert [r.kind for r in stripe_conn.requests()] == ["file_contents"]


def test_status_model_passes_succeeded_waits_on_anything_else_and_fails_failed():
    assert check_report_run({"status": "succeeded"}) is True
    assert check_report_run({"status": "pending"}) is False
    assert check_report_run({"status": "something_new"}) is False
    with pytest.raises(StripeReportRunFailed, match=r"Stripe report run frr_1 \(balance.summary.1\) failed: boom"):
        check_report_run({"id": "frr_1", "report_type": "balance.summary.1", "status": "failed", "error": "boom"})


def test_connection_in_uri_form_with_account_and_version(sim, airflow_conn, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_STRIPE_URI",
        f"stripe://:{sim.api_key}@127.0.0.1:{sim.url.rsplit(':', 1)[1]}?stripe_account=acct_1&api_version=2023-08-16",
    )
    h = hook(stripe_conn_id="stripe_uri")
    assert h.client.api_base == sim.url
    assert h.client.stripe_account == "acct_1"
    h.list_report_types()
    assert sim.requests()[-1].headers == {"Stripe-Account": "acct_1", "Stripe-Version": "2023-08-16"}


def test_connection_in_json_form_with_extras(sim, airflow_conn):
    airflow_conn(
        "stripe_json",
        conn_type="stripe",
        host=sim.url,
        password=sim.api_key,
        extra={"max_requests_per_second": "5", "max_retries": 1, "timeout": 3, "api_version": ""},
    )
    client = hook(stripe_conn_id="stripe_json").client
    assert client.rate_limiter.rate == 5.0
    assert client.max_retries == 1
    assert client.timeout == 3.0
    assert client.api_version is None


def test_empty_host_means_stripe_and_https(airflow_conn):
    airflow_conn("stripe_prod", conn_type="stripe", password="sk_test_123")
    assert hook(stripe_conn_id="stripe_prod").client.api_base == "https://api.stripe.com"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"password": ""},
            "No Stripe secret key in connection 'bad': put an sk_… or rk_… key in the Secret key (password) field.",
        ),
        ({"password": "pk_live_1"}, "The Stripe key in connection 'bad' is a publishable key (pk_…)"),
        (
            {"password": "sk_test_1", "host": "http://stripe.example.com"},
            "Refusing plain http:// to stripe.example.com",
        ),
        ({"password": "sk_test_1", "host": "ftp://x"}, "is not a URL with a scheme and host"),
        (
            {"password": "sk_test_1", "extra": {"stripe_acount": "acct_1"}},
            "Unknown extra field(s) stripe_acount in connection 'bad'; allowed: stripe_account, api_version,",
        ),
        (
            {"password": "sk_test_1", "extra": {"verify": False}},
            "TLS verification cannot be switched off for Stripe connections.",
        ),
        (
            {"password": "sk_test_1", "extra": {"max_requests_per_second": "fast"}},
            "The extra field max_requests_per_second in connection 'bad' must be a number > 0, got 'fast'.",
        ),
        (
            {"password": "sk_test_1", "extra": {"max_retries": 1.5}},
            "The extra field max_retries in connection 'bad' must be a whole number >= 0, got 1.5.",
        ),
        (
            {"password": "sk_test_1", "extra": {"stripe_account": "1234"}},
            "The extra field stripe_account in connection 'bad' must be an account id (acct_…).",
        ),
    ],
)
def test_malformed_connections_fail_before_any_request(airflow_conn, fields, message):
    airflow_conn("bad", conn_type="stripe", **fields)
    with pytest.raises(StripeReportingError) as caught:
        hook(stripe_conn_id="bad").client  # noqa: B018
    assert message in str(caught.value)


def test_missing_connection_says_how_to_define_it():
    with pytest.raises(
        StripeReportingError,
        match=r"The Airflow connection 'nowhere' is not defined: create it with conn type 'stripe'.*AIRFLOW_CONN_NOWHERE",
    ):
        hook(stripe_conn_id="nowhere").client  # noqa: B018
