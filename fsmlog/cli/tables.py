"""Tables that fit the terminal: cells stay whole, and columns that do not fit are left out.

Rich squeezes a table that is too wide by folding cells letter by letter; a
``FittedTable`` instead measures its cells at render time (the console's
width) and leaves out the least important columns until the rest fit, each on
one line, with only long text (errors) wrapping between words. A caption names
what was left out; ``wide`` shows every column at its natural width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

ALWAYS = 100  # a column with this ``keep`` is never left out
GAP = 2  # characters between two columns
WRAP_MIN = 20  # a wrapping column is counted this wide (its header's width at least) when fitting


@dataclass(frozen=True)
class Col:
    header: str
    keep: int = ALWAYS  # the lowest is left out first when the table is too wide
    wrap: bool = False  # long text that may wrap between words; other cells stay on one line
    justify: str = "left"


def _plain(cell: Any) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


class FittedTable:
    def __init__(self, cols: Sequence[Col], rows: Sequence[Sequence[Any]], title: str | None = None,
                 wide: bool = False) -> None:
        self.cols = list(cols)
        self.rows = [list(r) for r in rows]
        self.title = title
        self.wide = wide

    def need(self, shown: Sequence[int], narrow: bool = True) -> int:
        """The width the columns ``shown`` need with every cell on one line (``narrow``: wrapping columns
        counted at ``WRAP_MIN``, or their longest word, so a word is never folded)."""
        total = GAP * max(0, len(shown) - 1)
        for i in shown:
            col = self.cols[i]
            cells = [_plain(r[i]) for r in self.rows]
            longest = max([cell_len(col.header)] + [cell_len(c) for c in cells])
            if col.wrap and narrow:
                word = max([cell_len(w) for c in cells for w in c.split()], default=0)
                total += min(longest, max(cell_len(col.header), WRAP_MIN, word))
            else:
                total += longest
        return total

    def shown(self, width: int) -> list[int]:
        """The columns that fit ``width``: the least important (rightmost first among equals) left out."""
        shown = list(range(len(self.cols)))
        while self.need(shown) > width:
            droppable = [i for i in shown if self.cols[i].keep < ALWAYS]
            if not droppable:
                break
            shown.remove(min(droppable, key=lambda i: (self.cols[i].keep, -i)))
        return shown

    def table(self, shown: Sequence[int]) -> Table:
        left_out = [c.header for i, c in enumerate(self.cols) if i not in shown]
        caption = None
        if left_out:  # wrapped at the table's width even on a console that leaves long lines to the terminal
            caption = Text(f"not shown at this width: {', '.join(left_out)} (--wide shows them)", style="dim",
                           no_wrap=False, overflow="fold")
        title = None if self.title is None else Text(self.title, no_wrap=False, overflow="fold")
        table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                      collapse_padding=True, title_justify="left", caption_justify="left")
        for i in shown:
            col = self.cols[i]
            table.add_column(col.header, no_wrap=not col.wrap, overflow="fold" if col.wrap else "ellipsis",
                             justify=col.justify)  # type: ignore[arg-type]
        for row in self.rows:
            table.add_row(*(row[i] for i in shown))
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.wide:  # every column at its natural width, however wide the terminal is
            every = list(range(len(self.cols)))
            natural = max(options.max_width, self.need(every, narrow=False))
            yield from console.render(self.table(every), options.update(width=natural))
            return
        yield self.table(self.shown(options.max_width))
