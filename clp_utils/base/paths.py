"""Where things live: the repository's folders, the results root, the figures folder, the
user cache.

Notebooks run with the repository root as working directory under papermill, but with
``notebooks/`` under JupyterLab; every path here is absolute so both work.

The results root and the figures folder can point elsewhere (the tests, ``make study-avx2``)
so that such a run never overwrites the study's committed figures or reuses its trained runs.
They are settings of the process, passed in at its edge: ``configure`` is called by a
chapter's ``begin`` (from its parameters cell) and by the command-line entry points, which
read ``$CLP_RESULTS_DIR`` and ``$CLP_FIGURES_DIR`` through ``from_environment``, the one
place the package reads them.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "data"
#: The committed figures and tables of the cpu profile (``make study``).
FIGURES_ROOT = REPO_ROOT / "figures"
#: The default results root (trained runs, caches, executed chapters); ``results_dir()`` is
#: the one this process uses.
RESULTS_DIR = REPO_ROOT / "results"
#: Where each profile writes its figures under ``figures/``: only the cpu profile's own
#: ``make study`` writes the top folder; smoke and quick are never committed (git ignores them).
PROFILE_FIGURES = {"cpu": "", "quick": "quick", "extras": "extras", "full": "full",
                   "smoke": "smoke"}
#: The committed extras' tables (``make study-extras``), which the cpu chapters read when present.
EXTRAS_ROOT = FIGURES_ROOT / PROFILE_FIGURES["extras"]
# what `configure` set (None: the defaults above)
_SETTINGS: dict[str, Path | None] = {"results": None, "figures": None}


def configure(results: Path | str | None = None, figures: Path | str | None = None) -> None:
    """Send this process's results to ``results`` and its figures and tables to ``figures``
    (None: the repository's ``results/`` and ``figures/``). ``chapter.begin`` calls it with
    the chapter's parameters, a command-line entry point with ``from_environment()``."""
    _SETTINGS.update(results=Path(results) if results else None,
                     figures=Path(figures) if figures else None)


def from_environment() -> dict[str, str | None]:
    """``$CLP_RESULTS_DIR`` and ``$CLP_FIGURES_DIR`` as ``configure``'s arguments (None where
    unset): read by the command-line entry points only (the pipeline, ``make design``)."""
    return {"results": os.environ.get("CLP_RESULTS_DIR") or None,
            "figures": os.environ.get("CLP_FIGURES_DIR") or None}


def results_dir() -> Path:
    """The results root of this process (``configure``; default ``results/``)."""
    return _SETTINGS["results"] or RESULTS_DIR


def figures_dir(profile: str | None = None, override: Path | str | None = None) -> Path:
    """Where figures and tables go, decided here only: ``override`` when given (a chapter's
    ``figures_dir`` parameter, ``$CLP_FIGURES_DIR`` at the command line); else for a
    ``profile``, ``figures/`` for cpu and ``figures/<profile>/`` for every other one, so a
    smoke or extras run never overwrites the cpu results; with neither, the folder this
    process was configured with (``chapter.begin`` sets it), else ``figures/``."""
    if override:
        return Path(override)
    if profile is None:
        return _SETTINGS["figures"] or FIGURES_ROOT
    if profile not in PROFILE_FIGURES:
        raise ValueError(f"unknown profile {profile!r}; known: {sorted(PROFILE_FIGURES)}")
    return FIGURES_ROOT / PROFILE_FIGURES[profile]


def cache_dir() -> Path:
    """The user cache for downloads and converted models, shared by every process and
    checkout (``$CLP_CACHE`` overrides it: a per-user location, not a setting of the study)."""
    root = os.environ.get("CLP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "clp-study"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
