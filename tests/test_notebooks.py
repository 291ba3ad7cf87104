"""The whole notebook chain runs headless under papermill in the smoke profile.

Results and figures go to a temporary folder (``CLP_RESULTS_DIR``/``CLP_FIGURES_DIR``), so the
smoke run never touches the study's committed figures or its finished runs.
"""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest

from clp_utils.paths import REPO_ROOT

pytestmark = pytest.mark.slow


def test_smoke_chain_runs_and_writes_figures(tmp_path):
    if not (REPO_ROOT / "data" / "squadshifts" / "manifest.json").exists():
        pytest.skip("data not built (make data)")
    env = {**os.environ, "CLP_RESULTS_DIR": str(tmp_path / "results"),
           "CLP_FIGURES_DIR": str(tmp_path / "figures"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "clp_utils.pipeline", "--profile", "smoke"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    executed = sorted((tmp_path / "results" / "notebooks" / "smoke").glob("*.ipynb"))
    sources = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [p.name for p in executed] == [p.name for p in sources]
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, path.name
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    assert "00_baselines.png" in figures and "00_baselines.md" in figures
    # the smoke run must not touch the README (only cpu/full regenerate it)
    assert "smoke" not in (REPO_ROOT / "README.md").read_text().split("<!-- results:start -->")[1]
