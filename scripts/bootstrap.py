#!/usr/bin/env python3
"""Create the repo-local environments from the frozen pins, with nothing but python3 and pip.

    python3 scripts/bootstrap.py                 # .venv-tools, .venv-af3 and .venv-af2
    python3 scripts/bootstrap.py --airflow 3     # tools + Airflow 3.3.2 only
    python3 scripts/bootstrap.py --relock        # re-resolve requirements/*.txt from the .in files

* ``.venv-tools``: uv and ruff, installed by pip from ``requirements/tools.txt``.
* ``.venv-af3`` / ``.venv-af2``: ``requirements/airflow-<version>.txt`` synced exactly by uv
  (extra packages are removed), then this package ``-e .`` without dependencies.
  ``--compile-bytecode`` because these machines set PYTHONDONTWRITEBYTECODE=1: without .pyc files
  every Airflow process recompiles ~4,700 modules and runs twice as slow.

Idempotent: an environment whose stamp (hash of its pins, pyproject.toml, this script and the
Python version) matches is left alone, so a set-up checkout costs well under a second. The
pyproject hash is in the stamp because the editable install bakes the entry points (provider
registration, pytest plugin) into the environment. Runs hold a lock so concurrent callers in
the same checkout wait for each other. Standard library only; importable by scripts/test and
scripts/demo.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"
TOOLS_ENV = ROOT / ".venv-tools"
STAMP_NAME = ".bootstrap-stamp"
# Airflow major -> the exact version we pin and test.
AIRFLOW_VERSIONS = {"3": "3.3.2", "2": "2.11.2"}
# Oldest Python we support (pyproject requires-python); pins are resolved for it and newer.
MIN_PYTHON = "3.10"


def env_dir(major: str) -> Path:
    return ROOT / f".venv-af{major}"


def env_python(env: Path) -> Path:
    return env / "bin" / "python"


def pins(major: str) -> Path:
    return REQUIREMENTS / f"airflow-{AIRFLOW_VERSIONS[major]}.txt"


def _log(message: str) -> None:
    print(f"[bootstrap] {message}", file=sys.stderr, flush=True)


class BootstrapError(Exception):
    pass


def _run(cmd: Sequence[str | Path], **kwargs: object) -> None:
    args = [str(c) for c in cmd]
    code = subprocess.run(args, stdin=subprocess.DEVNULL, **kwargs).returncode  # type: ignore[call-overload]
    if code:
        raise BootstrapError(f"exit {code}: {' '.join(args)}")


def _stamp(*files: Path) -> str:
    digest = hashlib.sha256()
    digest.update(sys.version.encode())
    digest.update(sys.executable.encode())
    for path in (Path(__file__).resolve(), *files):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _is_current(env: Path, stamp: str) -> bool:
    stamp_file = env / STAMP_NAME
    return env_python(env).exists() and stamp_file.exists() and stamp_file.read_text().strip() == stamp


def _made_by_this_python(env: Path) -> bool:
    """The venv exists and was made from this Python version (else its wheels and .pyc may not fit)."""
    try:
        cfg = dict(line.split(" = ", 1) for line in (env / "pyvenv.cfg").read_text().splitlines() if " = " in line)
    except OSError:
        return False
    version = cfg.get("version_info") or cfg.get("version")
    here = ".".join(map(str, sys.version_info[:3]))
    return env_python(env).exists() and version == here


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    TOOLS_ENV.mkdir(exist_ok=True)
    with open(TOOLS_ENV / ".bootstrap.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _uv_env() -> dict[str, str]:
    env = dict(os.environ)
    # Only package registries are reachable; never try to download a managed Python.
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env.pop("VIRTUAL_ENV", None)
    return env


def uv() -> Path:
    return TOOLS_ENV / "bin" / "uv"


def ensure_tools() -> None:
    """``.venv-tools`` with uv and ruff, by pip alone (works before uv exists)."""
    requirements = REQUIREMENTS / "tools.txt"
    stamp = _stamp(requirements)
    if _is_current(TOOLS_ENV, stamp) and uv().exists():
        return
    started = time.monotonic()
    _log(f"creating {TOOLS_ENV.name} (uv, ruff) with pip")
    try:
        _run([sys.executable, "-m", "venv", TOOLS_ENV])
        _run(
            [
                env_python(TOOLS_ENV),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                requirements,
            ]
        )
    except BootstrapError:
        # Debian's python3 without python3-venv has no ensurepip: borrow the system pip instead.
        _log("venv with pip failed; retrying with the system pip (--target)")
        _run([sys.executable, "-m", "venv", "--without-pip", TOOLS_ENV])
        site = subprocess.run(
            [env_python(TOOLS_ENV), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
                site,
                "-r",
                requirements,
            ]
        )
        for tool in ("uv", "ruff"):
            target = Path(site) / "bin" / tool
            link = TOOLS_ENV / "bin" / tool
            if target.exists() and not link.exists():
                link.symlink_to(target)
    (TOOLS_ENV / STAMP_NAME).write_text(stamp + "\n")
    _log(f"{TOOLS_ENV.name} ready in {time.monotonic() - started:.1f} s")


def ensure_airflow_env(major: str) -> Path:
    """``.venv-af<major>``: the frozen Airflow set plus this package (editable). Returns its python."""
    return ensure_venv(env_dir(major), pins(major))


def ensure_venv(env: Path, requirements: Path) -> Path:
    """``env`` synced exactly to the pins in ``requirements`` plus this package (editable).

    The caller holds the lock and has run :func:`ensure_tools`; returns the env's python.
    """
    stamp = _stamp(requirements, ROOT / "pyproject.toml")
    if _is_current(env, stamp):
        return env_python(env)
    started = time.monotonic()
    _log(f"syncing {env.name} to {requirements.relative_to(ROOT)}")
    python = env_python(env)
    if not _made_by_this_python(env):
        shutil.rmtree(env, ignore_errors=True)
        _run([uv(), "venv", "--quiet", "--python", sys.executable, env], env=_uv_env())
    (env / STAMP_NAME).unlink(missing_ok=True)
    common = ["--quiet", "--python", python, "--compile-bytecode"]
    _run([uv(), "pip", "sync", *common, requirements], env=_uv_env())
    # hatchling is pinned in the set, so no isolated build env (and nothing unpinned) is needed.
    _run([uv(), "pip", "install", *common, "--no-deps", "--no-build-isolation", "-e", ROOT], env=_uv_env())
    _run([uv(), "pip", "check", "--quiet", "--python", python], env=_uv_env())
    (env / STAMP_NAME).write_text(stamp + "\n")
    _log(f"{env.name} ready in {time.monotonic() - started:.1f} s")
    return python


def ensure(majors: Sequence[str]) -> dict[str, Path]:
    """Tools env plus the Airflow envs for ``majors`` (``"3"``, ``"2"``); ``{major: python}``."""
    if sys.version_info < tuple(int(p) for p in MIN_PYTHON.split(".")):
        raise SystemExit(f"Python >= {MIN_PYTHON} needed, this is {sys.version.split()[0]}")
    with _locked():
        ensure_tools()
        return {major: ensure_airflow_env(major) for major in majors}


def ensure_env(env: Path, requirements: Path) -> Path:
    """Tools env plus ``env`` synced to ``requirements`` (e.g. scripts/e2e's deployment set)."""
    with _locked():
        ensure_tools()
        return ensure_venv(env, requirements)


def _compile(source: Path, output: Path, *extra: str | Path) -> None:
    _run(
        [uv(), "pip", "compile", "--quiet", "--universal", "--python-version", MIN_PYTHON,
         "--custom-compile-command", "python3 scripts/bootstrap.py --relock",
         *extra, "--output-file", output, source],
        env=_uv_env(), cwd=ROOT,
    )  # fmt: skip


def relock() -> None:
    """Re-resolve the frozen sets from ``requirements/*.in`` (universal markers, Python >= MIN_PYTHON).

    ``--upgrade`` is deliberate: relocking means taking the newest versions that resolve.
    """
    with _locked():
        ensure_tools()
        for major, version in AIRFLOW_VERSIONS.items():
            _compile(REQUIREMENTS / f"airflow-{version}.in", pins(major), "--upgrade")
        # ruff in the tools env must be the ruff of the Airflow 3 set.
        _compile(REQUIREMENTS / "tools.in", REQUIREMENTS / "tools.txt", "--upgrade", "--constraint", pins("3"))
    _log("relocked; scripts/test rebuilds the environments from the new pins")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--airflow", choices=["3", "2", "all"], default="all", help="which Airflow env(s)")
    parser.add_argument("--relock", action="store_true", help="re-resolve requirements/*.txt, then exit")
    args = parser.parse_args(argv)
    if args.relock:
        relock()
        return 0
    started = time.monotonic()
    majors = list(AIRFLOW_VERSIONS) if args.airflow == "all" else [args.airflow]
    try:
        pythons = ensure(majors)
    except BootstrapError as exc:
        _log(f"FAILED {exc}")
        return 1
    for major, python in pythons.items():
        print(f"Airflow {AIRFLOW_VERSIONS[major]}: {python.relative_to(ROOT)}")
    print(f"tools: {TOOLS_ENV.relative_to(ROOT)}/bin (uv, ruff); took {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
