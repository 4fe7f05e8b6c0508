"""Command-line tables that never cut an identifier.

A rich table squeezed into a narrow terminal shortens cells with an ellipsis
(``ten_4d583fddee…``), which makes an id useless to copy. Here the columns
named ``whole`` (ids, keys, customer ids) keep their full width on one line and
the other columns fold; when the whole columns alone do not fit the terminal,
each row is printed as ``column: value`` lines instead of a table.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

#: Narrowest a folding column gets, so its header stays legible.
_FOLDED_MIN = 6


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    whole: Collection[str] = (),
    title: str | None = None,
    right: Collection[str] = (),
    console: Console | None = None,
) -> None:
    """Print ``rows`` under ``columns``; ``whole`` columns are never cut or wrapped.

    ``right`` names columns aligned right (numbers). Cells are plain text (rich
    markup in them is shown as written).
    """
    out = console or Console()
    widths = {
        name: max([len(name), *(len(row[i]) for row in rows)])
        for i, name in enumerate(columns)
        if name in whole
    }
    # Each column costs its padding (2) and a border (1), plus the closing border.
    needed = sum(widths.values()) + 3 * len(columns) + 1
    needed += _FOLDED_MIN * (len(columns) - len(widths))
    if needed > out.width:
        _print_records(out, columns, rows, title)
        return
    table = Table(
        *(
            Column(
                name,
                no_wrap=name in widths,
                min_width=widths.get(name),
                overflow="ellipsis" if name in widths else "fold",
                justify="right" if name in right else "left",
            )
            for name in columns
        ),
        title=title,
    )
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    out.print(table)


def _print_records(
    out: Console, columns: Sequence[str], rows: Sequence[Sequence[str]], title: str | None
) -> None:
    if title:
        out.print(escape(title), highlight=False)
    label = max(len(name) for name in columns) if columns else 0
    for n, row in enumerate(rows):
        if n:
            out.print()
        for name, cell in zip(columns, row, strict=True):
            out.print(f"{escape(name):<{label}}  {escape(cell)}", highlight=False, soft_wrap=True)
