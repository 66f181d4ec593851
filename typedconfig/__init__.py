"""Typed configuration from YAML: a file read as a tree of located values, overridden by
dotted assignments, and built into frozen dataclasses whose every error names the place.

    tree = read_yaml("config.yaml")                     # every node knows its file:line
    override(tree, "run.n", 500, "--set run.n=500")      # an override is named by its source
    config = build(Config, tree)                        # types, ranges, unknown keys: one line

`bounded(default, lo, hi)` and `one_of(default, choices)` declare a field's range or choices
on the dataclass itself, so the schema is the documentation and the check. A field typed
`Node` keeps its subtree unbuilt, with its locations, for another program to build
(`Node.locations()`, `located()`): the embedded endpoint builds its own settings this way and
its errors still name the line of config.yaml they came from.
"""

from typedconfig.build import Range, bounded, build, one_of
from typedconfig.nodes import (
    ConfigError,
    Node,
    from_plain,
    located,
    override,
    read_yaml,
    yaml_value,
)

__all__ = [
    "ConfigError",
    "Node",
    "Range",
    "bounded",
    "build",
    "from_plain",
    "located",
    "one_of",
    "override",
    "read_yaml",
    "yaml_value",
]
