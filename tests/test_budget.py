"""A profile's design is fixed on every machine; the estimate of its runs only informs."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import pytest

from clp_utils import costs as K
from clp_utils.base import paths
from clp_utils.base.paths import REPO_ROOT, figures_dir
from clp_utils.profiles import NAMES, get_profile
from clp_utils.study import study_configs


def trained(study) -> dict:
    """``{(row, split, seed): config}`` of a study's trained cells."""
    return {(c.row, c.split, c.seed): c.config for c in study_configs(study) if c.config}


def slow_rates(configs: list, factor: float = 1.0) -> K.Rates:
    """Rates for ``configs`` as a machine ``factor`` times slower than 1 s per step reads."""
    steps = {K.step_shape(c): 1.0 * factor for c in configs}
    return K.Rates(steps, 50.0 / factor, 500.0 / factor, "float32")


def test_the_cpu_profile_runs_two_seeds_however_slow_the_machine(monkeypatch):
    """Only the estimate moves with the machine: a machine 100x slower says it takes 100x
    longer, and the profile, its seeds and every run's config stay the same."""
    need_data()
    before = get_profile("cpu")
    configs = list(trained(before.study).values())
    monkeypatch.setattr(K, "machine_rates", lambda cs, use_cache=True: slow_rates(cs))
    fast = K.estimate_cells(configs)
    monkeypatch.setattr(K, "machine_rates", lambda cs, use_cache=True: slow_rates(cs, 100.0))
    slow = K.estimate_cells(configs)
    assert slow.seconds == pytest.approx(100 * fast.seconds) and slow.steps == fast.steps
    after = get_profile("cpu")
    assert after.study.seeds == (0, 1) and after.track.study.seeds == (0, 1)
    assert trained(after.study) == trained(before.study)
    assert trained(after.track.study) == trained(before.track.study)
    from clp_utils.machinery import pipeline

    assert pipeline.declared_seeds("cpu") == {"seeds": 2,
                                              "reason": "declared by the cpu profile: [0, 1]"}


def test_quick_is_the_cpu_profile_with_one_seed_and_its_own_figures():
    cpu, quick = get_profile("cpu"), get_profile("quick")
    assert "quick" in NAMES and quick.name == "quick"
    assert quick.study.seeds == (0,) and quick.track.study.seeds == (0,)
    # the same runs as the cpu profile's seed 0, so they are trained once for both
    assert trained(quick.study) == {k: c for k, c in trained(cpu.study).items() if k[2] == 0}
    assert trained(quick.track.study) == {
        k: c for k, c in trained(cpu.track.study).items() if k[2] == 0}
    assert replace(quick, name="cpu", study=cpu.study, track=cpu.track) == cpu
    folder = figures_dir("quick")
    assert folder == REPO_ROOT / "figures" / "quick" and folder != figures_dir("cpu")
    ignored = subprocess.run(["git", "check-ignore", "-q", "figures/quick/04_table2.md"],
                             cwd=REPO_ROOT)
    assert ignored.returncode == 0, "figures/quick/ must be git-ignored like figures/smoke/"


def test_the_extras_profile_runs_every_row_it_declares():
    from clp_utils.profiles import EXTRAS_PRIORITY, SCALE_CENTRAL, SCALE_ROWS

    study = get_profile("extras").study
    assert set(EXTRAS_PRIORITY) <= set(study.rows)
    seeds = {row: {k[2] for k in trained(study) if k[0] == row} for row in EXTRAS_PRIORITY}
    # the scale check's central pair (ANCE, ANCE + CLP) runs two seeds, its third row one
    single = set(SCALE_ROWS) - set(SCALE_CENTRAL)
    assert single and set(SCALE_CENTRAL) < set(SCALE_ROWS)
    assert all(seeds[r] == ({0} if r in single else {0, 1}) for r in EXTRAS_PRIORITY), seeds


