"""Where things live: the repository's folders and the user cache.

Notebooks run with the repository root as working directory under papermill, but with
``notebooks/`` under JupyterLab; every path here is absolute so both work.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "data"
#: The committed figures and tables of the cpu profile (``make study``).
FIGURES_ROOT = REPO_ROOT / "figures"
# $CLP_FIGURES_DIR / $CLP_RESULTS_DIR point these elsewhere (the tests, the AVX2 run) so that
# such a run never overwrites the study's committed figures or reuses its trained runs.
FIGURES_DIR = Path(os.environ.get("CLP_FIGURES_DIR") or FIGURES_ROOT)
RESULTS_DIR = Path(os.environ.get("CLP_RESULTS_DIR") or REPO_ROOT / "results")
#: Where each profile writes its figures under ``figures/``: only the cpu profile's own
#: ``make study`` writes the top folder; smoke is never committed (git ignores it).
PROFILE_FIGURES = {"cpu": "", "extras": "extras", "full": "full", "smoke": "smoke"}
#: The committed extras' tables (``make study-extras``), which the cpu chapters read when present.
EXTRAS_ROOT = FIGURES_ROOT / PROFILE_FIGURES["extras"]


def figures_dir(profile: str) -> Path:
    """Where ``profile``'s figures and tables go: ``$CLP_FIGURES_DIR`` when set (the tests,
    ``make study-avx2``), else ``figures/`` for the cpu profile and ``figures/<profile>/``
    for every other one, so a smoke run or an extras run never overwrites the cpu results."""
    if os.environ.get("CLP_FIGURES_DIR"):
        return Path(os.environ["CLP_FIGURES_DIR"])
    if profile not in PROFILE_FIGURES:
        raise ValueError(f"unknown profile {profile!r}; known: {sorted(PROFILE_FIGURES)}")
    return FIGURES_ROOT / PROFILE_FIGURES[profile]


def cache_dir() -> Path:
    """The user cache for downloads and converted models (``$CLP_CACHE`` overrides it)."""
    root = os.environ.get("CLP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "clp-study"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
