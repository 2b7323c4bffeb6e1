"""Result files on disk: exact bytes, nothing left behind on failure, and the mode open() would give."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from _client import DAY, JAN_1, client  # noqa: F401

from airflow_provider_reportruns.client import StripeError
from airflow_provider_reportruns.testing.simulator import StripeSimulator


@pytest.fixture
def sim() -> Iterator[StripeSimulator]:
    with StripeSimulator() as simulator:
        yield simulator


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


@pytest.fixture
def umask():
    """``umask(value)`` sets the process umask for the test; the old one comes back after."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(previous)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_downloaded_file_gets_the_mode_open_would_give_it(sim, client, tmp_path, umask, mask, mode):
    run = client.create_report_run("balance.summary.1", {"interval_start": JAN_1, "interval_end": JAN_1 + DAY})
    sim.finish_report_run(run["id"])
    run = client.get_report_run(run["id"])
    umask(mask)
    target = tmp_path / "report.csv"

    client.download_to_path(run["result"]["url"], target, expected_size=run["result"]["size"])

    assert oct(target.stat().st_mode & 0o777) == oct(mode)
    with open(tmp_path / "by-open", "w"):
        pass
    assert oct((tmp_path / "by-open").stat().st_mode & 0o777) == oct(mode)
