"""Figures and tables the notebooks share: one style, saved where the profile says.

Figures go to this process's figures folder (``paths.figures_dir``, which ``chapter.begin``
sets) as PNG; tables as CSV plus a markdown copy for the README's results section. One
display rule for every table (``format_frame``), used by the markdown copies and, after
``use_study_display``, by every DataFrame a chapter shows: metrics and differences with 4
decimals, p-values with 3 (``<0.001`` below 0.0005), counts as integers, missing as "—"; a
nonzero value that would round to "0.0000" in scientific form (``2.1e-05``).
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from clp_utils.base.io import atomic_write
from clp_utils.base.paths import figures_dir

sns.set_theme(context="notebook", style="whitegrid")


def int_format(df: pd.DataFrame, floatfmt: str = ".3f", index: str = "") -> tuple[str, ...]:
    """One number format per column (``index`` first): integers ".0f", the rest ``floatfmt``
    (for chapters that still pass it to ``save_table``, which ignores it)."""
    return (index,) + tuple(".0f" if pd.api.types.is_integer_dtype(t) else floatfmt
                            for t in df.dtypes)


def save_figure(fig: plt.Figure, name: str, folder: Path | None = None) -> None:
    """Save ``fig`` as ``<folder>/<name>.png`` (150 dpi, tight). Returns nothing, so a cell
    ending with this call shows no path under the figure."""
    folder = Path(folder or figures_dir())
    with atomic_write(folder / f"{name}.png", "wb") as fh:
        fig.savefig(fh, format="png", dpi=150, bbox_inches="tight")


def save_table(df: pd.DataFrame, name: str, folder: Path | None = None,
               floatfmt: str | tuple[str, ...] = ".3f",
               caption: str | None = None) -> tuple[Path, Path]:
    """Save ``df`` as ``<name>.csv`` (full precision, for code that reads it back) and
    ``<name>.md`` (``format_frame`` as markdown, under ``caption``); returns both paths.
    ``floatfmt`` is ignored: one rule formats every table."""
    folder = Path(folder or figures_dir())
    csv_path, md_path = folder / f"{name}.csv", folder / f"{name}.md"
    with atomic_write(csv_path) as fh:
        df.to_csv(fh, index=True)
    # numbers right, text left; disable_numparse keeps tabulate from re-reading the strings
    align = ("left",) + tuple("right" if _numeric(df.iloc[:, i]) else "left"
                              for i in range(df.shape[1]))
    md = format_frame(df).to_markdown(disable_numparse=True, colalign=align)
    with atomic_write(md_path) as fh:
        fh.write((f"{caption}\n\n" if caption else "") + md + "\n")
    return csv_path, md_path


def read_table(path: Path | str, **kwargs) -> pd.DataFrame:
    """Read back a table ``save_table`` (or a stored comparison table) wrote: ``pd.read_csv``
    with its text columns kept as text (one seed's ``seed deltas``, "+0.0951", would otherwise
    come back as the number 0.0951)."""
    return pd.read_csv(path, dtype={"seed deltas": str, "seed values": str}, **kwargs)


_COUNT_WORDS = {"n", "steps", "step", "queries", "seeds", "passages", "batches", "batch",
                "params", "runs", "tokens", "records", "candidates", "negatives", "questions",
                "dropped", "layer", "count"}
_RATIO_WORDS = {"per", "share", "rate", "mean", "sd", "avg", "seconds", "fraction"}


def _numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _kind(values: pd.Series, name: object) -> str:
    """"p", "count" or "metric": how the column ``name`` holding ``values`` is printed."""
    label = _text(name).lower().strip()
    if label == "p" or label.startswith(("p ", "p-value")) or any(
            key in label for key in ("p holm", "holm p", "p raw")):
        return "p"
    words = set(re.findall(r"[a-z]+", label))
    present = pd.to_numeric(values, errors="coerce").dropna() if _numeric(values) else []
    # whole floats are counts only when the name says so ("batches" 80.0, "seeds" with a
    # missing cell); a ratio such as "own queries per negative" = 1.0 stays a metric
    whole = len(present) > 0 and bool((present % 1 == 0).all())
    return "count" if whole and words & _COUNT_WORDS and not words & _RATIO_WORDS else "metric"


def number(x: object, kind: str = "metric") -> str:
    """One number as every table shows it (``format_frame``): a metric with 4 decimals, a
    real value below 0.00005 in two significant digits (never "0.0000"); ``kind="p"`` a
    p-value with 3 decimals ("<0.001" below 0.0005), ``"count"`` an integer; "—" when absent."""
    if isinstance(x, tuple):
        return ", ".join(number(v, kind) for v in x)
    if x is None or (pd.api.types.is_scalar(x) and pd.isna(x)):
        return "—"
    if isinstance(x, bool | np.bool_) or not isinstance(x, numbers.Real):
        return str(x)
    if isinstance(x, numbers.Integral) or kind == "count":
        return f"{x:.0f}"
    if kind == "p":
        return "<0.001" if 0 < x < 0.0005 else f"{x:.3f}"
    return f"{x:.2g}" if 0 < abs(x) < 0.00005 else f"{x:.4f}"


def interval_text(row: pd.Series, est: str = "delta", low: str = "95% CI low",
                  high: str = "95% CI high", more: str = "") -> str:
    """An estimate and its interval as every generated sentence prints them,
    "+0.0123 (95% CI -0.0040 to +0.0286)", with ``more`` added inside the brackets."""
    return f"{row[est]:+.4f} (95% CI {row[low]:+.4f} to {row[high]:+.4f}{more})"


def _text(label: object) -> str:
    return ", ".join(map(str, label)) if isinstance(label, tuple) else str(label)


def format_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with every cell and row label a display string, by the study's one rule
    for tables (module docstring); a MultiIndex becomes one level ("reddit, zero-shot")."""
    def column(values: pd.Series, name: object) -> list[str]:
        kind = _kind(values, name)
        return [number(v, kind) for v in values]

    levels = [column(pd.Series(df.index.get_level_values(i)), df.index.names[i])
              for i in range(df.index.nlevels)]
    index = pd.Index([", ".join(t) for t in zip(*levels, strict=True)], dtype=object,
                     name=", ".join(str(n) for n in df.index.names if n is not None) or None)
    out = pd.DataFrame({i: column(df.iloc[:, i], df.columns[i]) for i in range(df.shape[1])},
                       index=index, dtype=object)
    out.columns = pd.Index([_text(c) for c in df.columns], dtype=object, name=df.columns.name)
    return out


