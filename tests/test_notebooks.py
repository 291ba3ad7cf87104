"""The whole notebook chain runs headless under papermill in the smoke profile.

Results and figures go to a temporary folder (``CLP_RESULTS_DIR``/``CLP_FIGURES_DIR``), so the
smoke run never touches the study's committed figures or its finished runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pytest

from clp_utils.base.paths import REPO_ROOT

#: What ``study.run_study`` prints before it trains anything (``study.training_plan``).
TRAINING_PLAN = "About to train "


def _committed_state() -> tuple[str, dict[str, str]]:
    """``git status`` of figures/ and the README, and a hash of every file under figures/
    outside figures/smoke/ (the committed results a smoke run must not touch)."""
    import hashlib

    status = subprocess.run(["git", "status", "--porcelain", "--", "figures", "README.md"],
                            cwd=REPO_ROOT, capture_output=True, text=True).stdout
    files = {str(p.relative_to(REPO_ROOT)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted((REPO_ROOT / "figures").rglob("*"))
             if p.is_file() and "smoke" not in p.relative_to(REPO_ROOT / "figures").parts}
    files["README.md"] = hashlib.sha256((REPO_ROOT / "README.md").read_bytes()).hexdigest()
    return status, files


def _printed(nb: nbformat.NotebookNode) -> str:
    """Everything a chapter's code cells printed (streams and text results)."""
    return "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.slow
def test_smoke_chain_runs_and_writes_figures(tmp_path):
    """The whole chain on the smoke profile, as `make study PROFILE=smoke` runs it: figures go
    to figures/smoke (git-ignored), and nothing committed changes. All chapters share one run
    store (``$CLP_RESULTS_DIR``, a fresh folder): chapter 03 trains the study's runs there and
    chapters 04 and 05 read them back without training any again."""
    if not (REPO_ROOT / "data" / "squadshifts" / "manifest.json").exists():
        pytest.skip("data not built (make data)")
    env = {k: v for k, v in os.environ.items() if k != "CLP_FIGURES_DIR"}
    env.update(CLP_RESULTS_DIR=str(tmp_path / "results"), PYTHONUNBUFFERED="1")
    before = _committed_state()
    proc = subprocess.run([sys.executable, "-m", "clp_utils.machinery.pipeline", "--profile",
                           "smoke"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _committed_state() == before, "the smoke run changed the committed figures or README"
    smoke_figures = REPO_ROOT / "figures" / "smoke"
    executed = sorted((tmp_path / "results" / "notebooks" / "smoke").glob("*.ipynb"))
    sources = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [p.name for p in executed] == [p.name for p in sources]
    # one run store for the chain: 03 trains into the fresh store, 04 and 05 only read it
    printed = {p.name[:2]: _printed(nbformat.read(p, as_version=4)) for p in executed}
    assert TRAINING_PLAN in printed["03"], (
        f"chapter 03 printed no {TRAINING_PLAN!r} (study.training_plan): it trained nothing, so "
        "it read runs from another store than the fresh one")
    for later in ("04", "05"):
        assert TRAINING_PLAN not in printed[later], f"chapter {later} retrained chapter 03's runs"
    store = tmp_path / "results" / "runs"
    assert store.is_dir() and any((run / "metrics.json").exists() for run in store.iterdir())
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code"
                  for o in c.outputs if o.output_type == "error"]
        assert not errors, path.name
        # no stray return value under a figure (a reader sees it in the book)
        shown = [o.get("data", {}).get("text/plain", "") for c in nb.cells
                 if c.cell_type == "code" for o in c.outputs if o.output_type == "execute_result"]
        assert not [t for t in shown if "PosixPath(" in t], path.name
        # every exercise ran, and its solution printed a measured outcome or the command
        solutions = [c for c in nb.cells if c.cell_type == "code"
                     and "exercises.folded_solution(" in c.source]
        assert all(any("<details>" in o.get("data", {}).get("text/html", "")
                       and "Solution" in o["data"]["text/html"] for o in c.outputs)
                   for c in solutions), path.name
    figures = {p.name for p in smoke_figures.iterdir()}
    assert "00_baselines.png" in figures and "00_baselines.md" in figures
    # every table the README shows (but the design's, made by `make design`) and a figure of
    # every chapter came out of the chain
    from clp_utils.machinery import pipeline

    made_by_design = {"03_validation"}
    for name, _ in pipeline.README_TABLES + pipeline.EXTRAS_TABLES:
        if name not in made_by_design:
            assert f"{name}.md" in figures and f"{name}.csv" in figures, name
    for nb_path in sources:
        prefix = nb_path.name[:3]
        assert any(f.startswith(prefix) and f.endswith(".png") for f in figures), nb_path.name
    assert "run.json" not in figures  # the smoke profile records no timing line
    # the executed chapters read as a book: every chapter page, every image, every link
    from clp_utils.machinery.book import build_book, check_book

    index = build_book(tmp_path / "results" / "notebooks" / "smoke", tmp_path / "book")
    assert check_book(index.parent) == []


def test_rerunning_some_notebooks_keeps_the_other_timings(tmp_path, monkeypatch):
    from clp_utils.machinery import pipeline

    src = tmp_path / "notebooks"
    src.mkdir()
    for name in ("00_first.ipynb", "01_second.ipynb"):
        params = nbformat.v4.new_code_cell('profile = "cpu"')
        params.metadata["tags"] = ["parameters"]
        nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell("x = profile")])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.write(nb, src / name)
    out = tmp_path / "out"
    out.mkdir()
    (out / "timings.json").write_text('{"00_first.ipynb": 123.0}')
    monkeypatch.setattr(pipeline, "NOTEBOOKS", src)
    timings = pipeline.run_notebooks("smoke", only=["01"], out_dir=out)
    assert timings["00_first.ipynb"] == 123.0 and "01_second.ipynb" in timings
    assert json.loads((out / "timings.json").read_text()) == timings
    assert not (out / "00_first.ipynb").exists()  # not rerun
    line = pipeline.results_markdown(figures=tmp_path, timings=timings)
    assert "`00_first.ipynb` 2.0 min" in line


