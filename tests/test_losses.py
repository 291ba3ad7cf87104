"""InfoNCE and CLP: against sentence-transformers, hand computations, gradcheck, the trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from torch import nn

from clp_utils.losses import (
    CLPLoss,
    InfoNCELoss,
    clp_column_names,
    clp_loss,
    clp_penalty,
    info_nce,
)


def _batch(b: int, k: int, m: int, d: int = 6, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, d, generator=g, dtype=dtype),
        torch.randn(b, d, generator=g, dtype=dtype),
        torch.randn(b, k, d, generator=g, dtype=dtype),
        torch.randn(b, k, m, d, generator=g, dtype=dtype),
    )


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


# --- against MultipleNegativesRankingLoss ---------------------------------------------------


@pytest.mark.parametrize(("k", "tau"), [(0, 0.05), (1, 0.05), (3, 0.02)])
def test_lambda0_equals_mnrl(k: int, tau: float) -> None:
    q, p, n, nq = _batch(5, max(k, 1), 2, seed=k)
    n, nq = n[:, :k], nq[:, :k]
    mnrl = MultipleNegativesRankingLoss(None, scale=1.0 / tau)
    expected = mnrl.compute_loss_from_embeddings([q, p, *n.unbind(1)], None)
    assert torch.allclose(info_nce(q, p, n, tau=tau, in_batch=True), expected, atol=1e-5)
    assert torch.allclose(
        InfoNCELoss(None, temperature=tau).compute_loss_from_embeddings([q, p, *n.unbind(1)]),
        expected,
        atol=1e-5,
    )
    if k:
        out = clp_loss(q, p, n, nq, lam=0.0, tau=tau)
        assert torch.allclose(out.total, expected, atol=1e-5)
        clp = CLPLoss(None, num_negatives=k, queries_per_negative=2, lam=0.0, temperature=tau)
        cols = [q, p, *n.unbind(1), *nq.reshape(5, k * 2, -1).unbind(1)]
        assert torch.allclose(clp.compute_loss_from_embeddings(cols), expected, atol=1e-5)


def test_lambda0_gradients_equal_mnrl() -> None:
    q, p, n, _ = _batch(4, 2, 1, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (q, p, n)]
    info_nce(*leaves, tau=0.05).backward()
    ref = [t.clone().requires_grad_() for t in (q, p, n)]
    mnrl = MultipleNegativesRankingLoss(None, scale=20.0)
    mnrl.compute_loss_from_embeddings([ref[0], ref[1], *ref[2].unbind(1)], None).backward()
    for a, b in zip(leaves, ref, strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-10)


# --- hand-computed values -------------------------------------------------------------------


def test_hand_computed_two_queries() -> None:
    """B=2, k=1, m=2 on the unit circle, second slot of query 1's negative masked."""
    tau, lam = 0.1, 0.3
    q = [_unit(0), _unit(90)]
    pos = [_unit(20), _unit(100)]
    neg = [_unit(60), _unit(170)]
    nq = [[_unit(80), _unit(30)], [_unit(150), _unit(-45)]]
    mask = [[1, 1], [1, 0]]

    def ce(i: int, cands: list[list[float]], target: int) -> float:
        logits = [_cos(q[i], c) / tau for c in cands]
        return -(logits[target] - math.log(sum(math.exp(x) for x in logits)))

    docs = pos + neg  # in-batch candidates: both positives, then both negatives
    nce_in = (ce(0, docs, 0) + ce(1, docs, 1)) / 2
    nce_own = (ce(0, [pos[0], neg[0]], 0) + ce(1, [pos[1], neg[1]], 0)) / 2
    slots = [(i, r) for i in range(2) for r in range(2) if mask[i][r]]
    pen_paper = sum(1 - _cos(neg[i], nq[i][r]) for i, r in slots) / len(slots)
    pen_sum = (
        sum(1 - sum(_cos(neg[i], nq[i][r]) for r in range(2) if mask[i][r]) for i in range(2)) / 2
    )

    t = torch.tensor
    args = (t(q), t(pos), t(neg)[:, None], t(nq)[:, None])
    for in_batch, nce in ((True, nce_in), (False, nce_own)):
        for variant, pen in (("paper", pen_paper), ("sum", pen_sum)):
            out = clp_loss(
                *args, mask=t(mask), lam=lam, tau=tau, variant=variant, in_batch=in_batch
            )
            assert out.contrastive.item() == pytest.approx(nce, rel=1e-5)
            assert out.penalty.item() == pytest.approx(pen, rel=1e-5)
            assert out.total.item() == pytest.approx((1 - lam) * nce + lam * pen, rel=1e-5)


