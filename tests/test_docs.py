"""Every code block in ``docs/*.md`` and the READMEs runs, or says why it cannot.

A fence's info string is ``<language> [no-run] [dag] [pytest] [file=<path>]``:

* ``python`` runs in this process, in the page's working directory, with
  ``AIRFLOW_CONN_STRIPE_DEFAULT`` pointing at a simulator; ``file=`` writes it to that path
  instead (``dag``: then parse it with a DagBag; ``pytest``: then run pytest on it).
* ``bash`` / ``sh`` / ``shell`` runs in ``bash -eu`` with a clean Airflow environment (no
  ``AIRFLOW__*``/``AIRFLOW_CONN_*``, ``AIRFLOW_HOME`` in the page's directory) and this venv's
  ``bin`` first on ``PATH``.
* ``json`` must parse (``file=`` writes it).
* ``no-run`` marks a block that is not run: it needs a cloud account, a live key, or serves forever.
  Any other block in a language without a runner fails the test.

The docs address the simulator as ``127.0.0.1:12111`` (its CLI's default port); the test runs one
simulator on a free port and rewrites that one address in the blocks it executes. Blocks of a page
run in order in one directory, so a later shell block can use a file an earlier block wrote.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
BENCHMARKS = ROOT / "benchmarks" / "README.md"
DOCS_SIMULATOR = "127.0.0.1:12111"
SHELLS = {"bash", "sh", "shell"}
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")


@dataclass(frozen=True)
class Block:
    source: str  # "docs/connection.md:42"
    language: str
    flags: frozenset[str]
    options: dict[str, str]
    code: str

    @property
    def runs(self) -> bool:
        return "no-run" not in self.flags


def parse_blocks(text: str, name: str, first_line: int = 1) -> list[Block]:
    """The fenced code blocks of a Markdown text, with their info strings split up."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, words = match["fence"], match["info"].split()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(match["indent"]) :] if lines[i].startswith(match["indent"]) else lines[i])
            i += 1
        i += 1
        language = words[0] if words else ""
        options = dict(word.split("=", 1) for word in words[1:] if "=" in word)
        flags = frozenset(word for word in words[1:] if "=" not in word)
        blocks.append(Block(f"{name}:{first_line + start}", language, flags, options, "\n".join(body) + "\n"))
    return blocks


def pages() -> dict[str, list[Block]]:
    found = {
        f"docs/{path.name}": parse_blocks(path.read_text(), f"docs/{path.name}") for path in sorted(DOCS.glob("*.md"))
    }
    found["README.md"] = parse_blocks(README.read_text(), "README.md")
    # Its commands take minutes (tests/test_benchmarks_quick.py runs the quick form); the rules still apply.
    found["benchmarks/README.md"] = parse_blocks(BENCHMARKS.read_text(), "benchmarks/README.md")
    return found


PAGES = pages()


# -- the rules -----------------------------------------------------------------------------------


def test_fence_parser_reads_languages_flags_and_options() -> None:
    text = "x\n```python dag file=dags/a.py\nprint(1)\n```\n\n```bash no-run\nexit 1\n```\n"
    first, second = parse_blocks(text, "t.md")
    assert (first.language, first.flags, first.options, first.code) == (
        "python",
        frozenset({"dag"}),
        {"file": "dags/a.py"},
        "print(1)\n",
    )
    assert (second.source, second.language, second.runs) == ("t.md:6", "bash", False)


def test_docs_exist_and_have_code() -> None:
    expected = {
        "README.md",
        "connection.md",
        "operators.md",
        "sensors.md",
        "backfill.md",
        "deferrable.md",
        "testing.md",
        "troubleshooting.md",
        "errors-and-retries.md",
        "report-types.md",
        "deployment.md",
        "warehouse.md",
    }
    assert expected <= {path.name for path in DOCS.glob("*.md")}
    assert sum(len(blocks) for blocks in PAGES.values()) >= 20


def test_only_blocks_marked_no_run_are_skipped() -> None:
    """Every block has a runner or says ``no-run``; nothing else is ever skipped."""
    runnable = {"python", "json", *SHELLS}
    unrunnable = [
        f"{b.source} ({b.language or 'no language'})"
        for blocks in PAGES.values()
        for b in blocks
        if b.runs and b.language not in runnable
    ]
    assert unrunnable == [], "mark these `no-run` or give them a runner"
    unknown = sorted({f for blocks in PAGES.values() for b in blocks for f in b.flags} - {"no-run", "dag", "pytest"})
    assert unknown == [], "unknown info-string flags (a typo of no-run would silently run a block)"
    skipped = [b for blocks in PAGES.values() for b in blocks if not b.runs]
    assert all(b.language in SHELLS | {"ini", "text", "python", "json"} for b in skipped), skipped


# -- running a page ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulator() -> Iterator[Any]:
    from airflow_provider_reportruns.testing import StripeSimulator

    with StripeSimulator(run_delay=0.5) as sim:
        yield sim


def _clean_shell_env(workdir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "AIRFLOW_CONFIG", "PYTEST_"))
    }
    env["AIRFLOW_HOME"] = str(workdir / "airflow-home")
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"  # what a fresh airflow.cfg would ask of a tester anyway
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["NO_COLOR"] = "1"
    env.pop("VIRTUAL_ENV", None)
    return env


