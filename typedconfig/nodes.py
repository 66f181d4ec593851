"""A configuration as a tree of `Node`s: each value with the place it came from.

`read_yaml` reads a file as YAML's node tree, so every value keeps its line: a mapping's
values are located at their key's line (`config.yaml:12`). The file is trusted no further
than its size: at most `max_bytes`, and at most `max_values` values once YAML aliases are
followed (an alias "bomb" of a few lines that stands for billions of values is refused
before it is expanded). `override` sets a dotted key from another source (`--set`, the
environment, a CLI option), located at that source, so it is checked exactly like the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20
MAX_VALUES = 10_000  # mappings, lists and scalars, aliases followed


class ConfigError(ValueError):
    """A configuration problem, reported as one line naming the place."""


@dataclass
class Node:
    """A plain value (a dict of Nodes, a list of Nodes, or a scalar) and where it came from."""

    value: Any
    where: str

    def plain(self) -> Any:
        """The value without locations (dicts, lists and scalars)."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value

    def find(self, *keys: str) -> Node:
        """The node at `keys`, or the deepest one on the way that exists (for error places)."""
        node = self
        for key in keys:
            if not isinstance(node.value, dict) or key not in node.value:
                break
            node = node.value[key]
        return node

    def locations(self, prefix: str = "") -> dict[str, str]:
        """Where each value of the tree came from, by dotted key ("" is the node itself); with
        the plain value, this is what another process needs to rebuild the tree (`located`)."""
        places = {prefix: self.where}
        if isinstance(self.value, dict):
            for key, child in self.value.items():
                places |= child.locations(f"{prefix}.{key}" if prefix else key)
        elif isinstance(self.value, list):
            for i, child in enumerate(self.value):
                places |= child.locations(f"{prefix}[{i}]")
        return places


def read_yaml(path: str | Path, max_bytes: int = MAX_BYTES, max_values: int = MAX_VALUES) -> Node:
    """The YAML file as a located tree (an empty file is an empty mapping)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    if len(raw) > max_bytes:
        raise ConfigError(f"{path}: config is larger than {max_bytes >> 20} MiB; is it the right file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: config is not UTF-8 text (byte {exc.start})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        tree = _Reader(str(path), max_values).read(node) if node is not None else Node({}, f"{path}:1")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    if not isinstance(tree.value, dict):
        raise ConfigError(f"{tree.where}: the config must be a mapping")
    return tree


class _Reader:
    """A YAML node tree as `Node`s, following at most `max_values` nodes: an alias is a
    reference to an earlier node, counted each time it is followed."""

    def __init__(self, filename: str, max_values: int) -> None:
        self._filename = filename
        self._max_values = max_values
        self._values = 0
        self._constructor = yaml.constructor.SafeConstructor()

    def read(self, node: yaml.Node) -> Node:
        self._values += 1
        where = f"{self._filename}:{node.start_mark.line + 1}"
        if self._values > self._max_values:
            raise ConfigError(
                f"{where}: the config holds more than {self._max_values} values once its YAML aliases "
                "(*name) are expanded; write the values out instead"
            )
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Node] = {}
            for key_node, value_node in node.value:
                key = self._scalar(key_node)
                if not isinstance(key, str):
                    raise ConfigError(
                        f"{self._filename}:{key_node.start_mark.line + 1}: keys must be strings"
                    )
                child = self.read(value_node)
                child.where = f"{self._filename}:{key_node.start_mark.line + 1}"  # the key's line
                out[key] = child
            return Node(out, where)
        if isinstance(node, yaml.SequenceNode):
            return Node([self.read(n) for n in node.value], where)
        return Node(self._scalar(node), where)

    def _scalar(self, node: yaml.Node) -> Any:
        """A scalar node's value as YAML reads it (int, float, bool, null, str)."""
        if not isinstance(node, yaml.ScalarNode):
            return None  # a mapping or list used as a key: not a string
        return self._constructor.construct_object(node)


def yaml_value(raw: str) -> Any:
    """An override's VALUE as YAML reads it (`500`, `true`, `[a, b]`), or the text itself."""
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        return raw


def override(tree: Node, dotted: str, value: Any, where: str) -> None:
    """Set the dotted key to `value` (plain), located at `where`; missing mappings are made."""
    parts = [p for p in dotted.split(".") if p]
    if not parts:
        raise ConfigError(f"{where}: empty key")
    node = tree
    for part in parts[:-1]:
        child = node.value.get(part)
        if child is None or child.value is None:
            child = Node({}, where)
            node.value[part] = child
        if not isinstance(child.value, dict):
            raise ConfigError(f"{where}: {dotted}: {part} is not a mapping")
        node = child
    node.value[parts[-1]] = from_plain(value, where)


def from_plain(value: Any, where: str) -> Node:
    """A plain value as a tree located, every node of it, at `where`."""
    if isinstance(value, dict):
        return Node({str(k): from_plain(v, where) for k, v in value.items()}, where)
    if isinstance(value, list):
        return Node([from_plain(v, where) for v in value], where)
    return Node(value, where)


def located(value: Any, places: Mapping[str, str], default: str) -> Node:
    """A plain value as a tree, each node at its place in `places` (`Node.locations()` of the
    tree it was taken from), else at `default`."""

    def wrap(item: Any, key: str) -> Node:
        where = places.get(key, default)
        if isinstance(item, dict):
            return Node({str(k): wrap(v, f"{key}.{k}" if key else str(k)) for k, v in item.items()}, where)
        if isinstance(item, list):
            return Node([wrap(v, f"{key}[{i}]") for i, v in enumerate(item)], where)
        return Node(item, where)

    return wrap(value, "")