def test_timing_line_counts_setup_and_parallel_training_and_says_what_ran():
    from clp_utils.machinery import pipeline

    machine = {"describe": "bf16 on CPU capability AVX512 (avx512_bf16, amx)",
               "setup_seconds": 120.0,
               "parallel": {"workers": 4, "seconds": 600.0}}
    line = pipeline.timing_line({"00_a.ipynb": 60.0, "01_b.ipynb": 180.0}, machine)
    assert "setup (venv, data) 2.0 min" in line and "training 4 runs at a time 10.0 min" in line
    assert "total 16 min" in line and "bf16 on CPU capability AVX512" in line
    assert pipeline.timing_line({"00_a.ipynb": 90.0}).endswith("total 2 min.")


def test_readme_shows_the_full_profile_beside_the_cpu_profile_when_its_tables_exist(tmp_path):
    from clp_utils.machinery import pipeline

    (tmp_path / "04_table2.md").write_text("| row | cpu |\n|---|---|\n| ANCE | 0.51 |\n")
    cpu_only = pipeline.results_markdown(figures=tmp_path, recipe_path=tmp_path / "none.json")
    assert "| ANCE | 0.51 |" in cpu_only and "The full profile (GPU)" not in cpu_only
    full = tmp_path / "full"
    full.mkdir()
    (full / "04_table2.md").write_text("| row | full |\n|---|---|\n| ANCE | 0.56 |\n")
    (full / "run.json").write_text(json.dumps({
        "profile": "full", "timings": {"03_training.ipynb": 540.0},
        "machine": {"describe": "bf16 on cuda (NVIDIA H100 80GB HBM3)"}}))
    both = pipeline.results_markdown(figures=tmp_path, recipe_path=tmp_path / "none.json")
    cpu_at, full_at = both.index("| ANCE | 0.51 |"), both.index("| ANCE | 0.56 |")
    assert cpu_at < both.index("### The full profile (GPU)") < full_at
    assert "#### The full profile's Table 2" in both
    assert "total 9 min (bf16 on cuda (NVIDIA H100 80GB HBM3))" in both


