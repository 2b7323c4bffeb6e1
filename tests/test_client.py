"""The Airflow-free Stripe client: encoding, argument checks, paging, limiter, host allow-list.

Retry and fault behaviour under a misbehaving server is proven in test_faults.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import threading
import time

import pytest

from airflow_provider_reportruns.client import (
    RateLimiter,
    ReportRunStatus,
    StripeError,
    StripeReportingClient,
    encode_form,
    mask_key,
    to_unix_seconds,
    validate_api_base,
)
from airflow_provider_reportruns.testing.simulator import StripeSimulator

JAN_1 = 1704067200  # 2024-01-01T00:00:00Z
DAY = 86400


@pytest.fixture
def sim():
    with StripeSimulator() as simulator:
        yield simulator


@pytest.fixture
def client(sim):
    with StripeReportingClient(
        sim.api_key, api_base=sim.url, max_requests_per_second=1000, initial_backoff=0.01
    ) as stripe_client:
        yield stripe_client


def test_encode_form_nests_parameters_and_indexes_lists_like_stripe_python():
    form = encode_form(
        {"report_type": "balance.summary.1", "parameters": {"interval_start": 1, "columns": ["a", "b"], "x": None}}
    )
    assert form == [
        ("report_type", "balance.summary.1"),
        ("parameters[interval_start]", "1"),
        ("parameters[columns][0]", "a"),
        ("parameters[columns][1]", "b"),
    ]


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


def test_every_post_carries_an_idempotency_key_and_the_callers_is_used(sim, client):
    client.create_report_run("balance.summary.1", {"interval_start": JAN_1, "interval_end": JAN_1 + DAY})
    client.create_report_run(
        "balance.summary.1", {"interval_start": JAN_1, "interval_end": JAN_1 + 2 * DAY}, idempotency_key="mine-1"
    )
    keys = [r.headers.get("Idempotency-Key") for r in sim.requests() if r.kind == "create"]
    assert keys[0] and len(keys[0]) >= 32
    assert keys[1] == "mine-1"


def test_same_idempotency_key_returns_the_same_run(sim, client):
    params = {"interval_start": JAN_1, "interval_end": JAN_1 + DAY}
    first = client.create_report_run("balance.summary.1", params, idempotency_key="k-1")
    second = client.create_report_run("balance.summary.1", params, idempotency_key="k-1")
    assert first["id"] == second["id"]
    assert len(sim.report_runs()) == 1


def test_headers_carry_account_and_version_but_never_log_the_key(sim):
    with StripeReportingClient(
        sim.api_key, api_base=sim.url, stripe_account="acct_123", api_version="2023-08-16"
    ) as client:
        client.list_report_types()
    (request,) = sim.requests()
    assert request.account == "acct_123"
    assert request.headers["Stripe-Version"] == "2023-08-16"
    assert sim.api_key not in repr(client)


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


def test_result_url_on_a_foreign_host_is_refused_without_a_request(sim, client):
    with pytest.raises(StripeError, match=r"Refusing to download a result file from https://evil\.example"):
        client.download_to_path("https://evil.example/v1/files/file_1/contents", "/tmp/never.csv")
    assert sim.requests() == []


def test_stripe_file_host_is_allowed_for_the_default_api_base():
    client = StripeReportingClient("sk_test_x")
    assert client.check_file_url("https://files.stripe.com/v1/files/file_1/contents")
    with pytest.raises(StripeError, match="Refusing"):
        client.check_file_url("http://files.stripe.com/v1/files/file_1/contents")


def test_download_streams_exact_bytes_to_the_destination(sim, client, tmp_path):
    run = client.create_report_run("balance.summary.1", {"interval_start": JAN_1, "interval_end": JAN_1 + DAY})
    sim.finish_report_run(run["id"])
    run = client.get_report_run(run["id"])
    target = tmp_path / "a" / "b" / "report.csv"
    path = client.download_to_path(run["result"]["url"], target, expected_size=run["result"]["size"])
    assert target.read_bytes() == sim.result_content(run["id"])
    assert path == str(target)
    assert [p.name for p in target.parent.iterdir()] == ["report.csv"]


def test_download_with_a_wrong_announced_size_fails_and_leaves_nothing(sim, client, tmp_path):
    run = client.create_report_run("balance.summary.1", {"interval_start": JAN_1, "interval_end": JAN_1 + DAY})
    sim.finish_report_run(run["id"])
    url = client.get_report_run(run["id"])["result"]["url"]
    client.max_retries = 0
    with pytest.raises(StripeError, match=r"is incomplete: received \d+ bytes, Stripe announced 1 \(result.size\)"):
        client.download_to_path(url, tmp_path / "r.csv", expected_size=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (JAN_1, JAN_1),
        (str(JAN_1), JAN_1),
        (float(JAN_1), JAN_1),
        ("2024-01-01T00:00:00Z", JAN_1),
        ("2024-01-01T01:00:00+01:00", JAN_1),
        (dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), JAN_1),
    ],
)
def test_to_unix_seconds_accepts_ints_iso_strings_and_aware_datetimes(value, expected):
    assert to_unix_seconds(value, "interval_start") == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (dt.datetime(2024, 1, 1), r"interval_start is a naive datetime \(2024-01-01T00:00:00\); pass a timezone-aware"),
        ("2024-01-01T00:00:00", r"interval_start is a naive datetime"),
        (
            "yesterday",
            r"interval_start must be Unix seconds, an aware datetime or an ISO 8601 date-time, got 'yesterday'",
        ),
        (1.5, r"interval_start must be a whole number of Unix seconds, got 1.5"),
        (True, r"interval_start must be a timestamp, got the boolean True"),
        ([1], r"interval_start must be Unix seconds, an aware datetime or an ISO 8601 date-time, got list"),
    ],
)
def test_to_unix_seconds_refuses_what_it_cannot_place_in_utc(value, message):
    with pytest.raises(ValueError, match=message):
        to_unix_seconds(value, "interval_start")


def test_mask_key_keeps_only_prefix_and_last_four():
    assert mask_key("sk_test_abcdefghij1234") == "sk_test_…1234"
    assert "abcdefghij" not in mask_key("sk_test_abcdefghij1234")


def test_rate_limiter_never_admits_more_than_rate_starts_per_second_across_threads():
    limiter = RateLimiter(50)
    starts: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            limiter.acquire()
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    starts.sort()
    assert len(starts) == 80
    worst = max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts)
    assert worst <= 50 * (1 - RateLimiter.HEADROOM)
    # Pacing: after a burst of RateLimiter.BURST, one start every 1/50 s.
    assert starts[-1] - starts[0] >= (79 - (RateLimiter.BURST - 1)) / (50 * (1 - RateLimiter.HEADROOM)) - 0.05


def test_rate_limiter_lets_a_short_burst_start_without_pacing():
    limiter = RateLimiter(20)
    assert [limiter.reserve() for _ in range(RateLimiter.BURST)] == [0.0] * RateLimiter.BURST
    assert limiter.reserve() > 0.0


def test_rate_limiter_async_and_penalty_hold_back_every_waiter():
    limiter = RateLimiter(1000)
    limiter.penalize(0.3)
    started = time.monotonic()

    async def main() -> None:
        await asyncio.gather(*(limiter.acquire_async() for _ in range(5)))

    asyncio.run(main())
    assert time.monotonic() - started >= 0.29


def test_rate_limiter_refuses_a_non_positive_rate():
    with pytest.raises(ValueError, match="max_requests_per_second must be a positive number, got 0"):
        RateLimiter(0)


def test_clients_of_one_account_share_one_limiter(sim):
    a = StripeReportingClient(sim.api_key, api_base=sim.url, max_requests_per_second=7)
    b = StripeReportingClient(sim.api_key, api_base=sim.url, max_requests_per_second=7)
    c = StripeReportingClient(sim.api_key, api_base=sim.url, stripe_account="acct_9", max_requests_per_second=7)
    assert a.rate_limiter is b.rate_limiter
    assert a.rate_limiter is not c.rate_limiter


def test_arequest_runs_the_call_off_the_event_loop(sim, client):
    async def main() -> tuple[list[dict], float]:
        ticks: list[float] = []

        async def ticker() -> None:
            for _ in range(20):
                ticks.append(time.monotonic())
                await asyncio.sleep(0.005)

        tick_task = asyncio.create_task(ticker())
        types = await client.arequest("list_report_types")
        await tick_task
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        return types, max(gaps)

    types, worst_gap = asyncio.run(main())
    assert any(t["id"] == "balance.summary.1" for t in types)
    assert worst_gap < 0.1


def test_max_retries_must_be_a_whole_number():
    with pytest.raises(ValueError, match="max_retries must be a whole number >= 0, got -1"):
        StripeReportingClient("sk_test_x", max_retries=-1)
