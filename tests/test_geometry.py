"""The mechanism's measurements against independent computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from clp_utils.batching import Example
from clp_utils.train_config import TrainConfig
from clp_utils.training import prepare_model


def batch(n: int = 3) -> list[Example]:
    return [Example(f"who wrote book {i}", f"book {i} was written by author {i}.",
                    [f"book {i + 10} is about rivers."], [[f"what is book {i + 10} about"]], [1.0])
            for i in range(n)]


def test_gradient_shares_match_separate_backward_passes(tiny_model_path):
    from clp_utils.geometry import gradient_shares
    from clp_utils.losses import clp_loss
    from clp_utils.training import embed

    config = TrainConfig(model=tiny_model_path, max_query_len=16, max_passage_len=24, tau=0.05)
    model, _ = prepare_model(config, device="cpu")
    examples = batch()
    shares = gradient_shares(model, examples, [[0, 1, 2]], config, lams=(0.1, 0.5))
    # independently: backward of the weighted total and of the weighted penalty alone
    params = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for lam in (0.1, 0.5):
        grads = []
        for part in ("total", "penalty"):
            model.zero_grad()
            docs = embed(model, [e.pos for e in examples] + [e.negs[0] for e in examples], 24,
                         "passage")
            emb = embed(model, [e.query for e in examples] + [e.neg_qs[0][0] for e in examples], 16)
            out = clp_loss(emb[:3], docs[:3], docs[3:].reshape(3, 1, -1),
                           emb[3:].reshape(3, 1, 1, -1),
                           torch.ones(3, 1), lam=lam, tau=0.05)
            (out.total if part == "total" else lam * out.penalty).backward()
            grads.append(torch.cat([p.grad.flatten() for p in params if p.grad is not None]))
        expected = float(grads[1].norm() / grads[0].norm())
        got = shares.loc[shares["lam"] == lam, "penalty_share"].item()
        assert got == pytest.approx(expected, rel=1e-3)
    # the share grows with lambda, the push/pull ratio falls
    assert shares["penalty_share"].is_monotonic_increasing
    assert shares["push_over_pull"].is_monotonic_decreasing


def test_mnrl_without_hardness_is_our_infonce_and_gist_trains(tiny_model_path):
    """loss="mnrl_hardness" at strength 0 is sentence-transformers' MNRL, which equals our
    InfoNCE; loss="gist" runs GISTEmbedLoss with the zero-shot model as guide."""
    from clp_utils.training import step_loss, study_loss

    torch.manual_seed(0)
    config = TrainConfig(model=tiny_model_path, loss="mnrl_hardness", hardness_strength=0.0,
                         max_query_len=16, max_passage_len=24, tau=0.05, dropout=False)
    model, _ = prepare_model(config, device="cpu")
    model.eval()
    examples = batch(4)
    ours = step_loss(model, examples, TrainConfig(model=tiny_model_path, loss="infonce",
                                                  max_query_len=16, max_passage_len=24,
                                                  tau=0.05), 1, False)
    theirs = step_loss(model, examples, config, 1, False, st_loss=study_loss(model, config))
    assert theirs["loss"].item() == pytest.approx(ours["loss"].item(), abs=1e-6)
    hard = TrainConfig(model=tiny_model_path, loss="mnrl_hardness", hardness_strength=5.0,
                       max_query_len=16, max_passage_len=24, tau=0.05)
    weighted = step_loss(model, examples, hard, 1, False, st_loss=study_loss(model, hard))
    assert weighted["loss"].item() > ours["loss"].item()  # harder negatives weigh more
    from clp_utils.mining import MiningConfig

    gist = TrainConfig(model=tiny_model_path, loss="gist", max_query_len=16, max_passage_len=24,
                       tau=0.05, mining=MiningConfig(num_negatives=1))
    out = step_loss(model, examples, gist, 1, False, st_loss=study_loss(model, gist))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["penalty"].item() == 0.0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with pytest.raises(ValueError, match="one hard negative"):
        TrainConfig(loss="gist")  # the default mining has 4 negatives


class TableModel:
    """Fixed unit vectors per text; anything with ``encode`` serves the evaluation helpers."""

    max_seq_length = 32
    prompts: dict = {}

    def __init__(self, table):
        self.table = table

    def encode(self, texts, **kwargs):
        import numpy as np

        return np.stack([self.table[t] for t in texts]).astype("float32")


@pytest.mark.parametrize("tau", [0.02, 0.05])
def test_push_weights_is_the_softmax_over_own_candidates(tau):
    import numpy as np

    from clp_utils.geometry import push_weights

    def unit(angle):
        return np.array([np.cos(angle), np.sin(angle)])

    table = {"q": unit(0.0), "p": unit(0.3), "n1": unit(0.2), "n2": unit(0.9)}
    record = {"query": "q", "pos": "p", "neg": ["n1", "n2"], "neg_answer_hit": [True, False]}
    empty = {"query": "q", "pos": "p", "neg": [], "neg_answer_hit": []}  # filtered to nothing
    out = push_weights(TableModel(table), [record, empty], taus=(tau,)).loc[tau]
    s = np.array([np.cos(0.3), np.cos(0.2), np.cos(0.9)]) / tau
    pi = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    assert out["loss"] == pytest.approx(-np.log(pi[0]))
    assert out["negative_mass"] == pytest.approx(pi[1] + pi[2])
    assert out["top_negative_share"] == pytest.approx(pi[1] / (pi[1] + pi[2]))
    assert out["false_negative_share"] == pytest.approx(pi[1] / (pi[1] + pi[2]))


def test_spread_separates_a_collapsed_set_from_a_spread_one():
    import numpy as np

    from clp_utils.geometry import spread

    rng = np.random.default_rng(0)
    uniform = rng.normal(size=(500, 64))
    uniform /= np.linalg.norm(uniform, axis=1, keepdims=True)
    collapsed = uniform * 0.1 + np.ones(64)
    collapsed /= np.linalg.norm(collapsed, axis=1, keepdims=True)
    a, b = spread(uniform), spread(collapsed)
    assert abs(a["mean_pair_cosine"]) < 0.02 and b["mean_pair_cosine"] > 0.9
    assert a["uniformity"] < b["uniformity"]
    # uniformity of a point set on the sphere as Wang & Isola define it, on all pairs
    x = uniform[:60]
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)[~np.eye(60, dtype=bool)]
    assert spread(x, pairs=200_000)["uniformity"] == pytest.approx(np.log(np.exp(-2 * d2).mean()),
                                                                   abs=0.05)


# --------------------------------------------------------------------------- the harm

INFONCE, CLP, STRONG, PLACEBO = "ANCE negatives", "ANCE + CLP", "ANCE + CLP, lambda=0.5", \
    "random negatives"
#: nDCG@10 with one relevant passage: 0, or 1 / log2(r + 1) at rank r <= 10.
NDCG_VALUES = np.sort([0.0, *(1 / np.log2(np.arange(2, 12)))])


def planted_frames(effects: dict[str, tuple[float, float]], seeds=(0, 1, 2), n_passages=400,
                   share_own=0.4, drop_placebo=0.4, seed=0) -> dict:
    """``(row, seed) -> harm_frame`` with a planted own-group effect per row: ``(harm,
    intrinsic)`` adds ``harm + intrinsic`` to the own queries' change. The own group starts
    easier than the control (as in the data) and easy queries gain less, so an unadjusted gap
    is biased; the placebo row loses a random share of its passages (its random negatives)."""
    rng = np.random.default_rng(seed)
    passages = [f"p{i}" for i in range(n_passages)]
    own = rng.random(n_passages) < share_own
    base = []
    for p, is_own in zip(passages, own, strict=True):
        probs = np.linspace(1, 3, 11) if is_own else np.linspace(3, 1, 11)
        shared = rng.normal(0, 0.05)  # the passage's questions move together
        for j in range(4):
            zs = rng.choice(NDCG_VALUES, p=probs / probs.sum())
            base.append((f"{p}.{j}", p, "own" if is_own else "control", zs, shared))
    base = pd.DataFrame(base, columns=["qid", "passage", "group", "ndcg_cut_10_zs", "shared"])
    frames = {}
    for row, (harm, intrinsic) in effects.items():
        for s in seeds:
            f = base.copy()
            lift = 0.3 * (1 - f["ndcg_cut_10_zs"])  # easy queries have less to gain
            f["change"] = (lift + f["shared"] + rng.normal(0, 0.05, len(f)) + rng.normal(0, 0.005)
                           + np.where(f["group"] == "own", harm + intrinsic, 0.0))
            if row == PLACEBO:
                f = f[~f["passage"].isin(rng.choice(passages, int(drop_placebo * n_passages),
                                                    replace=False))]
            frames[(row, s)] = f.drop(columns="shared").reset_index(drop=True)
    return frames


def stratified_gap(frame: pd.DataFrame, bounds: np.ndarray) -> float:
    """The own-weighted stratified gap, computed independently with pandas."""
    f = frame.assign(stratum=np.searchsorted(bounds, frame["ndcg_cut_10_zs"]))
    means = f.groupby(["stratum", "group"])["change"].mean().unstack()
    weights = f[f["group"] == "own"].groupby("stratum").size()
    return float(((means["own"] - means["control"]) * weights).sum() / weights.sum())


EFFECTS = {INFONCE: (-0.05, -0.02), CLP: (-0.03, -0.02), STRONG: (-0.01, -0.02),
           PLACEBO: (0.0, -0.02)}


def test_harm_gaps_recover_a_planted_harm_beyond_the_placebo():
    """The own queries carry an intrinsic -0.02 in every run (the placebo's too) and a harm of
    -0.05 under InfoNCE: the gaps read -0.07 and -0.02, InfoNCE minus placebo -0.05, and the
    repair contrasts the planted differences in harm."""
    from clp_utils.geometry import harm_family, harm_gaps, zero_shot_strata

    frames = planted_frames(EFFECTS)
    gaps = harm_gaps(frames, harm_family(INFONCE, CLP, STRONG, PLACEBO), n_boot=1000)
    est = gaps["own minus matched control"]
    assert est[INFONCE] == pytest.approx(-0.07, abs=0.01)
    assert est[PLACEBO] == pytest.approx(-0.02, abs=0.01)
    did = gaps.loc[f"{INFONCE} - {PLACEBO}"]
    assert did["own minus matched control"] == pytest.approx(-0.05, abs=0.01)
    assert did["95% CI low"] < -0.05 < did["95% CI high"] < 0
    assert did["verdict"] == "held"  # the claim is a harm: a negative value supports it
    assert gaps.loc[f"{CLP} - {INFONCE}", "own minus matched control"] == pytest.approx(
        0.02, abs=0.01)
    assert gaps.loc[f"{STRONG} - {CLP}", "own minus matched control"] == pytest.approx(
        0.02, abs=0.01)
    # the adjustment matters: the easier own group gains less whatever happens to it
    assert est[INFONCE] - gaps.loc[INFONCE, "unadjusted"] > 0.03
    # each seed's gap is the stratified gap computed independently
    bounds = zero_shot_strata(frames.values())
    values = [float(v) for v in gaps.loc[INFONCE, "seed values"].split(", ")]
    assert values == pytest.approx([stratified_gap(frames[(INFONCE, s)], bounds)
                                    for s in (0, 1, 2)], abs=1e-4)


def test_strata_are_never_empty():
    from clp_utils.geometry import MIN_STRATUM, zero_shot_strata

    frames = planted_frames(EFFECTS, n_passages=120, share_own=0.15)
    # a group smaller than a stratum's minimum, and a value that only one group reaches
    tiny = pd.DataFrame({"qid": list("abcdefgh"), "passage": list("abcdefgh"),
                         "group": ["own"] * 3 + ["control"] * 5,
                         "ndcg_cut_10_zs": [1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.5, 0.0],
                         "change": 0.0})
    for case in (list(frames.values()), [tiny]):
        bounds = zero_shot_strata(case)
        assert bounds[-1] == np.inf and np.all(np.diff(bounds) > 0)
        for f in case:
            strata = np.searchsorted(bounds, f["ndcg_cut_10_zs"])
            for group in ("own", "control"):
                size = int((f["group"] == group).sum())
                held = np.bincount(strata[f["group"] == group], minlength=len(bounds))
                assert held.min() >= min(MIN_STRATUM, size) > 0
    assert len(zero_shot_strata(frames.values())) > 2  # not one stratum for all
    assert len(zero_shot_strata([tiny])) == 1


def test_holm_family_has_the_declared_members():
    """Without lambda 0.5 (the cpu profile) its rows stay in the table as not run and count
    in the family; the others' Holm p matches a hand-made Holm over seven members."""
    from clp_utils.geometry import NOT_RUN, harm_family, harm_gaps

    family = harm_family(INFONCE, CLP, STRONG, PLACEBO)
    assert [c.label for c in family] == [
        INFONCE, CLP, STRONG, PLACEBO, f"{INFONCE} - {PLACEBO}", f"{CLP} - {INFONCE}",
        f"{STRONG} - {INFONCE}", f"{STRONG} - {CLP}"]
    assert [c.tested for c in family].count(False) == 1  # the placebo's own gap
    frames = {k: f for k, f in planted_frames(EFFECTS).items() if k[0] != STRONG}
    gaps = harm_gaps(frames, family, n_boot=500)
    assert list(gaps.index) == [c.label for c in family]
    absent = [STRONG, f"{STRONG} - {INFONCE}", f"{STRONG} - {CLP}"]
    assert (gaps.loc[absent, "verdict"] == NOT_RUN).all()
    assert gaps.loc[absent, "p Holm"].isna().all()
    assert gaps.loc[PLACEBO, "verdict"] == "descriptive" and np.isnan(gaps.loc[PLACEBO, "p Holm"])
    tested = [INFONCE, CLP, f"{INFONCE} - {PLACEBO}", f"{CLP} - {INFONCE}"]
    p = gaps.loc[tested, "p"].to_numpy()
    order = np.argsort(p)
    expected = np.maximum.accumulate(np.minimum(1, (7 - np.arange(len(p))) * p[order]))
    assert gaps.loc[tested, "p Holm"].to_numpy()[order] == pytest.approx(expected)


def test_one_seed_gives_intervals_but_no_verdict():
    """With one seed the interval holds no seed-to-seed variance (the smoke profile): every
    row is printed, none is read, and none enters Holm's adjustment."""
    from clp_utils.geometry import ONE_SEED, cosine_shifts, harm_family, harm_gaps

    gaps = harm_gaps(planted_frames(EFFECTS, seeds=(0,)), harm_family(INFONCE, CLP, STRONG,
                                                                      PLACEBO), n_boot=300)
    tested = gaps.drop(index=PLACEBO)
    assert (tested["verdict"] == ONE_SEED).all() and tested["p Holm"].isna().all()
    assert (tested["95% CI low"] < tested["own minus matched control"]).all()
    shifts = cosine_shifts(cosine_sims(dict.fromkeys(("q_pos", "q_neg", "neg_own", "q_all"),
                                                     0.02), seeds=(0,)), [("row", "ref")])
    assert (shifts["specific"] == ONE_SEED).all()


def test_harm_frame_groups_by_the_window_and_sets_trained_queries_apart():
    from clp_utils.geometry import HarmGroups, harm_frame

    before = pd.DataFrame({"qid": ["a", "b", "c", "d", "e"],
                           "passage": ["p1", "p2", "p3", "p4", "p1"],
                           "ndcg_cut_10": [0.5, 1.0, 0.0, 0.5, 1.0], "recall_10": 1.0})
    after = before.assign(ndcg_cut_10=[0.2, 1.0, 0.5, 1.0, 1.0])
    groups = HarmGroups(picked=frozenset({"p1"}), window=frozenset({"p1", "p2", "p4"}),
                        trained=frozenset({"e"}), exclude=frozenset({"p4"}))
    frame = harm_frame(before, after, groups).set_index("qid")
    # p3 was never ranked, p4 is excluded, e was trained on
    assert list(frame.index) == ["a", "b"]
    assert list(frame["group"]) == ["own", "control"]
    assert frame.loc["a", "change"] == pytest.approx(-0.3)
    assert list(harm_frame(before, after, groups, trained=True)["qid"]) == ["e"]


class Recorder(TableModel):
    def train(self, mode: bool = True):
        return self


def test_ance_window_is_mining_s_candidate_window():
    """The window holds every negative mining picked, and exactly the passages ranked
    rank_min..rank_max for some query (positives aside), computed here from the vectors."""
    from clp_utils.data import Split
    from clp_utils.geometry import ance_window
    from clp_utils.mining import MiningConfig, mine

    rng = np.random.default_rng(0)
    docs = {f"d{i}": {"title": "", "text": f"passage {i}"} for i in range(12)}
    queries = {f"q{i}": {"text": f"question {i}", "answers": []} for i in range(12)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(12)}
    table = {t: v / np.linalg.norm(v) for t, v in zip(
        [*(d["text"] for d in docs.values()), *(q["text"] for q in queries.values())],
        rng.normal(size=(24, 8)), strict=True)}
    split = Split("train", docs, queries, qrels)
    config = MiningConfig(num_negatives=1, rank_min=2, rank_max=5, answer_filter=False)
    qids = ["q0", "q3", "q7"]
    window = ance_window(Recorder(table), split, qids, config, embedding_cache_dir=None)
    mined = mine(Recorder(table), split, config, query_ids=qids, cache_dir=None,
                 embedding_cache_dir=None, progress=False)
    assert {d for r in mined.records for d in r["neg_ids"]} <= window
    expected = set()
    for q in qids:
        scores = {d: table[docs[d]["text"]] @ table[queries[q]["text"]] for d in docs}
        ranked = sorted(scores, key=scores.get, reverse=True)
        expected |= set(ranked[config.rank_min - 1: config.rank_max]) - set(qrels[q])
    assert window == expected


def test_repair_reading_follows_the_verdict_or_says_it_is_unadjusted():
    from clp_utils.geometry import repair_reading

    def gap(low, high, verdict=None):
        row = {"own minus matched control": (low + high) / 2, "95% CI low": low,
               "95% CI high": high}
        return pd.Series(row if verdict is None else {**row, "verdict": verdict})

    assert repair_reading(gap(0.0017, 0.0134, "held")) == "a measurable repair"
    assert repair_reading(gap(0.0017, 0.0134, "inconclusive")) == "no measurable repair"
    assert repair_reading(gap(-0.02, -0.001, "reversed")) == "more harm than InfoNCE"
    assert repair_reading(gap(0.0017, 0.0134)) == "a measurable repair (unadjusted interval)"
    assert repair_reading(gap(-0.0002, 0.0090)) == "no measurable repair (unadjusted interval)"


def test_what_survives_sorts_every_claim_by_its_verdict():
    from clp_utils.geometry import ONE_SEED, harm_family, harm_gaps, what_survives

    family = harm_family(INFONCE, CLP, STRONG, PLACEBO)
    frames = planted_frames({**EFFECTS, STRONG: (-0.03, -0.02)})  # no repair beyond CLP's
    frames = {k: f for k, f in frames.items() if k[0] != PLACEBO}  # the placebo not run
    gaps = harm_gaps(frames, family, n_boot=500)
    shifts = pd.DataFrame({"excess over global": [0.0123, 0.5],
                           "specific": ["above the global shift", "below the global shift"]},
                          index=pd.MultiIndex.from_tuples([("A - B", "neg_own"),
                                                           ("A - B", "q_pos")]))
    lines = what_survives(gaps, shifts)
    prefixes = {"held": "What survives", "reversed": "Reversed", "equivalent": "Ruled out",
                "inconclusive": "Not shown", "not run": "- ", ONE_SEED: "No verdict"}
    for c in family:
        if not c.tested:
            continue
        verdict = gaps.loc[c.label, "verdict"]
        where = [line for line in lines if c.claim in line]
        assert len(where) == 1 and where[0].startswith(prefixes[verdict]), (c.label, verdict)
    assert gaps.loc[f"{INFONCE} - {PLACEBO}", "verdict"] == "not run"
    assert gaps.loc[INFONCE, "verdict"] == "held"
    assert gaps.loc[f"{STRONG} - {CLP}", "verdict"] != "held"
    assert "A - B: +0.0123, above the global shift" in lines[-1]
    assert "below" not in lines[-1]  # only the negatives' own-query cosine


# --------------------------------------------------------------------------- the cosines


def cosine_sims(shift: dict[str, float], seeds=(0, 1), n=300, seed=0) -> pd.DataFrame:
    """Two models' per-record cosines; the second is the first plus ``shift`` per column
    (``q_all`` included) plus noise."""
    rng = np.random.default_rng(seed)
    parts = []
    for s in seeds:
        ref = pd.DataFrame({"qid": [f"q{i}" for i in range(n)], "neg_id": "n",
                            **{c: rng.normal(0.3, 0.1, n) for c in
                               ("q_pos", "q_neg", "neg_own", "q_all")}})
        row = ref.assign(**{c: ref[c] + shift[c] + rng.normal(0, 0.01, n) for c in shift})
        parts += [ref.assign(model="ref", seed=s), row.assign(model="row", seed=s)]
    return pd.concat(parts, ignore_index=True)


def test_a_purely_global_shift_is_not_specific():
    from clp_utils.geometry import cosine_shifts

    everywhere = dict.fromkeys(("q_pos", "q_neg", "neg_own", "q_all"), 0.02)
    table = cosine_shifts(cosine_sims(everywhere), [("row", "ref")])
    assert table["shift"].to_numpy() == pytest.approx(0.02, abs=0.003)
    assert table["global shift"].to_numpy() == pytest.approx(0.02, abs=0.003)
    assert (table["specific"] == "not distinguishable from the global shift").all()
    # a pull on the negatives beyond the global shift is flagged, the others are not
    table = cosine_shifts(cosine_sims({**everywhere, "neg_own": 0.05}), [("row", "ref")]
                          ).loc["row - ref"]
    assert table.loc["neg_own", "excess over global"] == pytest.approx(0.03, abs=0.003)
    assert table.loc["neg_own", "specific"] == "above the global shift"
    assert table.loc["q_pos", "specific"] == "not distinguishable from the global shift"


def test_cosine_shift_is_the_paired_mean_difference():
    from clp_utils.geometry import cosine_shifts

    sims = cosine_sims(dict.fromkeys(("q_pos", "q_neg", "neg_own", "q_all"), 0.01))
    sims.loc[sims.index[::7], "neg_own"] = np.nan  # a negative without own query
    table = cosine_shifts(sims, [("row", "ref")]).loc["row - ref"]
    wide = sims.pivot_table(index=["seed", "qid"], columns="model", values="neg_own")
    d = (wide["row"] - wide["ref"]).dropna()
    by_seed = d.groupby("seed").mean()
    assert table.loc["neg_own", "shift"] == pytest.approx(by_seed.mean(), abs=1e-12)
    # the interval: a group part (mean over records within each seed) and a seed part, each
    # with its own t quantile
    from scipy import stats

    group_var = (d.groupby("seed").var() / d.groupby("seed").size()).sum() / 4
    group_df = int((d.groupby("seed").size() - 1).sum())
    half = np.sqrt(stats.t.ppf(0.975, group_df) ** 2 * group_var
                   + stats.t.ppf(0.975, 1) ** 2 * by_seed.var() / 2)
    assert table.loc["neg_own", "95% CI high"] == pytest.approx(by_seed.mean() + half, rel=1e-6)


def test_similarity_frame_global_column_is_the_mean_over_passages():
    from clp_utils.geometry import similarity_frame

    rng = np.random.default_rng(1)
    texts = ["q", "p", "n1", "n2", "o1"]
    table = {t: v / np.linalg.norm(v) for t, v in zip(texts, rng.normal(size=(5, 4)),
                                                      strict=True)}
    record = {"qid": "q", "query": "q", "pos": "p", "neg_ids": ["n1", "n2"], "neg": ["n1", "n2"],
              "neg_q": [["o1"], []]}
    frame = similarity_frame(TableModel(table), [record], "m")
    mean_p = np.mean([table["p"], table["n1"], table["n2"]], axis=0)
    assert frame["q_all"].to_numpy() == pytest.approx(table["q"] @ mean_p, abs=1e-6)
    assert frame["neg_own"].iloc[0] == pytest.approx(table["n1"] @ table["o1"], abs=1e-6)
    assert np.isnan(frame["neg_own"].iloc[1])
