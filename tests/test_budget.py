"""Seeds sized to the machine: the setting, the estimate, the plan, the pipeline's pin."""

from __future__ import annotations

import os

import pytest

from clp_utils import costs as K
from clp_utils.catalog import load_named
from clp_utils.machinery import budget as B
from clp_utils.profiles import MAX_SEEDS, SEEDS_ENV, get_profile, seeds_setting
from clp_utils.study import study_configs


@pytest.fixture
def no_seeds_env():
    """$CLP_SEEDS unset during the test and as it was after it (the pipeline sets it in
    os.environ itself, for the kernels, so monkeypatch alone would not undo it)."""
    old = os.environ.pop(SEEDS_ENV, None)
    yield
    os.environ.pop(SEEDS_ENV, None)
    if old is not None:
        os.environ[SEEDS_ENV] = old


def test_seeds_setting_reads_the_environment_and_names_it_on_bad_values(no_seeds_env):
    assert seeds_setting() == MAX_SEEDS
    os.environ[SEEDS_ENV] = "1"
    assert seeds_setting() == 1
    for bad in ("two", "0", "11", "-1", "1.5"):
        os.environ[SEEDS_ENV] = bad
        with pytest.raises(ValueError, match="CLP_SEEDS"):
            seeds_setting()


def test_cpu_profile_runs_the_pinned_seeds_and_nothing_else_changes(no_seeds_env):
    two = get_profile("cpu")
    os.environ[SEEDS_ENV] = "1"
    one = get_profile("cpu")
    assert two.study.seeds == (0, 1) and one.study.seeds == (0,)
    assert two.track.study.seeds == (0, 1) and one.track.study.seeds == (0,)
    # the recipe of every run is the same: one seed is the two-seed study's seed 0
    assert one.study.base == two.study.base and one.study.rows == two.study.rows
    runs_one = [(c.row, c.seed, c.config) for c in study_configs(one.study) if c.config]
    runs_two = {(c.row, c.seed): c.config for c in study_configs(two.study) if c.config}
    assert len(runs_two) == 2 * len(runs_one)
    assert all(runs_two[(r, s)] == c for r, s, c in runs_one)
    # the smoke and full profiles do not read it
    assert get_profile("smoke").study.seeds == (0,)
    assert get_profile("full").study.seeds == (0, 1, 2)


def test_estimate_is_steps_at_their_shape_plus_encoding():
    rates = K.Rates({"a": 2.0, "b": 0.5}, passages_per_second=10.0, queries_per_second=100.0,
                    precision="float32")
    costs = [K.RunCost("a", 80, 2533, 3000), K.RunCost("b", 20, 100, 50),
             K.RunCost("a", 0, 10, 0)]
    by_hand = (80 * 2.0 + 253.3 + 30.0) + (20 * 0.5 + 10.0 + 0.5) + 1.0
    assert K.estimate_seconds(costs, rates) == pytest.approx(by_hand)


