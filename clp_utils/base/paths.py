"""Where things live: the repository's folders, the results root, the figures folder, the
user cache; and the process's settings that come from its environment.

Every path here is absolute, so notebooks work from the repository root (papermill) or
``notebooks/`` (JupyterLab). The results root, figures folder, cache and bf16 override are
settings of the process, set at its edge by ``configure`` (a chapter's ``begin``, or a
command-line entry point with ``from_environment()``, the one reader of the environment).
A results root or figures folder elsewhere (the tests, ``make study-avx2``) never
overwrites the study's committed figures or reuses its trained runs.
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
#: The profiles with a figures folder: ``figures/`` for cpu (only its own ``make study`` writes
#: there), ``figures/<profile>/`` for the others (smoke and quick are never committed).
PROFILES = ("smoke", "quick", "cpu", "extras", "full")
#: The committed extras' tables (``make study-extras``), which the cpu chapters read when present.
EXTRAS_ROOT = FIGURES_ROOT / "extras"
#: The user cache when none is configured: shared by every process and checkout.
CACHE_DIR = Path.home() / ".cache" / "clp-study"
# what `configure` set (None: the defaults above; bf16 None: no override)
_SETTINGS: dict[str, Path | str | None] = dict.fromkeys(("results", "figures", "cache", "bf16"))


def configure(results: Path | str | None = None, figures: Path | str | None = None,
              cache: Path | str | None = None, bf16: str | None = None) -> None:
    """Send this process's results to ``results``, its figures and tables to ``figures`` and
    its cached downloads and timings to ``cache`` (None: ``results/``, ``figures/``,
    ``CACHE_DIR``); ``bf16`` (``"0"``/``"1"``, None: none) overrides every ``"auto"`` precision
    decision."""
    _SETTINGS.update(results=Path(results) if results else None,
                     figures=Path(figures) if figures else None,
                     cache=Path(cache) if cache else None, bf16=bf16 or None)


def from_environment() -> dict[str, str | None]:
    """``configure``'s arguments from ``$CLP_RESULTS_DIR``, ``$CLP_FIGURES_DIR``,
    ``$CLP_CACHE`` (else ``$XDG_CACHE_HOME/clp-study``) and ``$CLP_BF16`` (None where unset)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return {"results": os.environ.get("CLP_RESULTS_DIR") or None,
            "figures": os.environ.get("CLP_FIGURES_DIR") or None,
            "cache": os.environ.get("CLP_CACHE") or (xdg and os.path.join(xdg, "clp-study")),
            "bf16": os.environ.get("CLP_BF16") or None}


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
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {sorted(PROFILES)}")
    return FIGURES_ROOT if profile == "cpu" else FIGURES_ROOT / profile


def cache_dir() -> Path:
    """The user cache for downloads, converted models and machine timings (``configure``;
    default ``CACHE_DIR``), created on first use."""
    path = _SETTINGS["cache"] or CACHE_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def bf16_override() -> str | None:
    """The configured override of every ``"auto"`` precision decision (``$CLP_BF16`` at the
    command line), or None."""
    return _SETTINGS["bf16"]
