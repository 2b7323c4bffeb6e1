"""Result file content: a function of the run, padded or truncated to an exact size, streamed."""

from __future__ import annotations

import time

import pytest
from _simulator_api import (  # noqa: F401
    AVAILABLE_END,
    MAY_8,
    RUNS,
    Api,
    FakeClock,
    api,
    clock,
    interval_form,
    sim,
    succeeded,
)

from airflow_provider_reportruns.testing import StripeSimulator


def test_result_content_is_a_function_of_report_type_and_parameters(
    sim: StripeSimulator, api: Api, clock: FakeClock
) -> None:
    form = interval_form("payouts.itemized.1", start=MAY_8 - 86400)
    a = succeeded(api, clock, form)
    b = succeeded(api, clock, form)
    c = succeeded(api, clock, {**form, "parameters[currency]": "eur"})
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
    run = succeeded(api, clock, interval_form("balance_change_from_activity.itemized.1"))
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
    run = succeeded(api, clock, interval_form("balance_change_from_activity.itemized.1"))
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