def test_study_costs_count_every_run_its_steps_and_what_it_scores(no_seeds_env):
    profile = get_profile("cpu").study
    trained = [c.config for c in study_configs(profile) if c.config is not None]
    for seeds in (1, 2):
        costs = B.study_costs(profile, seeds)
        assert len(costs) == seeds * len(trained) // 2 + 1  # + the zero-shot evaluation
        zero_shot, runs = costs[0], costs[1:]
        assert zero_shot.steps == 0
        reddit = load_named("reddit")
        passages = reddit.counts()["passages"] + profile.base.ood_passages
        assert {r.passages for r in runs} == {passages}
        assert zero_shot.passages > passages  # plus the training passages mined over
        steps = sorted({r.steps for r in runs})
        recipe_steps = profile.base.train_queries // profile.base.batch_size
        assert steps == [profile.paper_queries // 4, recipe_steps]  # paper recipe: 4 per step


def test_plan_keeps_the_most_seeds_that_fit_and_says_why(no_seeds_env):
    profile = get_profile("cpu").study
    shapes = {K.step_shape(c) for c in B.study_run_configs(profile)}
    rates = K.Rates({s: 1.0 for s in shapes}, 50.0, 500.0, "float32")
    one = K.estimate_seconds(B.study_costs(profile, 1), rates)
    two = K.estimate_seconds(B.study_costs(profile, 2), rates)
    assert one < two < 2 * one  # the zero-shot evaluation is paid once
    assert B.plan_seeds("cpu", budget_seconds=two, rates=rates, spread=1.0).seeds == 2
    plan = B.plan_seeds("cpu", budget_seconds=(one + two) / 2, rates=rates, spread=1.0)
    assert plan.seeds == 1 and "over the" in plan.reason
    assert plan.estimates == pytest.approx({1: one, 2: two})
    short = B.plan_seeds("cpu", budget_seconds=one / 2, rates=rates, spread=1.0)
    assert short.seeds == 1 and "even that" in short.reason
    # the estimate's spread: two seeds estimated 1.3x over the budget still run
    assert B.plan_seeds("cpu", budget_seconds=two / 1.3, rates=rates).seeds == 2
    assert B.plan_seeds("cpu", budget_seconds=two / 1.5, rates=rates).seeds == 1
    record = short.record()
    assert record["seeds"] == 1 and set(record["estimates"]) == {"1", "2"}


def test_measured_rates_are_a_real_step_and_real_encoding(no_seeds_env):
    configs = B.study_run_configs(get_profile("smoke").study)
    picked = [next(c for c in configs if c.loss == "infonce" and c.policy == "full"),
              next(c for c in configs if c.policy == "moe")]
    rates = K.measure_rates(picked)
    assert set(rates.step_seconds) == {K.step_shape(c) for c in picked}
    assert all(0 < s < 60 for s in rates.step_seconds.values())
    assert rates.passages_per_second > 0 and rates.queries_per_second > 0
    assert rates.precision.startswith(("bf16", "float32"))


def test_machine_rates_are_measured_once_per_machine(monkeypatch, tmp_path):
    """A chapter states its cost from rates remembered per machine: the second call for the
    same configs measures nothing."""
    monkeypatch.setenv("CLP_CACHE", str(tmp_path))
    timed = []
    monkeypatch.setattr(K, "time_step", lambda cfg: timed.append(K.step_shape(cfg)) or 1.5)
    monkeypatch.setattr(K, "time_encoding", lambda cfg: (40.0, 400.0, "float32 on CPU"))
    configs = B.study_run_configs(get_profile("smoke").study)[:3]
    first = K.machine_rates(configs)
    assert len(timed) == len({K.step_shape(c) for c in configs})
    second = K.machine_rates(configs)
    assert second == first and len(timed) == len({K.step_shape(c) for c in configs})
    K.machine_rates(configs, refresh=True)  # make study: measured again, remembered anew
    assert len(timed) == 2 * len({K.step_shape(c) for c in configs})
    est = K.estimate_cells(configs)
    assert est.steps == sum(K.config_cost(c).steps for c in configs) and est.seconds > 0


def test_pipeline_pins_the_seeds_for_the_chapters(monkeypatch, no_seeds_env):
    from clp_utils.machinery import pipeline

    calls = []

    def fake_plan(name, refresh=False):
        calls.append(name)
        assert refresh  # make study measures afresh; lab and chapters reuse what it measured
        return B.SeedPlan(1, {1: 60.0, 2: 120.0}, 90.0, K.Rates({}, 1.0, 1.0, "float32"),
                          "1 seed(s): 2 would take about 2 min")

    monkeypatch.setattr(pipeline, "plan_seeds", fake_plan)
    assert pipeline.pin_seeds("smoke") is None and SEEDS_ENV not in os.environ
    decided = pipeline.pin_seeds("cpu")
    assert calls == ["cpu"] and decided["seeds"] == 1 and seeds_setting() == 1
    assert get_profile("cpu").study.seeds == (0,)
    # a --only rerun reads the last run's seeds instead of measuring again
    os.environ.pop(SEEDS_ENV)
    again = pipeline.pin_seeds("cpu", {"machine": {"seeds": {"seeds": 2}}})
    assert calls == ["cpu"] and again["seeds"] == 2 and seeds_setting() == 2
    # the user's own setting wins, and nothing is measured
    os.environ[SEEDS_ENV] = "1"
    assert pipeline.pin_seeds("cpu")["reason"] == f"set by ${SEEDS_ENV}"
    assert calls == ["cpu"]
    line = pipeline.timing_line({"03.ipynb": 60.0}, {"describe": "float32 on CPU",
                                                      "seeds": decided})
    assert line.endswith("(float32 on CPU, 1 seed per row).")


def test_the_readme_states_the_budget_the_code_uses():
    from clp_utils.base.paths import REPO_ROOT

    readme = " ".join((REPO_ROOT / "README.md").read_text(encoding="utf-8").split())
    assert (f"fit {B.RUNS_BUDGET_S // 60} minutes (allowing {B.ESTIMATE_SPREAD:g}x for the "
            "estimate's own spread") in readme


def test_extras_keep_the_scale_check_and_the_rate_control_first(monkeypatch, no_seeds_env):
    """When the extras do not fit their time target here, the lowest-priority rows go first
    and are named; the scale check and the learning-rate control always stay."""
    from clp_utils import profiles

    monkeypatch.delenv(profiles.EXTRAS_ENV, raising=False)
    study = get_profile("extras").study
    # after `make study`: the cpu rows the controls are compared with are trained already
    partners = {c.config for c in B.cells(study)
                if c.config is not None and c.row not in profiles.EXTRAS_PRIORITY}
    monkeypatch.setattr(B, "is_finished", lambda config: config in partners)
    shapes = {K.step_shape(c.config) for c in B.cells(study) if c.config is not None}
    rates = K.Rates({s: 1.0 for s in shapes}, 50.0, 500.0, "bf16")
    everything = B.plan_extras(budget_seconds=10 ** 9, rates=rates)
    assert everything.rows == profiles.EXTRAS_PRIORITY and not everything.left_out
    monkeypatch.setattr(B, "machine_rates", lambda configs, refresh=False: (
        [c.train_queries for c in configs], rates)[1])  # what make study-extras calls: configs
    first = profiles.EXTRAS_PRIORITY[:profiles.EXTRAS_PRIORITY.index(
        profiles.INTERMEDIATE_FULL_RATE) + 1]  # the scale check and the rate control
    first_cost = sum(K.estimate_seconds([K.config_cost(c.config) for c in B.cells(study)
                                         if c.row == row], rates) for row in first)
    tight = B.plan_extras(budget_seconds=first_cost + 1.0, spread=1.0, refresh=True)
    assert tight.rows == first
    assert tight.rows == profiles.EXTRAS_PRIORITY[:len(tight.rows)]  # a prefix, in priority
    assert profiles.INTERMEDIATE_FULL_RATE in tight.rows and tight.left_out
    assert all(r in tight.reason for r in tight.left_out)
    # before `make study`, its runs count against the target too, and the plan says so
    monkeypatch.setattr(B, "is_finished", lambda config: False)
    early = B.plan_extras(budget_seconds=everything.estimate_seconds / 2, spread=1.0,
                          refresh=True)
    assert "runs of `make study` not yet trained here" in early.reason
    assert len(early.rows) <= len(tight.rows)
    monkeypatch.setenv(profiles.EXTRAS_ENV, ";".join(tight.rows))
    assert set(get_profile("extras").study.rows) >= set(tight.rows)
    assert not set(get_profile("extras").study.rows) & set(tight.left_out)
    monkeypatch.setenv(profiles.EXTRAS_ENV, "no such row")
    with pytest.raises(ValueError, match="CLP_EXTRAS_ROWS"):
        get_profile("extras")