def _shown(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """``df`` formatted, only its head and tail past ``display.max_rows`` (formatting is per
    cell, slow on a long frame), and a note saying so."""
    limit = pd.get_option("display.max_rows")
    if limit is None or len(df) <= limit:
        return format_frame(df), ""
    half = max(1, (pd.get_option("display.min_rows") or limit) // 2)
    note = f"first and last {half} of {len(df)} rows"
    return format_frame(pd.concat([df.iloc[:half], df.iloc[-half:]])), note


def use_study_display() -> None:
    """Show every DataFrame in IPython (HTML and plain text) through ``format_frame``, and set
    ``pd.options.display`` (4 decimals) for what it does not cover, such as Series."""
    pd.set_option("display.precision", 4)
    pd.set_option("display.max_columns", 50)
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python: nothing to register with
        return
    if (shell := get_ipython()) is None:
        return

    def html(df: pd.DataFrame) -> str:
        shown, note = _shown(df)
        return shown.to_html(max_cols=50) + (f"<p>{note}</p>" if note else "")

    def plain(df: pd.DataFrame, printer, cycle: bool) -> None:
        shown, note = _shown(df)
        printer.text(shown.to_string() + (f"\n[{note}]" if note else ""))

    shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, html)
    shell.display_formatter.formatters["text/plain"].for_type(pd.DataFrame, plain)


def metric_bars(df: pd.DataFrame, x: str, y: str, hue: str, title: str,
                order: Sequence[str] | None = None, errorbar=None, ax=None) -> plt.Axes:
    """Grouped bar chart of ``y`` by ``x`` and ``hue`` (error bars from repeated rows, their
    bootstrap seeded: a rerun draws the same figure)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    sns.barplot(data=df, x=x, y=y, hue=hue, order=order, errorbar=errorbar, seed=0, ax=ax)
    ax.set(title=title, ylim=(0, 1))
    # outside the axes: with scores near 1 (Persian, SQuAD dev) a legend inside covers bars
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return ax


def row_bars(frame: pd.DataFrame, metric: str, order: Sequence[str], title: str,
             xlabel: str | None = None,
             references: dict[str, float] | None = None) -> plt.Figure:
    """One bar per study row (mean over seeds, 95% CI) with each seed as a dot, and a
    vertical line per ``references`` entry (e.g. BM25); ``frame`` is one domain of
    ``results.results_frame`` (columns ``row`` and ``metric``)."""
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(order) + 1.2))
    sns.barplot(data=frame, y="row", x=metric, order=order, errorbar=("ci", 95), seed=0, ax=ax,
                color="steelblue")
    sns.stripplot(data=frame, y="row", x=metric, order=order, color="black", size=4, ax=ax)
    values = list(frame[metric]) + list((references or {}).values())
    ax.set_xlim(max(0, min(values) - 0.05), min(1, max(values) + 0.03))
    for (name, value), colour in zip((references or {}).items(), ("tab:red", "tab:orange",
                                                                   "tab:green"), strict=False):
        ax.axvline(value, color=colour, ls="--", lw=1.2, label=f"{name} ({value:.3f})")
    if references:
        ax.legend(fontsize="small", loc="lower right")
    ax.set(xlabel=xlabel or metric, ylabel="", title=title)
    return fig
