"""Plain-text tables for the terminal."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_table"]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, title: str | None = None) -> str:
    """Formats rows as an aligned table: the first column left-aligned, the others right.

    Example:
        >>> print(format_table(["model", "params"], [["unet", "31.02M"]]))
        model  params
        -----  ------
        unet   31.02M
    """
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.ljust(width) if index == 0 else value.rjust(width)
            for index, (value, width) in enumerate(zip(values, widths))
        ]
        return "  ".join(parts).rstrip()

    out = [title] if title else []
    out.append(line([str(h) for h in headers]))
    out.append(line(["-" * width for width in widths]))
    out.extend(line(row) for row in cells)
    return "\n".join(out)
