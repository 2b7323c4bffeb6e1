"""What the simulator's test modules share: a fake clock, a small HTTP client and their fixtures."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from _openapi import validate_component, validate_response

from airflow_provider_reportruns.testing import StripeSimulator

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


def succeeded(api: Api, clock: FakeClock, form: dict) -> dict:
    run = api.create(form).json()
    clock.advance(30)
    return api.get(f"{RUNS}/{run['id']}").json()


def raw(sim: StripeSimulator, method: str, path: str, body: str | None = None, key: str | None = None) -> Any:
    conn = http.client.HTTPConnection(sim.host, sim.port, timeout=5)
    headers = {"Authorization": f"Bearer {sim.api_key}", "Idempotency-Key": key or "raw"}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=headers)
    return conn, conn.getresponse()


FORM_BODY = f"report_type=balance.summary.1&parameters[interval_start]={MAY_8}&parameters[interval_end]={AVAILABLE_END}"
