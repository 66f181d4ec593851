"""`agentrefine diversity OUT [OTHER_OUT]`: a run's diversity figures (`service.diversity`),
or two runs side by side (two generator models, two persona sources), with their scripts on
one map.

It prints the Markdown table and the path of the map: `OUT/report/diversity.png` for one run,
`OUT/report/diversity-vs-<OTHER_OUT's name>.png` for two (or `--png PATH`). Like
`agentrefine report`, it reads only the run directories' stores.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from service.diversity import Diversity, measure, table
from service.rundir import file_mode, storage_error
from service.store import Store


class NotARunDirectory(Exception):
    """A path given is not a run directory."""


def main_diversity(outs: list[str], png: str | None = None, as_json: bool = False) -> tuple[str, Path | None]:
    """The text to print (the table, or JSON) and the map written (None: no script to map)."""
    from service import plots  # matplotlib: imported only when a map is drawn

    runs = [(_name(out, outs), _measure(Path(out))) for out in outs]
    first = Path(outs[0])
    if png:
        path = Path(png)
    elif len(outs) == 1:
        path = first / "report" / "diversity.png"
    else:
        path = first / "report" / f"diversity-vs-{Path(outs[1]).resolve().name}.png"
    figure = plots.diversity_figure(runs)
    written = None
    if figure is not None:
        with file_mode((first / "state.sqlite").stat().st_mode & 0o777):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise storage_error(path.parent, exc) from None
            plots.save(figure, path)
        written = path
    if as_json:
        text = orjson.dumps({name: d.as_dict() for name, d in runs}, option=orjson.OPT_INDENT_2).decode()
    else:
        text = "\n".join(table(runs))
    return text, written


def _measure(out: Path) -> Diversity:
    database = out / "state.sqlite"
    if not database.is_file():
        raise NotARunDirectory(f"{out}: not a run directory (no state.sqlite)")
    try:
        store = Store(database)
        try:
            return measure(store)
        finally:
            store.close()
    except sqlite3.Error as exc:
        raise storage_error(database, exc) from None


def _name(out: str, outs: list[str]) -> str:
    """A column name: the run directory's name, or its path where two share a name."""
    name = Path(out).resolve().name
    return out if sum(Path(o).resolve().name == name for o in outs) > 1 else name
