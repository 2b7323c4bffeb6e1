"""Stripe's form encoding as the simulator reads it: ``parameters[columns][0]=a`` and friends."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["FormError", "decode_form"]


class FormError(Exception):
    """A form name Stripe would refuse; ``param`` is the name as Stripe quotes it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def decode_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Decode Stripe-style form pairs into nested dicts and lists.

    ``parameters[columns][0]=a`` becomes ``{"parameters": {"columns": ["a"]}}``; ``name[]``
    appends. A dict whose keys are all indices becomes a list ordered by index.

    :param pairs: ``(name, value)`` pairs in body order.
    :raises FormError: for malformed names or a name used both as a value and as a container.
    """
    root: dict[str, Any] = {}
    append_no = 0
    for name, value in pairs:
        m = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", name)
        if not m:
            raise FormError(f"Invalid parameter name: {name}", name)
        parts = [m.group(1), *re.findall(r"\[([^\[\]]*)\]", m.group(2))]
        node = root
        for depth, part in enumerate(parts):
            if part == "":
                # "name[]" appends; keep arrival order with keys that sort after explicit indices.
                part = f"\x00{append_no:09d}"
                append_no += 1
            here = "".join(f"[{p}]" if i else p for i, p in enumerate(parts[: depth + 1]))
            if depth == len(parts) - 1:
                if isinstance(node.get(part), dict):
                    raise FormError(f"Invalid {_container_word(node[part])}", here)
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise FormError("Invalid object", here)
                node = child
    decoded: dict[str, Any] = _listify(root)
    return decoded


def _container_word(node: dict[str, Any]) -> str:
    return "array" if node and all(_is_index(k) for k in node) else "object"


def _is_index(key: str) -> bool:
    return key.isdigit() or key.startswith("\x00")


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and all(_is_index(k) for k in converted):
        ordered = sorted(converted, key=lambda k: (1, k) if k.startswith("\x00") else (0, f"{int(k):020d}"))
        return [converted[k] for k in ordered]
    return converted