def test_readme_shows_the_avx2_run_below_and_ignores_a_moved_figures_folder(tmp_path):
    from clp_utils.machinery import pipeline

    (tmp_path / "04_table2.md").write_text("| row | cpu |\n|---|---|\n| ANCE | 0.51 |\n")
    avx2 = tmp_path / "avx2"
    avx2.mkdir()
    (avx2 / "04_claims.md").write_text("| claim | verdict |\n|---|---|\n| CLP | n.d. |\n")
    (avx2 / "run.json").write_text(json.dumps({
        "profile": "cpu", "timings": {"03_training.ipynb": 1705.0},
        "machine": {"describe": "float32 on CPU capability AVX2 (no native bf16)",
                    "seeds": {"seeds": 1, "reason": "1 seed"}}}))
    text = pipeline.results_markdown(figures=tmp_path, recipe_path=tmp_path / "none.json")
    assert text.index("| ANCE | 0.51 |") < text.index("`make study-avx2`") < text.index(
        "| CLP | n.d. |")
    assert "total 28 min (float32 on CPU capability AVX2 (no native bf16), 1 seed per row)" in text
    # `make study-avx2` moves the figures folder: the README still describes figures/
    code = ("import inspect; from clp_utils.machinery import pipeline; "
            "print(inspect.signature(pipeline.results_markdown).parameters['figures'].default)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "CLP_FIGURES_DIR": str(avx2)}).stdout.strip()
    assert out == str(pipeline.REPO_ROOT / "figures")


def test_a_partial_rerun_keeps_the_whole_runs_times_and_records_its_own_apart(tmp_path):
    """Re-running chapters 03-05 with their runs stored must not make `make study` look
    fast: run.json keeps the whole run's times, the re-run's go under 'reopened'."""
    from clp_utils.machinery import pipeline

    machine = {"describe": "bf16 on CPU capability AVX512 (avx512_bf16)"}
    whole = pipeline.run_record("cpu", {"00_a.ipynb": 60.0, "03_t.ipynb": 1800.0}, machine, {})
    assert whole["timings"]["03_t.ipynb"] == 1800.0 and "reopened" not in whole
    rerun = {"00_a.ipynb": 60.0, "03_t.ipynb": 90.0}  # run_notebooks keeps the others' times
    after = pipeline.run_record("cpu", rerun, machine, whole, only=["03"])
    assert after["timings"] == whole["timings"]
    assert after["reopened"]["timings"] == {"03_t.ipynb": 90.0}
    again = pipeline.run_record("cpu", {**rerun, "04_e.ipynb": 30.0}, machine, after, only=["04"])
    assert again["timings"] == whole["timings"]  # a second partial rerun keeps the first's
    assert again["reopened"]["timings"] == {"03_t.ipynb": 90.0, "04_e.ipynb": 30.0}
    (tmp_path / "run.json").write_text(json.dumps(after))
    text = pipeline.results_markdown(figures=tmp_path, recipe_path=tmp_path / "none.json")
    assert "total 31 min" in text
    assert "re-run afterwards with the stored runs (nothing trains): `03_t.ipynb` 1.5 min" in text


def test_a_claims_table_from_older_statistics_is_named_not_shown(tmp_path):
    """figures/avx2 kept a claims table with the old verdicts ('not resolved ...'): the README
    must not show it beside the two-level verdicts, and says which command remakes it."""
    from clp_utils.machinery import pipeline

    avx2 = tmp_path / "avx2"
    avx2.mkdir()
    (avx2 / "04_table2.md").write_text("| row | cpu |\n|---|---|\n| ANCE | 0.51 |\n")
    (avx2 / "04_claims.md").write_text("| claim | verdict |\n|---|---|\n| x | not resolved |\n")
    (avx2 / "04_claims.csv").write_text("claim,verdict\nx,not resolved at this budget\n")
    text = pipeline.results_markdown(figures=tmp_path, recipe_path=tmp_path / "none.json")
    assert "| ANCE | 0.51 |" in text and "| x | not resolved |" not in text
    assert "earlier version of the statistics" in text and "`make study-avx2` remakes it" in text
    (avx2 / "04_claims.csv").write_text("claim,verdict\nx,equivalent\n")
    assert "| x | not resolved |" in pipeline.results_markdown(
        figures=tmp_path, recipe_path=tmp_path / "none.json")


def test_reopening_times_every_chapter_and_keeps_why_one_stopped(tmp_path, monkeypatch):
    """``--reopen`` runs each chapter on its own parameters into an empty results folder, and
    a chapter that stops for what is not committed (SystemExit) is timed and its reason kept,
    not taken for a failure; any other error still fails."""
    from clp_utils.base import paths
    from clp_utils.machinery import pipeline

    src = tmp_path / "notebooks"
    src.mkdir()
    bodies = {"00_reads.ipynb": "print(results_dir)",
              "05_needs_models.ipynb":
                  "raise SystemExit('About to train 2 runs\\nneeds models: set train = True')"}
    for name, body in bodies.items():
        params = nbformat.v4.new_code_cell("results_dir = None\nfigures_dir = None")
        params.metadata["tags"] = ["parameters"]
        nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(body)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nbformat.write(nb, src / name)
    monkeypatch.setattr(pipeline, "NOTEBOOKS", src)
    monkeypatch.setattr(pipeline, "TIMINGS", tmp_path / "timings")
    monkeypatch.setattr(paths, "_SETTINGS", {**paths._SETTINGS, "results": tmp_path / "res"})
    stale = tmp_path / "res" / "reopen" / "store" / "left_by_an_earlier_reopen"
    stale.parent.mkdir(parents=True)
    stale.write_text("cache")
    timings = pipeline.reopen_chapters()
    assert set(timings) == set(bodies) and not stale.exists()  # a clone's empty folder
    (record,) = (tmp_path / "timings").glob("reopen-*.json")
    stopped = json.loads(record.read_text())["stopped"]
    # the chapter's own reason, its last line
    assert stopped == {"05_needs_models.ipynb": "needs models: set train = True"}
    printed = nbformat.read(tmp_path / "res" / "reopen" / "notebooks" / "00_reads.ipynb", 4)
    assert str(tmp_path / "res" / "reopen" / "store") in _printed(printed)  # an empty store
    (src / "00_reads.ipynb").unlink()
    (src / "05_needs_models.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("1 / 0")],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}})))
    with pytest.raises(Exception, match="ZeroDivisionError"):
        pipeline.reopen_chapters()
