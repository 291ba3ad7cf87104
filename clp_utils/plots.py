"""Figures and tables the notebooks share: one style, saved where the profile says.

Every figure goes to this process's figures folder as PNG; every table as CSV plus a markdown
copy that the README's generated results section includes. The folder is the one
``clp_utils.machinery.chapter.begin`` configured for the chapter's profile
(``paths.figures_dir``): a smoke run in JupyterLab never overwrites the committed cpu results.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from clp_utils.base.io import atomic_write
from clp_utils.base.paths import figures_dir

sns.set_theme(context="notebook", style="whitegrid")


def int_format(df: pd.DataFrame, floatfmt: str = ".3f", index: str = "") -> tuple[str, ...]:
    """One number format per column of ``df.to_markdown``: ``index`` for the index, then
    integers as integers (tabulate would print integer counts with the float format,
    "2.000") and the other columns with ``floatfmt``."""
    return (index,) + tuple(".0f" if pd.api.types.is_integer_dtype(t) else floatfmt
                            for t in df.dtypes)


def save_figure(fig: plt.Figure, name: str, folder: Path | None = None) -> None:
    """Save ``fig`` as ``<folder>/<name>.png`` (150 dpi, tight).

    Returns nothing on purpose: a chapter cell that ends with this call would otherwise
    print the file's path under the figure (in the notebook and in the book).
    """
    folder = Path(folder or figures_dir())
    with atomic_write(folder / f"{name}.png", "wb") as fh:
        fig.savefig(fh, format="png", dpi=150, bbox_inches="tight")


def save_table(df: pd.DataFrame, name: str, folder: Path | None = None, floatfmt: str = ".3f",
               caption: str | None = None) -> tuple[Path, Path]:
    """Save ``df`` as ``<name>.csv`` and ``<name>.md`` (a markdown table, optional caption)."""
    folder = Path(folder or figures_dir())
    csv_path, md_path = folder / f"{name}.csv", folder / f"{name}.md"
    with atomic_write(csv_path) as fh:
        df.to_csv(fh, index=True)
    md = df.to_markdown(floatfmt=int_format(df, floatfmt, index=floatfmt))
    with atomic_write(md_path) as fh:
        fh.write((f"{caption}\n\n" if caption else "") + md + "\n")
    return csv_path, md_path


def metric_bars(df: pd.DataFrame, x: str, y: str, hue: str, title: str,
                order: Sequence[str] | None = None, errorbar=None, ax=None) -> plt.Axes:
    """Grouped bar chart of ``y`` by ``x`` and ``hue`` (with error bars from repeated rows).

    Bootstrapped intervals use a fixed seed, so a rerun draws the same figure.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    sns.barplot(data=df, x=x, y=y, hue=hue, order=order, errorbar=errorbar, seed=0, ax=ax)
    ax.set_title(title)
    ax.set_ylim(0, 1)
    # outside the axes: with scores near 1 (Persian, SQuAD dev) a legend inside covers bars
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return ax


def row_bars(frame: pd.DataFrame, metric: str, order: Sequence[str], title: str,
             xlabel: str | None = None,
             references: dict[str, float] | None = None) -> plt.Figure:
    """One bar per study row (mean over seeds, 95% CI) with each seed as a dot, and a
    vertical line per ``references`` entry (e.g. BM25, the best hybrid).

    ``frame`` is ``results.results_frame`` restricted to one domain (columns ``row`` and
    ``metric``). Chapters 04 and 06 draw their Table 2 with it.
    """
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
    ax.set_xlabel(xlabel or metric)
    ax.set_ylabel("")
    ax.set_title(title)
    return fig
