"""The first cell of every chapter: data present, results and figures where the parameters
say, and a card saying how long the chapter takes.

``begin(number, profile, figures_dir, results_dir)`` is what a chapter calls after its
parameters cell, under ``make study`` (papermill), ``make lab`` or by hand. It builds the
datasets the chapter reads when they are missing (``python -m clp_utils.catalog build``,
offline) instead of failing on a bare ``FileNotFoundError``; sends trained runs and caches to
``results_dir`` (None: ``results/``) and figures to ``figures_dir`` (None: the profile's
folder, so a smoke run never overwrites the committed cpu results); and prints the card: the
chapter's time in the run committed in that folder and its machine, else in the last run here.
What a chapter trains is announced where it starts (``study.run_study``).
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

from clp_utils.base import paths
from clp_utils.base.paths import DATA_DIR, REPO_ROOT
from clp_utils.catalog import main as catalog
from clp_utils.plots import use_study_display
from clp_utils.profiles import get_profile

#: The datasets each chapter reads (the multilingual chapter also the SQuADShifts ones it
#: compares with). Presence of one file per set is checked; 02 reads none.
NEEDS = {"00": ("squadshifts",), "01": ("squadshifts",), "02": (),
         "03": ("squadshifts",), "04": ("squadshifts",), "05": ("squadshifts",),
         "06": ("squadshifts", "hindi", "persian")}
BUILT = {"squadshifts": DATA_DIR / "squadshifts" / "reddit" / "corpus.jsonl",
         "hindi": DATA_DIR / "hindi" / "corpus.jsonl",
         "persian": DATA_DIR / "persian" / "corpus.jsonl"}


@dataclass(frozen=True)
class ChapterRun:
    """What ``begin`` settled for this run of a chapter."""

    number: str
    profile: str
    figures: Path
    card: str


def data_missing(number: str) -> list[str]:
    """The datasets chapter ``number`` needs that are not built."""
    return [name for name in NEEDS.get(number, tuple(BUILT)) if not BUILT[name].exists()]


def ensure_data(number: str, build: bool = True) -> None:
    """Build the data a chapter needs if it is missing, saying so in one line."""
    missing = data_missing(number)
    if not missing:
        return
    line = (f"data not built ({', '.join(missing)} under {DATA_DIR}): the command is "
            "`make data` (python -m clp_utils.catalog build)")
    if not build:
        raise SystemExit(line)
    print(line + "; building it now from data/sources/ (offline)", flush=True)
    catalog(["build"])


def _minutes(timings: dict, number: str) -> float | None:
    return next((sec / 60 for name, sec in timings.items() if name.startswith(number + "_")),
                None)


def timing_card(number: str, profile: str, folder: Path | str | None = None) -> str:
    """How long the chapter takes: the run committed in ``folder`` (default: the profile's)
    and the machine it ran on (what a published chapter can say to any reader), else the last
    run here (``results/notebooks/<profile>``, a profile with no committed figures)."""
    record = Path(folder or paths.figures_dir(profile)) / "run.json"
    run = json.loads(record.read_text()) if record.exists() else {}
    if (minutes := _minutes(run.get("timings", {}), number)) is not None:
        machine = run.get("machine", {}).get("describe", "another machine")
        return (f"the committed run took {minutes:.1f} min ({machine}); training runs "
                "already finished here are read back, not retrained")
    here = paths.results_dir() / "notebooks" / profile / "timings.json"
    if here.exists() and (minutes := _minutes(json.loads(here.read_text()), number)) is not None:
        return f"the last run on this machine took {minutes:.1f} min"
    return "no timing recorded for this profile yet"


def card(number: str, profile: str, folder: Path) -> str:
    """The line a chapter starts with: where its figures go (``folder``, repository-relative
    where it can be: the book shows this line, and a reader's clone lives elsewhere than the
    machine's that ran it) and ``timing_card``."""
    shown = folder.relative_to(REPO_ROOT) if folder.is_relative_to(REPO_ROOT) else folder
    return (f"chapter {number}, profile {profile!r}: figures and tables go to {shown}/; "
            + timing_card(number, profile, folder) + ".")


def begin(number: str, profile: str, figures_dir: Path | str | None = None,
          results_dir: Path | str | None = None, build_data: bool = True) -> ChapterRun:
    """Prepare a chapter run (see the module docstring) and print its card."""
    get_profile(profile)  # an unknown profile fails here, naming the known ones
    folder = paths.figures_dir(profile, figures_dir)
    # the kernel is this process's edge: its per-user cache and a forced precision come from
    # the environment the pipeline or JupyterLab started it in
    edge = paths.from_environment()
    paths.configure(results=results_dir, figures=folder, cache=edge["cache"], bf16=edge["bf16"])
    ensure_data(number, build_data)
    use_study_display()  # every table this kernel shows: 4 decimals, p 3, "—" for absent
    print(text := card(number, profile, folder), flush=True)
    return ChapterRun(number, profile, folder, text)


def say(*parts: object, width: int = 100) -> None:
    """Print generated sentences wrapped at ``width`` columns (JupyterLab and the book
    break long output lines mid-word); a line starting "- " keeps its bullet's indent."""
    text = " ".join(str(p) for p in parts)
    for line in text.split("\n"):
        indent = "  " if line.startswith("- ") else ""
        print(textwrap.fill(line, width, subsequent_indent=indent, break_long_words=False,
                            break_on_hyphens=False) if line.strip() else line)
