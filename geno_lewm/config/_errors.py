"""Validation errors of a configuration as a reader wants them: the path of the offending
key (``sinks[0].path``), and for an unknown key the closest known one.
"""

from __future__ import annotations

import difflib
import inspect
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

__all__ = ["describe_error"]


def _is_section(value: Any) -> bool:
    return inspect.isclass(value) and issubclass(value, BaseModel)


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` as ``X``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _model_at(root: type[BaseModel], location: tuple[Any, ...]) -> type[BaseModel] | None:
    """The section model that ``location`` (a pydantic error location) points into."""
    current: Any = root
    for part in location:
        current = _unwrap(current)
        if _is_section(current):
            spec = current.model_fields.get(part) if isinstance(part, str) else None
            if spec is None:
                return None
            current = spec.annotation
            continue
        origin, args = get_origin(current), get_args(current)
        if origin is list and isinstance(part, int):
            current = args[0]
        elif origin is dict and isinstance(part, str):
            current = args[1]
        elif origin in (Union, types.UnionType):
            tagged = [
                member
                for member in map(_unwrap, args)
                if _is_section(member)
                and "type" in member.model_fields
                and get_args(member.model_fields["type"].annotation) == (part,)
            ]
            if not tagged:
                return None
            current = tagged[0]
        else:
            return None
    current = _unwrap(current)
    return current if _is_section(current) else None


def _readable_path(location: tuple[Any, ...]) -> str:
    """``('sinks', 0, 'csv', 'path')`` as ``sinks[0].path``: list indices in brackets,
    without the tags pydantic adds for unions.
    """
    parts: list[str] = []
    for index, part in enumerate(location):
        if isinstance(part, int):
            if parts:
                parts[-1] += f"[{part}]"
            else:
                parts.append(f"[{part}]")
        elif "[" in str(part):
            continue  # a union member's name, e.g. 'list[str]'
        elif index >= 2 and location[index - 2] == "sinks" and isinstance(location[index - 1], int):
            continue  # the sink's type tag
        else:
            parts.append(str(part))
    return ".".join(parts)


def describe_error(root: type[BaseModel], error: dict[str, Any]) -> dict[str, Any]:
    """One pydantic error of a ``root`` model as ``{path, message, type}``."""
    location = tuple(error["loc"])
    path = _readable_path(location)
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        section = _model_at(root, location[:-1])
        allowed = list(section.model_fields) if section is not None else []
        close = difflib.get_close_matches(str(location[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = f" (known keys: {', '.join(allowed)})" if allowed else ""
        message = f"unknown key{hint}{known}"
    else:
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        given = error.get("input")
        if isinstance(given, (str, int, float, bool)) and len(repr(given)) <= 60 and error["type"] != "missing":
            message += f": got {given!r}"
    return {"path": path or "(top level)", "message": message, "type": error["type"]}
