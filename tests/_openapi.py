"""Validate JSON objects and form bodies against the vendored Stripe OpenAPI subset.

The spec (``tests/stripe_openapi/reporting-openapi-subset.json``, API version 2023-08-16) is
OpenAPI 3.0: ``nullable``, ``$ref`` to ``#/components/schemas/...`` and ``x-*`` extensions. It
is converted once to JSON Schema (draft 2020-12) and checked with ``jsonschema``.

Typical use::

    from _openapi import validate_component, validate_create_form, validate_response

    validate_component(run, "reporting.report_run")
    validate_response(page, "get", "/v1/reporting/report_runs")
    validate_create_form(simulator.requests()[0].form)

``strict=True`` additionally forbids properties the spec does not declare (Stripe's schemas
leave ``additionalProperties`` open), which catches invented fields in our own objects.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jsonschema

SPEC_PATH = Path(__file__).parent / "stripe_openapi" / "reporting-openapi-subset.json"

__all__ = [
    "SPEC_PATH",
    "component_schema",
    "create_form_schema",
    "decode_form",
    "spec",
    "validate_component",
    "validate_create_form",
    "validate_response",
]


@functools.lru_cache(maxsize=1)
def spec() -> dict[str, Any]:
    """The vendored OpenAPI document, parsed once."""
    with SPEC_PATH.open(encoding="utf-8") as fh:
        document: dict[str, Any] = json.load(fh)
    return document


def _convert(node: Any, strict: bool) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: refs into ``$defs``, ``nullable`` as ``null``, no ``x-*``."""
    if isinstance(node, list):
        return [_convert(item, strict) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-") or key in ("nullable", "description", "title", "format", "example"):
            continue
        if key == "$ref":
            out[key] = value.replace("#/components/schemas/", "#/$defs/")
        elif key == "properties":
            out[key] = {name: _convert(sub, strict) for name, sub in value.items()}
        else:
            out[key] = _convert(value, strict)
    if strict and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if node.get("nullable"):
        # In 3.0, nullable widens the schema (enum included) to also accept null.
        out = {"anyOf": [out, {"type": "null"}]}
    return out


@functools.lru_cache(maxsize=4)
def _defs(strict: bool) -> dict[str, Any]:
    return {name: _convert(schema, strict) for name, schema in spec()["components"]["schemas"].items()}


def _schema_for(fragment: Any, strict: bool) -> dict[str, Any]:
    schema = _convert(fragment, strict)
    schema = dict(schema) if isinstance(schema, dict) else {"allOf": [schema]}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$defs"] = _defs(strict)
    return schema


def component_schema(name: str, *, strict: bool = False) -> dict[str, Any]:
    """JSON Schema for ``#/components/schemas/<name>`` (e.g. ``reporting.report_run``, ``error``).

    :param name: component name.
    :param strict: forbid undeclared properties on every object schema.
    """
    if name not in spec()["components"]["schemas"]:
        raise KeyError(f"no component schema {name!r} in {SPEC_PATH.name}")
    return _schema_for({"$ref": f"#/components/schemas/{name}"}, strict)


def _check(obj: Any, schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(schema).validate(obj)


def validate_component(obj: Any, name: str, *, strict: bool = False) -> None:
    """Validate ``obj`` against a component schema.

    :param obj: decoded JSON.
    :param name: component name, e.g. ``"reporting.report_run"``, ``"reporting.report_type"``,
        ``"file"`` or ``"error"``.
    :param strict: also reject properties the schema does not declare.
    :raises jsonschema.ValidationError: if it does not conform.
    """
    _check(obj, component_schema(name, strict=strict))


def _operation(method: str, path: str) -> dict[str, Any]:
    paths = spec()["paths"]
    if path not in paths or method.lower() not in paths[path]:
        raise KeyError(f"no operation {method.upper()} {path} in {SPEC_PATH.name}; paths: {sorted(paths)}")
    operation: dict[str, Any] = paths[path][method.lower()]
    return operation


def validate_response(obj: Any, method: str, path: str, status: int = 200, *, strict: bool = False) -> None:
    """Validate a response body against the operation's declared response schema.

    Errors (any non-2xx) use the ``default`` response, i.e. the ``error`` component.

    :param obj: decoded JSON body.
    :param method: HTTP method, e.g. ``"get"``.
    :param path: the spec's path template, e.g. ``"/v1/reporting/report_runs/{report_run}"``.
    :param status: HTTP status of the response.
    :param strict: also reject properties the schema does not declare.
    :raises jsonschema.ValidationError: if it does not conform.
    """
    responses = _operation(method, path)["responses"]
    response = responses.get(str(status)) or responses["default"]
    fragment = response["content"]["application/json"]["schema"]
    _check(obj, _schema_for(fragment, strict))


def create_form_schema(*, strict: bool = True) -> dict[str, Any]:
    """JSON Schema of the POST /v1/reporting/report_runs form body (after :func:`decode_form`).

    :param strict: reject undeclared keys inside ``parameters`` too, as Stripe does (the top
        level is closed by the spec itself).
    """
    body = _operation("post", "/v1/reporting/report_runs")["requestBody"]
    fragment = body["content"]["application/x-www-form-urlencoded"]["schema"]
    return _schema_for(fragment, strict)


def decode_form(form: str | bytes | Mapping[str, Any] | Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Decode a Stripe-style form into nested dicts and lists (values stay strings).

    Accepts a raw urlencoded body, ``(name, value)`` pairs, a flat mapping of bracketed names
    (``{"parameters[columns][0]": "a"}``), or an already nested mapping (returned as a copy).
    Indexed names must be dense from 0 (``[0]``, ``[1]``, ...); ``name[]`` appends.

    :param form: the form in any of those shapes.
    :raises ValueError: for malformed names, gaps in indices, or a name used both as a value
        and as a container.
    """
    if isinstance(form, bytes):
        form = form.decode("utf-8")
    if isinstance(form, str):
        pairs = parse_qsl(form, keep_blank_values=True, strict_parsing=bool(form))
    elif isinstance(form, Mapping):
        if not any("[" in str(k) for k in form):
            return copy.deepcopy(dict(form))
        pairs = [(str(k), v) for k, v in form.items()]
    else:
        pairs = list(form)
    root: dict[str, Any] = {}
    for name, value in pairs:
        match = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", name)
        if not match:
            raise ValueError(f"malformed form name {name!r}")
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node: dict[str, Any] = root
        for depth, part in enumerate(parts):
            if part == "":
                part = f"+{sum(1 for k in node if k.startswith('+')):09d}"
            if depth == len(parts) - 1:
                if part in node:
                    raise ValueError(f"form name {name!r} given twice or used as a container")
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise ValueError(f"form name {name!r} nests under a plain value")
                node = child
    decoded: dict[str, Any] = _lists(root, "")
    return decoded


def _lists(node: Any, where: str) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(k.isdigit() or k.startswith("+") for k in node):
        appended = sorted(k for k in node if k.startswith("+"))
        indexed = sorted((int(k), k) for k in node if k.isdigit())
        if [i for i, _ in indexed] != list(range(len(indexed))):
            raise ValueError(f"{where or 'form'}: list indices {[i for i, _ in indexed]} are not 0..n-1")
        ordered = [k for _, k in indexed] + appended
        return [_lists(node[k], f"{where}[{k}]") for k in ordered]
    return {k: _lists(v, f"{where}[{k}]" if where else k) for k, v in node.items()}


def _coerce(value: Any, schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Any:
    """Turn form strings into what the schema expects where the text allows it (ints, lists)."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[1]]
    kind = schema.get("type")
    if kind == "integer" and isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    if kind == "boolean" and value in ("true", "false"):
        return value == "true"
    if kind == "object" and isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: _coerce(v, props[k], defs) if k in props else v for k, v in value.items()}
    if kind == "array" and isinstance(value, list):
        return [_coerce(v, schema.get("items", {}), defs) for v in value]
    return value


def validate_create_form(
    form: str | bytes | Mapping[str, Any] | Iterable[tuple[str, str]], *, strict: bool = True
) -> dict[str, Any]:
    """Check a POST /v1/reporting/report_runs body against the spec's request schema.

    Integers arrive as text in a form, so strings of digits count as integers where the schema
    wants one (``parameters[interval_start]``); anything else must match the schema as is.

    :param form: the body in any shape :func:`decode_form` accepts, e.g. ``SimulatorRequest.form``,
        ``SimulatorRequest.form_pairs`` or the raw body.
    :param strict: reject keys inside ``parameters`` the spec does not declare.
    :returns: the decoded, coerced form.
    :raises ValueError: the form cannot be decoded.
    :raises jsonschema.ValidationError: it does not conform.
    """
    decoded = decode_form(form)
    schema = create_form_schema(strict=strict)
    coerced = _coerce(
        decoded,
        spec()["paths"]["/v1/reporting/report_runs"]["post"]["requestBody"]["content"][
            "application/x-www-form-urlencoded"
        ]["schema"],
        spec()["components"]["schemas"],
    )
    _check(coerced, schema)
    result: dict[str, Any] = coerced
    return result
