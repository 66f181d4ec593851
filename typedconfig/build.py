"""Build frozen dataclasses from a located tree, checking every value against its field.

A dataclass field's type says what it takes (bool, int, float, str, a list or mapping of
those, another dataclass, `X | None`, or `Node` to keep the subtree unbuilt); its metadata
may add a `Range` (`bounded`) or a set of choices (`one_of`). Unknown keys, wrong types,
out-of-range numbers and missing required keys each raise one `ConfigError` line:
`config.yaml:12: endpoints.openai.limits.rpm: expected an integer, got 'fast'`. A
dataclass held in a mapping that has a `name` field gets its key as its name.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from typedconfig.nodes import ConfigError, Node


@dataclass(frozen=True)
class Range:
    """The values a number may take: lo <= value <= hi (lo < value when `above`)."""

    lo: float
    hi: float
    above: bool = False
    note: str = ""  # what a special value means, e.g. "0: no limit"

    def problem(self, value: float) -> str | None:
        """Why `value` is out of range, or None."""
        low_ok = value > self.lo if self.above else value >= self.lo
        if low_ok and value <= self.hi:  # false for NaN too
            return None
        low = f"above {self.lo}" if self.above else f"at least {self.lo}"
        note = f" ({self.note})" if self.note else ""
        return f"must be {low} and at most {self.hi}{note}, got {value}"


@dataclass(frozen=True)
class Choices:
    """The values a setting may take."""

    options: tuple[Any, ...]

    def problem(self, value: Any) -> str | None:
        if value in self.options:
            return None
        names = [str(option) for option in self.options]
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        return f"expected {listed}, got {value!r}"


def bounded(default: Any, lo: float, hi: float, *, above: bool = False, note: str = "") -> Any:
    """A numeric field with its range."""
    return field(default=default, metadata={"range": Range(lo, hi, above, note)})


def one_of(default: Any, options: Sequence[Any]) -> Any:
    """A field that takes one of `options`."""
    return field(default=default, metadata={"range": Choices(tuple(options))})


def build(tp: Any, node: Node, path: str = "") -> Any:
    """`node` as an instance of `tp`; `path` is the dotted key it sits at (for messages)."""
    label = path or "config"
    origin = typing.get_origin(tp)
    if tp is Node:
        return node
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if node.value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        as_list = [o for o in inner if typing.get_origin(o) is list]
        if as_list and isinstance(node.value, list):
            return build(as_list[0], node, path)
        return build(inner[0], node, path)
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, node, path, label)
    if origin is list:
        if not isinstance(node.value, list):
            raise ConfigError(f"{node.where}: {label}: expected a list, got {_show(node.value)}")
        (item_tp,) = typing.get_args(tp)
        return [build(item_tp, item, f"{label}[{i}]") for i, item in enumerate(node.value)]
    if origin is dict:
        return _mapping(tp, node, path, label)
    return _scalar(tp, node, label)


def _dataclass(tp: Any, node: Node, path: str, label: str) -> Any:
    if node.value is None:
        node = Node({}, node.where)
    if not isinstance(node.value, dict):
        raise ConfigError(f"{node.where}: {label}: expected a mapping, got {_show(node.value)}")
    hints = typing.get_type_hints(tp)
    fields = {f.name: f for f in dataclasses.fields(tp) if f.name != "name"}
    unknown = [k for k in node.value if k not in fields]
    if unknown:
        raise ConfigError(
            f"{node.value[unknown[0]].where}: {_join(path, unknown[0])}: unknown key "
            f"(expected one of: {', '.join(fields)})"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in node.value:
            kwargs[name] = value = build(hints[name], node.value[name], _join(path, name))
            check = f.metadata.get("range")
            if check is not None and value is not None and (problem := check.problem(value)):
                raise ConfigError(f"{node.value[name].where}: {_join(path, name)}: {problem}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{node.where}: {_join(path, name)}: required key is missing")
    return tp(**kwargs)


def _mapping(tp: Any, node: Node, path: str, label: str) -> dict[str, Any]:
    _, value_tp = typing.get_args(tp)
    if not isinstance(node.value, dict):
        raise ConfigError(f"{node.where}: {label}: expected a mapping, got {_show(node.value)}")
    if value_tp is Any:
        return node.plain()
    out = {}
    for key, child in node.value.items():
        built = build(value_tp, child, _join(path, key))
        if dataclasses.is_dataclass(built) and "name" in {f.name for f in dataclasses.fields(built)}:
            built = dataclasses.replace(built, name=key)
        out[key] = built
    return out


def _scalar(tp: Any, node: Node, label: str) -> Any:
    value = node.value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{node.where}: {label}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{node.where}: {label}: expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{node.where}: {label}: expected a number, got {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{node.where}: {label}: expected a string, got {_show(value)}")
        return value
    raise ConfigError(f"{node.where}: {label}: unsupported type {getattr(tp, '__name__', tp)}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return repr(value)