def test_a_rows_settings_are_its_value_not_its_name(monkeypatch):
    """Renamed, the lambda-0.5 control trains the same config under its new label: nothing
    is parsed from the name."""
    from clp_utils import profiles as P

    base = get_profile("smoke").study.base
    named = P.row_config(P.CLP_LAMBDA_05, base, "reddit", 1)
    monkeypatch.setitem(P.ROWS, "CLP, larger lambda", P.ROWS[P.CLP_LAMBDA_05])
    renamed = P.row_config("CLP, larger lambda", base, "reddit", 1)
    assert named.lam == 0.5 and renamed == replace(named, label="reddit-CLP, larger lambda")
    with pytest.raises(ValueError, match="unknown study row"):
        P.row_config("ANCE + CLP, lambda=0.7", base, "reddit", 0)


@pytest.mark.parametrize("profile", ["cpu", "quick", "smoke"])
def test_a_training_chapter_states_its_time_here_and_the_smaller_profile(monkeypatch, profile,
                                                                          capsys):
    """What ``run_study`` prints before it trains (and the multilingual track's, chapter 06):
    the runs, their estimated time here and, on the cpu profile only, how to run less."""
    from clp_utils import multilingual, study

    for part in (get_profile(profile).study, get_profile(profile).track.study):
        missing = [c for c in study_configs(part) if c.config is not None][:3]
        monkeypatch.setattr(study, "missing_cells", lambda p, rows=None, m=missing: m)
        monkeypatch.setattr(study, "study_configs", lambda p: [])  # stop before training
        monkeypatch.setattr(study, "estimate_cells",
                            lambda configs: K.Estimate(len(configs) * 600.0, 90, "bf16 on CPU"))
        if part is get_profile(profile).study:
            study.run_study(profile, progress=False)
        else:
            multilingual.run_track(profile, progress=False)
        line = capsys.readouterr().out
        assert line.startswith(f"About to train {len(missing)} run(s)")
        assert (f"estimated {10 * len(missing)} min on this machine" in line
                and "bf16 on CPU" in line)
        hint = "`PROFILE=quick make study` or profile='quick' in the parameters cell: one seed, "
        # the smaller profile is named where one exists, never chosen for the reader
        assert (hint in line) == (profile == "cpu")
        assert line.strip().endswith("no seed-level verdicts.") == (profile == "cpu")


def test_estimate_is_steps_at_their_shape_plus_encoding():
    rates = K.Rates({"a": 2.0, "b": 0.5}, passages_per_second=10.0, queries_per_second=100.0,
                    precision="float32")
    costs = [K.RunCost("a", 80, 2533, 3000), K.RunCost("b", 20, 100, 50),
             K.RunCost("a", 0, 10, 0)]
    by_hand = (80 * 2.0 + 253.3 + 30.0) + (20 * 0.5 + 10.0 + 0.5) + 1.0
    assert K.estimate_seconds(costs, rates) == pytest.approx(by_hand)


def test_machine_rates_are_measured_once_per_machine(monkeypatch, tmp_path):
    """A chapter states its cost from rates remembered per machine: the second call for the
    same configs measures nothing."""
    need_data()
    monkeypatch.setitem(paths._SETTINGS, "cache", tmp_path)
    timed = []
    monkeypatch.setattr(K, "time_step", lambda cfg: timed.append(K.step_shape(cfg)) or 1.5)
    monkeypatch.setattr(K, "time_encoding", lambda cfg: (40.0, 400.0, "float32 on CPU"))
    configs = list(trained(get_profile("smoke").study).values())[:3]
    first = K.machine_rates(configs)
    shapes = len({K.step_shape(c) for c in configs})
    assert len(timed) == shapes
    assert K.machine_rates(configs) == first and len(timed) == shapes
    est = K.estimate_cells(configs)
    assert est.steps == sum(K.config_cost(c).steps for c in configs) and est.seconds > 0


def test_the_run_record_names_the_seeds_the_profile_declares():
    from clp_utils.machinery import pipeline

    for profile, per_row in (("quick", "1 seed per row"), ("cpu", "2 seeds per row")):
        machine = {"describe": "float32 on CPU", "seeds": pipeline.declared_seeds(profile)}
        line = pipeline.timing_line({"03.ipynb": 60.0}, machine)
        assert line.endswith(f"(float32 on CPU, {per_row}).")


def need_data() -> None:
    if not (REPO_ROOT / "data" / "squadshifts" / "reddit" / "corpus.jsonl").exists():
        pytest.skip("data not built (make data)")