def test_batch_size_one_equals_paper_formula() -> None:
    """One query, 4 negatives, one generated query each: the paper's l_i with the code's mean."""
    tau, lam = 0.02, 0.1
    g = torch.Generator().manual_seed(3)
    q, p = (
        torch.randn(1, 8, generator=g, dtype=torch.float64),
        torch.randn(1, 8, generator=g, dtype=torch.float64),
    )
    n, nq = (
        torch.randn(1, 4, 8, generator=g, dtype=torch.float64),
        torch.randn(1, 4, 1, 8, generator=g, dtype=torch.float64),
    )
    h, hp = q[0].tolist(), p[0].tolist()
    negs = [n[0, j].tolist() for j in range(4)]
    num = math.exp(_cos(h, hp) / tau)
    den = num + sum(math.exp(_cos(h, x) / tau) for x in negs)
    penalty = sum(1 - _cos(negs[j], nq[0, j, 0].tolist()) for j in range(4)) / 4
    expected = -(1 - lam) * math.log(num / den) + lam * penalty
    for in_batch in (True, False):  # one query: no other query's documents to add
        for variant in ("paper", "sum"):  # one query per negative: sum == mean
            out = clp_loss(q, p, n, nq, lam=lam, tau=tau, variant=variant, in_batch=in_batch)
            assert out.total.item() == pytest.approx(expected, rel=1e-10)


def test_sum_variant_is_published_formula() -> None:
    """One negative with three positive queries: lam * (1 - sum_{h* in H*} s(h', h*))."""
    tau, lam = 0.05, 0.1
    h, hp, neg = _unit(0), _unit(15), _unit(40)
    stars = [_unit(50), _unit(70), _unit(10)]
    logits = [_cos(h, hp) / tau, _cos(h, neg) / tau]
    nce = -(logits[0] - math.log(sum(math.exp(x) for x in logits)))
    expected = (1 - lam) * nce + lam * (1 - sum(_cos(neg, s) for s in stars))
    t = torch.tensor
    out = clp_loss(t([h]), t([hp]), t([[neg]]), t([[stars]]), lam=lam, tau=tau, variant="sum")
    assert out.total.item() == pytest.approx(expected, rel=1e-5)
    paper = clp_loss(t([h]), t([hp]), t([[neg]]), t([[stars]]), lam=lam, tau=tau, variant="paper")
    assert paper.penalty.item() == pytest.approx(sum(1 - _cos(neg, s) for s in stars) / 3, rel=1e-5)


# --- mask -----------------------------------------------------------------------------------


def test_masked_slots_contribute_nothing() -> None:
    q, p, n, nq = _batch(3, 2, 2, dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 0, 1]])
    slots = mask.reshape(3, 2, 2).bool()
    junk = nq.clone()
    junk[~slots] = 1e3 * torch.randn_like(junk[~slots])  # whatever text filled the slot
    junk[1, 0, 0] = 0.0  # even an all-zero embedding
    leaf = junk.clone().requires_grad_()
    for variant in ("paper", "sum"):
        pen = clp_penalty(n, leaf, mask, variant=variant)
        pen.backward()
        assert pen.item() == pytest.approx(clp_penalty(n, nq, mask, variant=variant).item())
        assert torch.all(leaf.grad[~slots] == 0)
        assert leaf.grad[slots].abs().sum() > 0
        leaf.grad = None
    cos = torch.nn.functional.cosine_similarity(n[:, :, None], nq, dim=-1)
    assert clp_penalty(n, junk, mask).item() == pytest.approx((1 - cos[slots]).mean().item())
    has = slots.any(-1)
    per_neg = 1 - (cos * slots).sum(-1)
    assert clp_penalty(n, junk, mask, "sum").item() == pytest.approx(per_neg[has].mean().item())


