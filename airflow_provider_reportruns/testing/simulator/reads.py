"""Read endpoints: retrieve and list report runs, report types, result files and their bytes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from airflow_provider_reportruns.testing.simulator.catalogue import REPORT_TYPES
from airflow_provider_reportruns.testing.simulator.errors import ApiError, Response
from airflow_provider_reportruns.testing.simulator.forms import FormError, decode_form
from airflow_provider_reportruns.testing.simulator.state import Context, Run, SimulatorState

__all__ = [
    "decode_query",
    "file_contents",
    "file_run",
    "list_runs",
    "only_expand",
    "parse_int",
    "report_type",
    "report_types",
    "retrieve",
]


def decode_query(ctx: Context) -> dict[str, Any]:
    """The query string decoded like a form; Stripe's 400 for a malformed name."""
    try:
        return decode_form(ctx.query_pairs)
    except FormError as exc:
        raise ApiError(400, exc.message, param=exc.param) from None


def only_expand(query: Mapping[str, Any]) -> None:
    """Refuse any query parameter but ``expand`` (retrieve endpoints take nothing else)."""
    for name in query:
        if name != "expand":
            raise ApiError(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)


def retrieve(state: SimulatorState, ctx: Context) -> dict[str, Any]:
    """``GET /v1/reporting/report_runs/{id}``, within the request's account and mode."""
    run_id = ctx.args["id"]
    with state.lock:
        run = state.runs.get(run_id)
    if run is None or not state.visible(ctx, run):
        raise ApiError(404, f"No such reporting.report_run: '{run_id}'", code="resource_missing", param="id")
    ctx.run_id = run.id
    return state.render_run(run, state.clock())


def list_runs(state: SimulatorState, ctx: Context, query: dict[str, Any]) -> dict[str, Any]:
    """``GET /v1/reporting/report_runs``: ``created`` filters, ``limit`` and cursors, newest first."""
    for name in query:
        if name not in ("created", "limit", "starting_after", "ending_before", "expand"):
            raise ApiError(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)
    bounds: dict[str, int] = {}
    created = query.get("created")
    if isinstance(created, dict):
        for op, value in created.items():
            if op not in ("gt", "gte", "lt", "lte"):
                param = f"created[{op}]"
                raise ApiError(400, f"Received unknown parameter: {param}", code="parameter_unknown", param=param)
            bounds[op] = parse_int(value, f"created[{op}]")
    elif created is not None:
        bounds["eq"] = parse_int(created, "created")
    limit = 10
    if "limit" in query:
        limit = parse_int(query["limit"], "limit")
        if limit < 1:
            raise ApiError(400, "This value must be greater than or equal to 1.", param="limit")
        if limit > 100:
            raise ApiError(400, "This value must be less than or equal to 100.", param="limit")
    after, before = query.get("starting_after"), query.get("ending_before")
    if after is not None and before is not None:
        raise ApiError(400, "You may only specify one of these parameters: ending_before, starting_after.")
    for name, value in (("starting_after", after), ("ending_before", before)):
        if value is not None and not isinstance(value, str):
            raise ApiError(400, "Invalid string", code="parameter_invalid_string", param=name)
    checks: dict[str, Callable[[int, int], bool]] = {
        "eq": lambda c, v: c == v,
        "gt": lambda c, v: c > v,
        "gte": lambda c, v: c >= v,
        "lt": lambda c, v: c < v,
        "lte": lambda c, v: c <= v,
    }
    with state.lock:
        scoped = [r for r in state.runs.values() if state.visible(ctx, r)]
        cursor_id = after or before
        cursor = state.runs.get(cursor_id) if cursor_id else None
    if cursor_id and (cursor is None or not state.visible(ctx, cursor)):
        raise ApiError(
            404,
            f"No such reporting.report_run: '{cursor_id}'",
            code="resource_missing",
            param="starting_after" if after else "ending_before",
        )
    runs = [r for r in scoped if all(checks[op](int(r.created), v) for op, v in bounds.items())]
    # Newest first; the creation sequence breaks ties within a second, so paging is stable.
    runs.sort(key=lambda r: (int(r.created), r.seq), reverse=True)
    if cursor is not None:
        mark = (int(cursor.created), cursor.seq)
        if after:
            older = [r for r in runs if (int(r.created), r.seq) < mark]
            page, has_more = older[:limit], len(older) > limit
        else:
            newer = [r for r in runs if (int(r.created), r.seq) > mark]
            page, has_more = newer[-limit:], len(newer) > limit
    else:
        page, has_more = runs[:limit], len(runs) > limit
    now = state.clock()
    return {
        "object": "list",
        "data": [state.render_run(r, now) for r in page],
        "has_more": has_more,
        "url": "/v1/reporting/report_runs",
    }


def report_types(state: SimulatorState, ctx: Context) -> dict[str, Any]:
    """``GET /v1/reporting/report_types``: every type the key's mode may see."""
    visible = [
        spec for rid, spec in sorted(REPORT_TYPES.items()) if ctx.livemode or rid not in state.live_only_report_types
    ]
    return {
        "object": "list",
        "data": [state.render_type(spec, ctx.livemode) for spec in visible],
        "has_more": False,
        "url": "/v1/reporting/report_types",
    }


def report_type(state: SimulatorState, ctx: Context, report_type: str) -> dict[str, Any]:
    """``GET /v1/reporting/report_types/{id}``."""
    spec = REPORT_TYPES.get(report_type)
    if spec is None:
        raise ApiError(
            404,
            f"No such reporting.report_type: '{report_type}'",
            code="resource_missing",
            param="report_type",
        )
    state.check_live_only(ctx, report_type)
    return state.render_type(spec, ctx.livemode)


def file_run(state: SimulatorState, ctx: Context) -> Run:
    """The run behind a result file id, once succeeded and not expired; 404 otherwise."""
    file_id = ctx.args["id"]
    now = state.clock()
    with state.lock:
        run = state.runs.get(state.files.get(file_id, ""))
    missing = ApiError(404, f"No such file upload: '{file_id}'", code="resource_missing", param="file")
    if run is None or not state.visible(ctx, run):
        raise missing
    _, succeeded, _ = state.run_state(run, now)
    if succeeded is None:
        raise missing
    ctx.run_id = run.id
    if state.file_ttl is not None and now >= succeeded + state.file_ttl:
        raise ApiError(
            404,
            f"The file {file_id} has expired and is no longer available.",
            code="resource_missing",
            param="file",
        )
    return run


def file_contents(state: SimulatorState, ctx: Context) -> Response:
    """``GET /v1/files/{id}/contents``: the CSV, streamed with an exact ``Content-Length``."""
    run = file_run(state, ctx)
    headers = [("Content-Type", "text/csv"), ("Content-Disposition", f'attachment; filename="{run.id}.csv"')]
    return Response(200, headers, length=state.content_length(run), stream=lambda: state.content_pieces(run))


def parse_int(value: Any, param: str) -> int:
    """A query value as an integer, or Stripe's ``parameter_invalid_integer`` 400."""
    if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value.strip()):
        shown = value if isinstance(value, str) else json.dumps(value)
        raise ApiError(400, f"Invalid integer: {shown}", code="parameter_invalid_integer", param=param)
    return int(value)
