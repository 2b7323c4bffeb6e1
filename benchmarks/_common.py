"""What every row shares: the result row, statistics, memory readings and worker processes.

Standard library only, and no Airflow: the parent process imports this.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_DAG = REPO / "example_dags" / "example_stripe_balance_report.py"
EXAMPLE_DAG_ID = "example_stripe_balance_report"
STEPS_DAG = REPO / "example_dags" / "example_stripe_balance_report_steps.py"
STEPS_DAG_ID = "example_stripe_balance_report_steps"
SDK_DAG = Path(__file__).resolve().parent / "dags" / "sdk_balance_report.py"
SDK_DAG_ID = "bench_sdk_balance_report"
HOOK_DAG = Path(__file__).resolve().parent / "dags" / "hook_balance_report.py"
HOOK_DAG_ID = "bench_hook_balance_report"
REPORT_TYPE = "balance.summary.1"
# 2024-01-01 .. 2024-01-02 UTC: an interval the simulator has data for.
INTERVAL = {"interval_start": 1704067200, "interval_end": 1704153600}


@dataclass
class Row:
    """One line of the table.

    :param key: row number as in the README (``1a``, ``4c``, …).
    :param measured: what was measured, in a few words.
    :param ours: our figure, in ``unit``.
    :param reference: the reference figure in the same unit (``None`` when there is none).
    :param ratio: ``ours / reference`` when that is what the target compares.
    :param target: the target in words (``ratio ≤ 1.0``, ``≤ 200 MB``).
    :param passed: ``True``/``False``; ``None`` for an informational row.
    :param note: one line on conditions (sizes, rates) shown under the table.
    :param details: everything else measured, for the JSON file.
    """

    key: str
    measured: str
    ours: float | None
    reference: float | None
    unit: str
    ratio: float | None
    target: str
    passed: bool | None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WaitCase:
    """One case of row 4: N deferred waits on one account, polled every P seconds.

    Run k of the N (in creation order) finishes ``lead + spread * ((k * 7919) mod N) / N`` seconds
    after it was created, so finishes are spread evenly but shuffled against the order of the waits.

    :param key: the case's digit in the row keys (``4.1a`` …).
    :param waits: N, the waits in one triggerer's event loop.
    :param poll_seconds: P, every wait's ``poll_interval``.
    :param lead_seconds: the earliest finish, after the run's creation.
    :param spread_seconds: finishes spread over this long after the lead.
    :param other_runs: runs of the same account nobody waits for (a mixed account), all finished.
    :param other_hours: the other runs were created evenly over this many hours before the waits started.
    :param backfill_minutes: the waited runs were created evenly over this many minutes before the
        waits started (0: just before, one after the other, as a backfill creates them).
    :param old_run: one more wait, on a run created a day before the rest, finishing mid-spread.
    :param rss_target_mb: the coalesced worker's peak RSS target.
    """

    key: str
    waits: int
    poll_seconds: float
    lead_seconds: float
    spread_seconds: float
    other_runs: int = 0
    other_hours: float = 0.0
    backfill_minutes: float = 0.0
    old_run: bool = False
    rss_target_mb: float = 200.0


def failed_rows(keys_and_names: Iterable[tuple[str, str]], target: str, error: str) -> list[Row]:
    """Rows for a measurement that could not be made: no numbers, FAIL, and the reason."""
    return [Row(k, name, None, None, "", None, target, False, error=error) for k, name in keys_and_names]


# -- statistics ----------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * pct / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ratio(ours: float | None, reference: float | None) -> float | None:
    if ours is None or reference is None or reference == 0 or math.isnan(ours) or math.isnan(reference):
        return None
    return ours / reference


def window_counts(timestamps: Sequence[float], width: float = 1.0) -> list[int]:
    """For each request, how many requests started in ``[its start, its start + width)``.

    The maximum is the busiest window of any placement: a busiest window can always be slid right
    until it starts at a request.
    """
    ordered = sorted(timestamps)
    counts = []
    end = 0
    for start_index, start in enumerate(ordered):
        while end < len(ordered) and ordered[end] < start + width:
            end += 1
        counts.append(end - start_index)
    return counts


# -- memory of this process ----------------------------------------------------------------------


def _status_kb(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def rss_mb() -> float:
    """Resident set size now, in MB (2**20 bytes)."""
    return _status_kb("VmRSS") / 1024.0


def peak_rss_mb() -> float:
    """Peak resident set size (VmHWM) since start or since :func:`reset_peak_rss`, in MB."""
    return _status_kb("VmHWM") / 1024.0


def reset_peak_rss() -> bool:
    """Set the peak RSS back to the current RSS (Linux ≥ 4.0); False when not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


