"""Run the Stripe Reporting simulator from a shell.

``python -m airflow_provider_reportruns.testing --port 12111 --run-delay 2`` prints the API base
URL and an ``AIRFLOW_CONN_STRIPE_DEFAULT`` line to paste, then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import Sequence

from airflow_provider_reportruns.testing.simulator import (
    DEFAULT_API_KEY,
    DEFAULT_LIVE_ONLY_REPORT_TYPES,
    FAULT_NAMES,
    Fault,
    StripeSimulator,
)


def _fault(spec: str) -> Fault:
    """Parse ``KIND:FAULT[:RATE[:TIMES[:DELAY]]]`` (e.g. ``create:500:0.2`` or ``any:slow:1::30``)."""
    parts = spec.split(":")
    if len(parts) < 2 or len(parts) > 5:
        raise argparse.ArgumentTypeError(f"expected KIND:FAULT[:RATE[:TIMES[:DELAY]]], got {spec!r}")
    parts += [""] * (5 - len(parts))
    kind, name, rate, times, delay = parts
    try:
        return Fault(
            kind,
            name,
            rate=float(rate) if rate else 1.0,
            times=int(times) if times else None,
            delay=float(delay) if delay else 1.0,
        )
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m airflow_provider_reportruns.testing``."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_reportruns.testing",
        description="Serve a local simulator of Stripe's Reporting API (report runs, report types, files).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=12111, help="TCP port, 0 for any free one (default 12111)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help=f"secret key to accept (default {DEFAULT_API_KEY})")
    parser.add_argument("--run-delay", type=float, default=2.0, help="seconds a report run stays pending (default 2)")
    parser.add_argument(
        "--fail-report-type", action="append", default=[], metavar="TYPE", help="runs of TYPE end failed (repeatable)"
    )
    parser.add_argument(
        "--live-only-report-type",
        action="append",
        default=None,
        metavar="TYPE",
        help="TYPE needs a live-mode key (repeatable; default: every connected_account_* type)",
    )
    parser.add_argument("--result-size", type=int, default=None, help="pad every result file to exactly N bytes")
    parser.add_argument(
        "--file-ttl", type=float, default=3600.0, help="seconds result files stay downloadable; <0 for no expiry"
    )
    parser.add_argument(
        "--data-available-end", type=int, default=None, help="unix seconds; default: start of the current UTC day"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for fault draws and ids (default 0)")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        type=_fault,
        metavar="KIND:FAULT[:RATE[:TIMES[:DELAY]]]",
        help=f"inject a fault (repeatable); FAULT is one of {', '.join(FAULT_NAMES)}",
    )
    parser.add_argument("--public-url", default=None, help="base URL to advertise in result file URLs")
    parser.add_argument("--ready-file", default=None, help="write the URL to this file once listening")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Start the simulator, print how to reach it, and serve until SIGINT/SIGTERM.

    :param argv: command line arguments (default ``sys.argv[1:]``).
    :returns: the process exit code.
    """
    args = build_parser().parse_args(argv)
    simulator = StripeSimulator(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        run_delay=args.run_delay,
        fail_report_types=args.fail_report_type,
        live_only_report_types=(
            DEFAULT_LIVE_ONLY_REPORT_TYPES if args.live_only_report_type is None else args.live_only_report_type
        ),
        result_size=args.result_size,
        file_ttl=None if args.file_ttl < 0 else args.file_ttl,
        data_available_end=args.data_available_end,
        seed=args.seed,
        faults=args.fault,
        public_url=args.public_url,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    simulator.start()
    try:
        conn = json.dumps({"conn_type": "stripe", "password": simulator.api_key, "host": simulator.url})
        print(f"Stripe Reporting simulator listening on {simulator.url}")
        print(f"AIRFLOW_CONN_STRIPE_DEFAULT={shlex.quote(conn)}", flush=True)
        if args.ready_file:
            # Write then rename, so a watcher never reads a half-written URL.
            tmp = f"{args.ready_file}.tmp{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(simulator.url + "\n")
            os.replace(tmp, args.ready_file)
        while not stop.wait(0.5):
            pass
    finally:
        simulator.stop()
    print("Stripe Reporting simulator stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