def test_all_masked_penalty_is_zero() -> None:
    q, p, n, nq = _batch(2, 1, 1)
    out = clp_loss(q, p, n, nq, mask=torch.zeros(2, 1), lam=0.5)
    assert out.penalty.item() == 0.0
    assert out.total.item() == pytest.approx(0.5 * out.contrastive.item())


def test_bad_mask_shape_raises() -> None:
    q, p, n, nq = _batch(2, 2, 1)
    with pytest.raises(ValueError, match="penalty mask"):
        clp_loss(q, p, n, nq, mask=torch.ones(2, 3))


# --- gradients ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["paper", "sum"])
@pytest.mark.parametrize("in_batch", [True, False])
def test_gradcheck(variant: str, in_batch: bool) -> None:
    q, p, n, nq = (t.requires_grad_() for t in _batch(3, 2, 2, d=4, dtype=torch.float64))
    mask = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 0], [0, 0, 1, 1]])

    def f(q, p, n, nq):
        return clp_loss(
            q, p, n, nq, mask=mask, lam=0.3, tau=0.5, variant=variant, in_batch=in_batch
        ).total

    assert torch.autograd.gradcheck(f, (q, p, n, nq))


def test_penalty_gradient_pulls_negative_toward_its_query() -> None:
    """d/dn (1 - cos(n, q*)) = -(q* - cos n) for unit vectors: descent moves n toward q*."""
    n = torch.tensor([[[1.0, 0.0]]], requires_grad=True)
    star = torch.tensor([[[[0.6, 0.8]]]])
    clp_penalty(n, star).backward()
    assert torch.allclose(n.grad[0, 0], -torch.tensor([0.0, 0.8]), atol=1e-6)


# --- the modules ----------------------------------------------------------------------------


class _TinyEncoder(nn.Module):
    """Mean of token embeddings: a deterministic stand-in for a SentenceTransformer."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 8)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask = features["attention_mask"].unsqueeze(-1).float()
        vec = (self.emb(features["input_ids"]) * mask).sum(1) / mask.sum(1)
        return {**features, "sentence_embedding": vec}


def _features(b: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, length, dtype=torch.long)
    mask[0, length // 2 :] = 0  # ragged lengths so merging really pads
    return {"input_ids": torch.randint(1, 50, (b, length), generator=g), "attention_mask": mask}


def test_clp_module_forward_matches_functional_core() -> None:
    torch.manual_seed(0)
    model = _TinyEncoder()
    k, m, b = 2, 2, 3
    lengths = [5, 12] + [12] * k + [4, 6, 5, 7]  # queries short, documents long
    features = [_features(b, n, s) for s, n in enumerate(lengths)]
    labels = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    loss = CLPLoss(
        model, num_negatives=k, queries_per_negative=m, variant="sum", return_components=True
    )
    parts = loss(features, labels)
    emb = [model(f)["sentence_embedding"] for f in features]
    ref = clp_loss(
        emb[0],
        emb[1],
        torch.stack(emb[2:4], 1),
        torch.stack(emb[4:], 1).reshape(b, k, m, -1),
        mask=labels,
        variant="sum",
    )
    assert parts["contrastive_weighted"].item() == pytest.approx(
        0.9 * ref.contrastive.item(), rel=1e-5
    )
    assert parts["penalty_weighted"].item() == pytest.approx(0.1 * ref.penalty.item(), rel=1e-5)
    assert loss.last_parts["total"] == pytest.approx(ref.total.item(), rel=1e-5)
    assert loss.last_parts["penalty"] == pytest.approx(ref.penalty.item(), rel=1e-5)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match="expects 8 text columns, got 7"):
        loss(features[:-1], labels)
    assert not calls  # rejected before any forward pass


def test_infonce_module_own_negatives_only() -> None:
    torch.manual_seed(0)
    model = _TinyEncoder()
    features = [_features(4, n, s) for s, n in enumerate([6, 10, 10, 10])]
    emb = [model(f)["sentence_embedding"] for f in features]
    got = InfoNCELoss(model, temperature=0.1, in_batch_negatives=False)(features, None)
    logits = torch.nn.functional.cosine_similarity(emb[0][:, None], torch.stack(emb[1:], 1), dim=-1)
    expected = torch.nn.functional.cross_entropy(logits / 0.1, torch.zeros(4, dtype=torch.long))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_column_names() -> None:
    assert clp_column_names(2, 2) == [
        "query",
        "pos",
        "neg_0",
        "neg_1",
        "neg_q_0_0",
        "neg_q_0_1",
        "neg_q_1_0",
        "neg_q_1_1",
    ]


def test_trainer_step_logs_components(tmp_path, tiny_model_path) -> None:
    """One SentenceTransformerTrainer step with the dataset layout and a label mask (on the
    tiny random BERT of conftest: the logging does not depend on trained weights)."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    from clp_utils.models import load_model

    model = load_model(tiny_model_path, device="cpu")
    model.max_seq_length = 16
    rows = {c: [f"{c} text number {i}" for i in range(4)] for c in clp_column_names(1, 2)}
    rows["label"] = [[1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]
    loss = CLPLoss(model, num_negatives=1, queries_per_negative=2, lam=0.5, return_components=True)
    before = model[0].auto_model.encoder.layer[0].intermediate.dense.weight.detach().clone()
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=1,
        logging_steps=1,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict(rows), loss=loss
    )
    trainer.train()
    logged = next(h for h in trainer.state.log_history if "penalty_weighted" in h)
    assert logged["loss"] == pytest.approx(
        logged["contrastive_weighted"] + logged["penalty_weighted"], abs=2e-3
    )
    assert set(loss.last_parts) == {"contrastive", "penalty", "total"}
    after = model[0].auto_model.encoder.layer[0].intermediate.dense.weight
    assert not torch.equal(before, after)


