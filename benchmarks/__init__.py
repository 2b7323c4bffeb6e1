"""Benchmarks of airflow-provider-reportruns against Stripe's SDK, curl and Airflow itself.

One command prints one table and writes ``benchmarks/results.json``::

    python3 scripts/bootstrap.py --airflow 3
    .venv-af3/bin/python -m benchmarks            # full size, about 20 minutes
    .venv-af3/bin/python -m benchmarks --quick    # tiny sizes, ~40 s: checks the harness, not the targets

The parent process runs the local Stripe simulators and never imports Airflow; everything that is
measured runs in worker processes (``python -m benchmarks.worker``) with their own throw-away
``AIRFLOW_HOME``, so one row's imports, threads or memory never leak into another's figures.
Everything talks to 127.0.0.1 only, and every wait has a deadline.

Nothing in this package is imported by the provider.
"""
