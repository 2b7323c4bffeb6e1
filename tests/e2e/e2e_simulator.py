"""The Stripe simulator for scripts/e2e, with a control port that tells what Stripe has seen.

Run with the deployment's python: ``python tests/e2e/e2e_simulator.py --ready-file F [options]``.
The API serves on one loopback port and a control server on another; ``F`` receives both as JSON
once they listen. The control server answers ``GET /state`` (report runs, how many creates the
slow-create fault has held and how many of those got an answer) and ``GET /result/<run id>``
(the result file's bytes). The e2e needs creates that reached Stripe but whose answers no worker
read, and only the simulator's own process knows about a request still being answered.
"""

from __future__ import annotations

import argparse
import collections
import http.server
import json
import os
import signal
import threading
from typing import Any

from airflow_provider_reportruns.testing import Fault, StripeSimulator


def _state(simulator: StripeSimulator) -> dict[str, Any]:
    answered_slow = sum(1 for r in simulator.requests(settle=0) if r.kind == "create" and r.fault == "slow")
    return {
        "slow_creates_received": simulator.fault_counts.get("slow", 0),
        "slow_creates_answered": answered_slow,
        "report_runs": simulator.report_runs(),
        # How the waits polled: with coalescing on, list pages answer most of them.
        "requests_by_kind": dict(collections.Counter(r.kind for r in simulator.requests(settle=0))),
    }


def _control_handler(simulator: StripeSimulator) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/state":
                body, kind = json.dumps(_state(simulator)).encode(), "application/json"
            elif self.path.startswith("/result/"):
                body, kind = simulator.result_content(self.path.removeprefix("/result/")), "text/csv"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--run-delay", type=float, default=20.0, help="seconds a report run stays pending")
    parser.add_argument("--slow-creates", type=int, default=0, help="how many first creates are held")
    parser.add_argument("--slow-create-seconds", type=float, default=45.0, help="how long each is held")
    parser.add_argument("--ready-file", required=True)
    args = parser.parse_args()
    faults = [Fault("create", "slow", times=args.slow_creates, delay=args.slow_create_seconds)]
    simulator = StripeSimulator(port=args.port, run_delay=args.run_delay, faults=faults if args.slow_creates else [])
    simulator.start()
    control = http.server.ThreadingHTTPServer(("127.0.0.1", args.control_port), _control_handler(simulator))
    threading.Thread(target=control.serve_forever, daemon=True).start()
    ready = {"api": simulator.url, "key": simulator.api_key, "control": f"http://127.0.0.1:{control.server_port}"}
    tmp = f"{args.ready_file}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(ready, fh)
    os.replace(tmp, args.ready_file)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    control.shutdown()
    simulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