@pytest.mark.parametrize("in_batch", [True, False])
def test_autograd_matches_derived_negative_gradient(in_batch: bool) -> None:
    """The closed form derived in notebook 02 (clp_utils.toy) against autograd."""
    from clp_utils.toy import analytic_negative_grad

    q, p, n, nq = _batch(3, 2, 2, dtype=torch.float64, seed=5)
    n = (3.0 * n).requires_grad_()  # non-unit norms exercise the 1/|n| factor
    clp_loss(q, p, n, nq, lam=0.2, tau=0.3, in_batch=in_batch).total.backward()
    expected = analytic_negative_grad(q, p, n.detach(), nq, lam=0.2, tau=0.3, in_batch=in_batch)
    assert torch.allclose(n.grad, expected, atol=1e-12)


def test_paper_recipe_batch_of_four_without_in_batch_equals_accumulating_four_single_queries():
    """The official run: one query per step, gradient accumulation 4 (the mean of 4 single-query
    gradients). Without in-batch negatives, one step on the 4 queries together is the same
    objective: the study's paper-recipe rows train that way."""
    q, p, n, nq = _batch(4, 4, 1, dtype=torch.float64, seed=11)
    n = n.requires_grad_()
    together = clp_loss(q, p, n, nq, lam=0.1, tau=0.02, in_batch=False).total
    (g_together,) = torch.autograd.grad(together, n)
    singles, grads = [], torch.zeros_like(n)
    for i in range(4):
        part = clp_loss(q[i:i + 1], p[i:i + 1], n[i:i + 1], nq[i:i + 1], lam=0.1, tau=0.02,
                        in_batch=False).total / 4  # accumulation scales each step by 1/4
        (g,) = torch.autograd.grad(part, n)
        grads += g
        singles.append(part.item())
    assert together.item() == pytest.approx(sum(singles), rel=1e-12)
    assert torch.allclose(g_together, grads, atol=1e-14)


def test_the_explorer_redraws_when_a_slider_moves():
    """Chapter 02's sliders call ``draw``: two settings give two different figures."""
    import matplotlib

    matplotlib.use("Agg")
    from clp_utils.toy import trajectory_explorer

    widget, draw = trajectory_explorer(steps=60)
    a, b = draw(0.1, 0.02, 1), draw(0.6, 0.05, 3)
    red = [[ln.get_ydata() for ln in f.axes[0].lines if ln.get_color() == "tab:red"]
           for f in (a, b)]
    assert len(red[0]) == 2 and not all(np.allclose(x, y) for x, y in zip(*red, strict=True))
    assert "τ=0.05" in b.axes[0].get_title() and "3 negative" in b.axes[0].get_title()
    lam_slider = widget.children[1]
    lam_slider.value = 0.3  # a person moving the slider redraws through the same callback
    assert "λ=0.3" in " ".join(t.get_text() for t in widget.figure.axes[0].get_legend().texts)
