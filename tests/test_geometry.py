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


def test_harm_gaps_find_a_planted_harm_and_its_repair():
    """Own queries lose 0.05 against matched controls under InfoNCE and nothing under CLP:
    the difference in differences reads -0.05, 0, and CLP - InfoNCE +0.05, with the control
    reweighted to the own group's zero-shot strata (the control is easier on purpose)."""
    from clp_utils.geometry import HARM_STRATA, harm_gaps

    rng = np.random.default_rng(0)

    def frame(harm: float) -> pd.DataFrame:
        rows = []
        for p in range(300):
            group = "own" if p < 100 else "control"
            for j in range(4):
                zs = rng.choice([0.0, 0.5, 1.0], p=[0.5, 0.3, 0.2] if group == "own"
                                else [0.2, 0.3, 0.5])
                stratum = int(np.digitize(zs, HARM_STRATA[1:-1], right=True))
                lift = {0.0: 0.2, 0.5: 0.1, 1.0: 0.0}[zs]  # easy queries have less to gain
                change = lift + (harm if group == "own" else 0.0) + rng.normal(0, 0.05)
                rows.append((f"q{p}.{j}", f"p{p}", group, stratum, zs, change))
        return pd.DataFrame(rows, columns=["qid", "passage", "group", "stratum",
                                           "ndcg_cut_10_zs", "change"])

    frames = {(row, s): frame(h) for row, h in (("InfoNCE", -0.05), ("CLP", 0.0))
              for s in (0, 1)}
    gaps = harm_gaps(frames, "InfoNCE", "CLP", n_boot=500)
    assert gaps.loc["InfoNCE", "own minus matched control"] == pytest.approx(-0.05, abs=0.01)
    assert gaps.loc["CLP", "own minus matched control"] == pytest.approx(0.0, abs=0.01)
    diff = gaps.loc["CLP - InfoNCE"]
    assert diff["own minus matched control"] == pytest.approx(0.05, abs=0.015)
    assert diff["95% CI low"] < 0.05 < diff["95% CI high"] and diff["95% CI low"] > 0


def test_repair_reading_follows_the_interval():
    import pandas as pd

    from clp_utils.geometry import repair_reading

    def gap(low, high):
        return pd.Series({"own minus matched control": (low + high) / 2, "95% CI low": low,
                          "95% CI high": high})

    assert repair_reading(gap(0.0017, 0.0134)) == "a measurable repair"
    assert repair_reading(gap(-0.0002, 0.0090)) == "no measurable repair"
    assert repair_reading(gap(-0.02, -0.001)) == "more harm than InfoNCE"
