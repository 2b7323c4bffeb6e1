"""Entry point of the measuring processes: ``python -m benchmarks.worker NAME PARAMS.json RESULT.json``.

Each name maps to a function of one row module that takes the parameters and returns a
JSON-serializable result. The modules import Airflow inside those functions only, so a worker
measuring import time starts from a clean interpreter.
"""

from __future__ import annotations

import importlib
import json
import sys

WORKERS = {
    "overhead": "benchmarks.overhead:worker",
    "flow": "benchmarks.flow:worker",
    "download": "benchmarks.download:worker",
    "waits": "benchmarks.waits:worker",
    "import": "benchmarks.parse:import_worker",
    "parse": "benchmarks.parse:parse_worker",
    "load": "benchmarks.load:worker",
}


def main(argv: list[str]) -> int:
    name, params_path, result_path = argv
    module_name, function_name = WORKERS[name].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    with open(params_path) as handle:
        params = json.load(handle)
    result = function(params)
    with open(result_path + ".tmp", "w") as handle:
        json.dump(result, handle)
    import os

    os.replace(result_path + ".tmp", result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