# -- worker processes ----------------------------------------------------------------------------


def connection_json(url: str, api_key: str, max_requests_per_second: float) -> str:
    """``AIRFLOW_CONN_STRIPE_DEFAULT`` in JSON form, for the simulator at ``url``."""
    return json.dumps(
        {
            "conn_type": "stripe",
            "password": api_key,
            "host": url,
            "extra": {"max_requests_per_second": max_requests_per_second},
        }
    )


def airflow_env(home: Path, *, connection: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a worker: a throw-away ``AIRFLOW_HOME`` with an empty dags folder.

    Inherited ``AIRFLOW__*`` settings and connections are dropped, so a developer's shell cannot
    change a figure.
    """
    home.mkdir(parents=True, exist_ok=True)
    (home / "dags").mkdir(exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")) and k not in ("AIRFLOW_CONFIG",)
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS": "False",
            "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
            "NO_COLOR": "1",
            # Loopback only: never route the simulator's 127.0.0.1 through a configured proxy.
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            # Workers import `benchmarks` from the checkout, whatever the caller's cwd.
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        }
    )
    if connection is not None:
        env["AIRFLOW_CONN_STRIPE_DEFAULT"] = connection
    env.update(extra)
    return env


class Worker:
    """A ``python -m benchmarks.worker NAME`` process: parameters in, one JSON result out.

    The worker's stdout and stderr (Airflow logs) go to ``workdir/NAME.log``. Workers that must
    wait for the parent (set-up that has to happen after their imports) create ``ready`` in their
    directory and then read one JSON line from stdin.
    """

    def __init__(self, name: str, params: dict[str, Any], workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.params_path = workdir / "params.json"
        self.result_path = workdir / "result.json"
        self.ready_path = workdir / "ready"
        self.log_path = workdir / f"{name}.log"
        self.params_path.write_text(json.dumps(params))
        for stale in (self.result_path, self.ready_path):
            stale.unlink(missing_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in finish()
        self.started = time.time()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", name, str(self.params_path), str(self.result_path)],
            cwd=REPO,
            env={**env, "BENCH_WORKDIR": str(workdir)},
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready_path.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited before it was ready: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"worker {self.name} not ready after {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.02)

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        self.process.stdin.flush()

    def finish(self, timeout: float) -> dict[str, Any]:
        """Wait for the result; kill the worker (only this one) when it overruns ``timeout``."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"worker {self.name} overran {timeout:.0f} s: {self.log_tail()}") from None
        finally:
            self._log.close()
        if self.process.returncode != 0 or not self.result_path.exists():
            raise RuntimeError(f"worker {self.name} failed (exit {self.process.returncode}): {self.log_tail()}")
        return json.loads(self.result_path.read_text())

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])


def run_worker(name: str, params: dict[str, Any], workdir: Path, env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Start a worker and wait for its result."""
    return Worker(name, params, workdir, env).finish(timeout)


def worker_ready() -> dict[str, Any]:
    """Worker side of the handshake: say ready, then read the parent's one JSON line."""
    Path(os.environ["BENCH_WORKDIR"], "ready").touch()
    line = sys.stdin.readline()
    if not line:
        raise RuntimeError("the parent closed stdin without sending the go message")
    return json.loads(line)


# -- formatting ----------------------------------------------------------------------------------


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    magnitude = abs(value)
    if magnitude == 0 or magnitude >= 100:
        text = f"{value:,.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".strip()
