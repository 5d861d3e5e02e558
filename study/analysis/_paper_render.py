"""The paper table (:func:`study.analysis._paper.paper_table`) as text for a terminal,
LaTeX (booktabs, by the pandas Styler), Markdown or CSV.

In each data setting's table the best mean of each column with a direction is bold and
the second best underlined (LaTeX, Markdown), among the multi-task rows; means that print
the same tie.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import pandas as pd

from study.analysis._paper import REFERENCE, TableColumn, delta_m_line, paper_table
from study.analysis._results import StudyResults, load_results

__all__ = ["TABLE_FORMATS", "render_table", "table"]

#: ``mtlstudy table --format``.
TABLE_FORMATS: tuple[str, ...] = ("text", "latex", "markdown", "csv")
#: The terminal table's width, in characters.
WIDTH = 120


def _decimals(column: TableColumn, means: pd.Series) -> int:
    """Δm to 2 decimals; other columns to 3 significant digits of their largest value."""
    if column.key == "delta_m":
        return 2
    largest = means.abs().max()
    if not math.isfinite(largest) or largest == 0:
        return 3
    return max(0, 2 - math.floor(math.log10(largest)))


def _marks(rows: pd.DataFrame, column: TableColumn, decimals: int) -> dict[int, str]:
    """``{row index: "best" | "second"}`` among the multi-task rows."""
    if column.higher is None:
        return {}
    multi = rows.loc[~rows["reference"], column.key].dropna().astype(float).round(decimals)
    ranked = sorted(set(multi), reverse=column.higher)
    marks = {}
    for index, value in multi.items():
        if value == ranked[0]:
            marks[index] = "best"
        elif len(ranked) > 1 and value == ranked[1]:
            marks[index] = "second"
    return marks


def _number(value: float, decimals: int, signed: bool) -> str:
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def _cells(
    rows: pd.DataFrame, columns: Sequence[TableColumn], pm: str
) -> tuple[dict[str, list[str]], dict[str, dict[int, str]]]:
    """Each column's cell texts (mean, then ``pm`` and the spread when there is one) and
    its marks."""
    cells, marks = {}, {}
    for column in columns:
        decimals = _decimals(column, rows[column.key].astype(float))
        signed = column.key == "delta_m"
        texts = []
        for _, row in rows.iterrows():
            mean, spread = row[column.key], row.get(f"{column.key}_spread", math.nan)
            if pd.isna(mean):
                texts.append("–")
            elif signed and row["reference"]:
                texts.append("0")
            elif pd.isna(spread):
                texts.append(_number(mean, decimals, signed))
            else:
                texts.append(f"{_number(mean, decimals, signed)}{pm}{spread:.{decimals}f}")
        cells[column.key] = texts
        marks[column.key] = _marks(rows, column, decimals)
    return cells, marks


def _tables(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame, list[TableColumn]]]:
    return [
        (dataset, rows, table.attrs["columns"][dataset])
        for dataset, rows in table.groupby("data_key", sort=True)
    ]


def render_table(table: pd.DataFrame, fmt: str = "text", wide: bool = False) -> str:
    """The table in ``fmt`` (one of :data:`TABLE_FORMATS`). ``wide``: the terminal table
    shows every metric; without it, the metrics papers report, in 120 columns."""
    if fmt == "csv":
        return _csv(table)
    renderers = {"text": _text, "latex": _latex, "markdown": _markdown}
    if fmt not in renderers:
        raise ValueError(f"--format: unknown {fmt!r}; expected one of {', '.join(TABLE_FORMATS)}")
    several = table["data_key"].nunique() > 1
    blocks = []
    for dataset, rows, columns in _tables(table):
        if fmt == "text":
            blocks.append(_text(table, dataset, rows, columns, wide, several))
        else:
            blocks.append(renderers[fmt](table, dataset, rows, columns, several))
    return "\n\n".join(blocks) + "\n"


def table(
    results: StudyResults
    | pd.DataFrame
    | str
    | os.PathLike[str]
    | Sequence[str | os.PathLike[str]],
    fmt: str = "text",
    group_by: Sequence[str] = ("method", "architecture"),
    seeds: str = "mean±std",
    wide: bool = False,
) -> str:
    """The paper table of ``results`` (paths of results roots or study folders, loaded
    results, or a trials DataFrame) in ``fmt``: ``text``, ``latex``, ``markdown`` or
    ``csv``. ``group_by``: one row per distinct value of these trial columns; ``seeds``:
    ``mean±std``, ``mean±sem`` or ``mean``."""
    if isinstance(results, pd.DataFrame):
        trials = results
    elif isinstance(results, StudyResults):
        trials = results.trials
    else:
        trials = load_results(results).trials
    return render_table(paper_table(trials, group_by, seeds), fmt, wide)


def _csv(table: pd.DataFrame) -> str:
    """Every column, means as ``<name>_mean`` and spreads as ``<name>_<std|sem>``."""
    spread = {"mean±std": "std", "mean±sem": "sem"}.get(table.attrs["seeds"], "")
    if not spread:
        table = table.drop(columns=[c for c in table if c.endswith("_spread")])
    renamed = {}
    for column in table.columns:
        if column.endswith("_spread"):
            renamed[column] = column.removesuffix("_spread") + f"_{spread}"
        elif column in {c.key for cs in table.attrs["columns"].values() for c in cs}:
            renamed[column] = f"{column}_mean"
    return table.rename(columns=renamed).to_csv(index=False)


# ---- text ---------------------------------------------------------------------------


Column = tuple[str, list[str]]


def fit_text(
    heads: Sequence[Column], body: Sequence[Column], pinned: bool, wide: bool
) -> tuple[list[str], int]:
    """Fixed-width lines of ``heads`` (left-aligned, always shown) and ``body`` columns
    (right-aligned) in :data:`WIDTH` characters: body columns that do not fit are left out
    from the end, except the last one when ``pinned`` (Δm). ``wide`` keeps every column.
    Returns the lines and how many body columns they show."""

    def width(column: Column) -> int:
        return max(len(column[0]), *(len(t) for t in column[1]))

    left = WIDTH - sum(width(c) + 2 for c in heads)
    last = list(body[-1:]) if pinned else []
    left -= sum(width(c) + 2 for c in last)
    kept = []
    for column in body[:-1] if pinned else body:
        if wide or width(column) + 2 <= left:
            kept.append(column)
            left -= width(column) + 2
    out = [*heads, *kept, *last]
    widths = [width(c) for c in out]

    def line(texts: Sequence[str]) -> str:
        cells = (
            t.ljust(w) if i < len(heads) else t.rjust(w)
            for i, (t, w) in enumerate(zip(texts, widths, strict=True))
        )
        return "  ".join(cells).rstrip()

    rows = len(out[0][1]) if out else 0
    lines = [line([name for name, _ in out])]
    lines += [line([cells[j] for _, cells in out]) for j in range(rows)]
    return lines, len(kept) + len(last)


def _text(
    table: pd.DataFrame,
    dataset: str,
    rows: pd.DataFrame,
    columns: list[TableColumn],
    wide: bool,
    several: bool,
) -> str:
    group_by = table.attrs["group_by"]
    shown = columns if wide else [c for c in columns if c.paper]
    cells, _ = _cells(rows, shown, "±")
    heads = [(g, [str(v) for v in rows[g]]) for g in group_by]
    heads.append(("seeds", [str(int(v)) for v in rows["seeds"]]))
    body = [(f"{c.task} {c.label}".strip(), cells[c.key]) for c in shown]
    pinned = bool(shown) and shown[-1].key == "delta_m"
    lines, kept = fit_text(heads, body, pinned, wide)
    hidden = len(columns) - kept
    if hidden:
        lines.append(f"({hidden} more column(s): --wide)")
    lines.append(delta_m_line(table, dataset))
    title = [f"data: {dataset}"] if several else []
    return "\n".join(title + [line.rstrip() for line in lines])


# ---- LaTeX --------------------------------------------------------------------------

_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"$<$",
    ">": r"$>$",
    "±": r"$\pm$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "Δ": r"$\Delta$",
    "δ": r"$\delta$",
    "°": r"$^\circ$",
    "²": r"$^2$",
    "³": r"$^3$",
    "Σ": r"$\Sigma$",
    "·": r"$\cdot$",
    "–": "--",
    "−": "-",
}


def latex_text(text: str) -> str:
    """Plain text as LaTeX that any engine reads (ASCII: symbols as math)."""
    escaped = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text)).replace("$$", "")
    return escaped.encode("ascii", "replace").decode("ascii")


def _latex(
    table: pd.DataFrame,
    dataset: str,
    rows: pd.DataFrame,
    columns: list[TableColumn],
    several: bool,
) -> str:
    group_by = table.attrs["group_by"]
    cells, marks = _cells(rows, columns, "±")
    data: dict[tuple[str, str], list[str]] = {}
    for g in group_by:
        data[("", latex_text(g))] = [latex_text(v) for v in rows[g]]
    data[("", "seeds")] = [str(int(v)) for v in rows["seeds"]]
    for c in columns:
        data[(latex_text(c.task_name if c.task else ""), latex_text(c.label))] = [
            latex_text(t) for t in cells[c.key]
        ]
    frame = pd.DataFrame(data)
    frame.columns = pd.MultiIndex.from_tuples(list(data))
    styles = pd.DataFrame("", index=frame.index, columns=frame.columns)
    props = {"best": "textbf:--rwrap;", "second": "underline:--rwrap;"}
    for i, c in enumerate(columns, start=len(group_by) + 1):
        for index, mark in marks[c.key].items():
            styles.iloc[rows.index.get_loc(index), i] = props[mark]
    styler = frame.style.hide(axis="index").apply(lambda _: styles, axis=None)
    text = styler.to_latex(
        hrules=True,
        column_format="l" * len(group_by) + "r" + "c" * len(columns),
        multicol_align="c",
    )
    text = _cmidrules(text, columns, len(group_by) + 1)
    if bool(rows["reference"].iloc[0]):
        text = _rule_after_first_row(text)
    comment = [
        f"% data: {dataset}" if several else "",
        "% " + latex_text(delta_m_line(table, dataset)).replace("$", ""),
        "% bold: best, underlined: second best; needs \\usepackage{booktabs}",
    ]
    return "\n".join(line for line in comment if line) + "\n" + text.rstrip()


def _cmidrules(text: str, columns: Sequence[TableColumn], before: int) -> str:
    """A booktabs ``\\cmidrule`` under each task's name, over that task's metrics."""
    spans, start = [], before + 1
    for i, c in enumerate(columns):
        end = start + i
        if c.task and (not spans or spans[-1][0] != c.task):
            spans.append((c.task, end, end))
        elif c.task:
            spans[-1] = (c.task, spans[-1][1], end)
    rules = " ".join(rf"\cmidrule(lr){{{a}-{b}}}" for _, a, b in spans)
    lines = text.splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith(r"\toprule"))
    lines.insert(top + 2, rules)
    return "\n".join(lines) + "\n"


def _rule_after_first_row(text: str) -> str:
    lines = text.splitlines()
    mid = next(i for i, line in enumerate(lines) if line.startswith(r"\midrule"))
    lines.insert(mid + 2, r"\midrule")
    return "\n".join(lines) + "\n"


# ---- Markdown -----------------------------------------------------------------------


def _md(text: str) -> str:
    return str(text).replace("|", r"\|").replace("*", r"\*")


def _markdown(
    table: pd.DataFrame,
    dataset: str,
    rows: pd.DataFrame,
    columns: list[TableColumn],
    several: bool,
) -> str:
    group_by = table.attrs["group_by"]
    cells, marks = _cells(rows, columns, " ± ")
    header = [*group_by, "seeds", *(f"{c.task_name} {c.label}".strip() for c in columns)]
    align = [":--"] * len(group_by) + ["--:"] + [":-:"] * len(columns)
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    for j, (index, row) in enumerate(rows.iterrows()):
        line = [_md(row[g]) for g in group_by] + [str(int(row["seeds"]))]
        for c in columns:
            text = _md(cells[c.key][j])
            mark = marks[c.key].get(index)
            line.append(f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark else text)
        if row["reference"]:
            line[0] = f"*{_md(REFERENCE)}*"
        lines.append("| " + " | ".join(line) + " |")
    notes = [
        f"**data: {_md(dataset)}**\n" if several else "",
        "\n".join(lines),
        "\nBold: best; underlined: second best. " + _md(delta_m_line(table, dataset)) + ".",
    ]
    return "\n".join(n for n in notes if n)
