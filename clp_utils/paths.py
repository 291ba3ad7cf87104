"""Where things live: the repository's folders and the user cache.

Notebooks run with the repository root as working directory under papermill, but with
``notebooks/`` under JupyterLab; every path here is absolute so both work.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
# The smoke profile (and the tests) point these elsewhere so that a quick run never
# overwrites the study's committed figures or reuses its trained runs.
FIGURES_DIR = Path(os.environ.get("CLP_FIGURES_DIR") or REPO_ROOT / "figures")
RESULTS_DIR = Path(os.environ.get("CLP_RESULTS_DIR") or REPO_ROOT / "results")


def cache_dir() -> Path:
    """The user cache for downloads and converted models (``$CLP_CACHE`` overrides it)."""
    root = os.environ.get("CLP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "clp-study"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
