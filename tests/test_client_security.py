"""Where a key may go: usable keys, https or loopback API bases, the result file host allow-list."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _client import client  # noqa: F401

from airflow_provider_reportruns.client import StripeError, StripeReportingClient, mask_key, validate_api_base
from airflow_provider_reportruns.testing.simulator import StripeSimulator


@pytest.fixture
def sim() -> Iterator[StripeSimulator]:
    with StripeSimulator() as simulator:
        yield simulator


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "No Stripe secret key in the client"),
        ("   ", "No Stripe secret key in the client"),
        ("pk_test_123", "is a publishable key (pk_…), which cannot call the Reporting API"),
    ],
)
def test_unusable_keys_are_refused_before_any_request(key, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        StripeReportingClient(key)


@pytest.mark.parametrize(
    ("base", "message"),
    [
        ("http://api.example.com", "Refusing plain http:// to api.example.com"),
        ("ftp://127.0.0.1", "is not a URL with a scheme and host"),
        ("api.stripe.com", "is not a URL with a scheme and host"),
        ("https://api.stripe.com/?x=1", "must not carry a query"),
    ],
)
def test_api_base_must_be_https_or_loopback_http(base, message):
    with pytest.raises(ValueError, match=message.replace("?", r"\?")):
        validate_api_base(base)


@pytest.mark.parametrize("base", ["http://127.0.0.1:1234", "http://localhost:5", "http://[::1]:9", "https://x.test"])
def test_loopback_http_and_any_https_are_accepted(base):
    assert validate_api_base(base + "/") == base


def test_mask_key_keeps_only_prefix_and_last_four():
    assert mask_key("sk_test_abcdefghij1234") == "sk_test_…1234"
    assert "abcdefghij" not in mask_key("sk_test_abcdefghij1234")


def test_result_url_on_a_foreign_host_is_refused_without_a_request(sim, client):
    with pytest.raises(StripeError, match=r"Refusing to download a result file from https://evil\.example"):
        client.download_to_path("https://evil.example/v1/files/file_1/contents", "/tmp/never.csv")
    assert sim.requests() == []


def test_stripe_file_host_is_allowed_for_the_default_api_base():
    client = StripeReportingClient("sk_test_x")
    assert client.check_file_url("https://files.stripe.com/v1/files/file_1/contents")
    with pytest.raises(StripeError, match="Refusing"):
        client.check_file_url("http://files.stripe.com/v1/files/file_1/contents")