def _run_shell(block: Block, code: str, workdir: Path) -> None:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=workdir,
        env=_clean_shell_env(workdir),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, (
        f"{block.source} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )


def _parse_dag_file(block: Block, path: Path) -> None:
    from airflow_harness import airflow_major

    if airflow_major() >= 3:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(path), bundle_path=path.parent, safe_mode=False)
    else:
        from airflow.models.dagbag import DagBag

        bag = DagBag(dag_folder=str(path), include_examples=False, safe_mode=False)
    assert not bag.import_errors, f"{block.source}: {bag.import_errors}"
    assert bag.dags, f"{block.source} defines no DAG"
    for dag in bag.dags.values():
        assert dag.tasks, f"{block.source}: DAG {dag.dag_id} has no tasks"


def _run_pytest_file(block: Block, path: Path, workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "PYTEST_"))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"{block.source}: pytest failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    assert re.search(r"\b[1-9]\d* passed\b", result.stdout), result.stdout[-2000:]


def _run_python(block: Block, code: str, workdir: Path, monkeypatch: pytest.MonkeyPatch, simulator: Any) -> str:
    conn = {"conn_type": "stripe", "password": simulator.api_key, "host": simulator.url}
    monkeypatch.setenv("AIRFLOW_CONN_STRIPE_DEFAULT", json.dumps(conn))
    monkeypatch.chdir(workdir)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, block.source, "exec"), {"__name__": "__docs__"})
    return out.getvalue()


def run_block(block: Block, workdir: Path, monkeypatch: pytest.MonkeyPatch, simulator: Any) -> str:
    """Run one block; return what was done with it (a block nothing was done with is a bug here)."""
    address = simulator.url.removeprefix("http://")
    code = block.code.replace(DOCS_SIMULATOR, address)
    target = workdir / block.options["file"] if "file" in block.options else None
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
    if block.language == "json":
        json.loads(code)
        return "parsed JSON"
    if block.language in SHELLS:
        _run_shell(block, code, workdir)
        return "ran in bash"
    if block.language == "python" and "dag" in block.flags:
        assert target is not None, f"{block.source}: a dag block needs file=…"
        _parse_dag_file(block, target)
        return "parsed DAG file"
    if block.language == "python" and "pytest" in block.flags:
        assert target is not None, f"{block.source}: a pytest block needs file=…"
        _run_pytest_file(block, target, workdir)
        return "ran pytest"
    if block.language == "python" and target is None:
        _run_python(block, code, workdir, monkeypatch, simulator)
        return "ran Python"
    return ""


@pytest.mark.parametrize("page", sorted(page for page, blocks in PAGES.items() if any(b.runs for b in blocks)))
def test_page_code_runs(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, simulator: Any, airflow_db: None
) -> None:
    blocks = [b for b in PAGES[page] if b.runs]
    done = {block.source: run_block(block, tmp_path, monkeypatch, simulator) for block in blocks}
    assert all(done.values()), (
        f"blocks that were neither run nor marked no-run: {[s for s, d in done.items() if not d]}"
    )


def test_shell_blocks_are_plain_commands_not_prompts() -> None:
    """``$ cmd`` prompts would not run; the docs write commands as they are typed."""
    prompts = [
        b.source
        for blocks in PAGES.values()
        for b in blocks
        if b.language in SHELLS and re.search(r"^\s*\$ ", b.code, re.M)
    ]
    assert prompts == []


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_docs_link_to_pages_and_headings_that_exist() -> None:
    texts = {path: path.read_text() for path in [*DOCS.glob("*.md"), README, BENCHMARKS]}
    missing = []
    for path, text in texts.items():
        for target, anchor in re.findall(r"\]\(([^)#\s:]*\.md|)(?:#([^)\s]+))?\)", text):
            linked = (path.parent / target) if target else path
            if not linked.exists():
                missing.append(f"{path.relative_to(ROOT)} -> {target}")
            elif anchor and anchor not in _anchors(linked.read_text()):
                missing.append(f"{path.relative_to(ROOT)} -> {target}#{anchor}")
    assert missing == []


def test_docs_quote_what_the_simulator_prints(tmp_path: Path) -> None:
    """The first thing a new reader runs: its output in the docs must be what it prints today."""
    ready = tmp_path / "simulator.url"
    command = [sys.executable, "-m", "airflow_provider_reportruns.testing", "--port", "0", "--ready-file", str(ready)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(300):
            if ready.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert ready.exists(), "the simulator did not start"
    finally:
        proc.terminate()
        printed, _ = proc.communicate(timeout=30)
    address = ready.read_text().strip().removeprefix("http://")
    lines = printed.replace(address, DOCS_SIMULATOR).splitlines()[:2]
    assert lines[0].startswith("Stripe Reporting simulator listening on"), printed
    for page in (DOCS / "testing.md", README):
        assert "\n".join(lines) in page.read_text(), f"{page.relative_to(ROOT)} should show:\n" + "\n".join(lines)
