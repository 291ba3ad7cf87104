"""The mechanism the paper claims, measured: where negatives sit relative to their own queries.

CLP's penalty pulls each hard negative toward the queries it answers, so that pushing it away
from query i does not wreck it for them (the paper's Figure 1). ``similarity_frame`` measures,
for a model and a set of mined training records, the three cosines that tell whether that
happened: query-positive, query-hard negative, and hard negative-its own query.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from clp_utils.base.paths import EXTRAS_ROOT
from clp_utils.evaluation import evaluate_run
from clp_utils.losses import clp_loss
from clp_utils.models import load_model
from clp_utils.profiles import PAPER_RECIPE_COUNTERPARTS, ZERO_SHOT
from clp_utils.retrieval import encode_passages, encode_queries, search, to_run
from clp_utils.training import embed


def _passages(records: list[dict]) -> list[str]:
    """The distinct positive and negative texts of mined records, in order of appearance."""
    return list(dict.fromkeys([r["pos"] for r in records]
                              + [n for r in records for n in r["neg"]]))


def similarity_frame(model, records: list[dict], label: str,
                     batch_size: int | None = None) -> pd.DataFrame:
    """One row per (record, negative, own query) with the three cosines under ``model``.

    Columns: ``model`` (= ``label``), ``qid``, ``neg_id``, ``q_pos`` (cos query-positive),
    ``q_neg`` (cos query-negative), ``neg_own`` (cos negative-one of its own queries; NaN when
    the negative has none).
    """
    queries = [r["query"] for r in records]
    passages = _passages(records)
    own = list(dict.fromkeys(t for r in records for qs in r["neg_q"] for t in qs))
    q = encode_queries(model, queries, batch_size, progress=False)
    p = encode_passages(model, passages, batch_size, progress=False, cache_dir=None)
    o = encode_queries(model, own, batch_size, progress=False) if own else np.zeros((0, q.shape[1]))
    p_idx = {t: i for i, t in enumerate(passages)}
    o_idx = {t: i for i, t in enumerate(own)}
    rows = []
    for i, r in enumerate(records):
        q_pos = float(q[i] @ p[p_idx[r["pos"]]])
        for j, (neg_id, neg) in enumerate(zip(r["neg_ids"], r["neg"], strict=True)):
            q_neg = float(q[i] @ p[p_idx[neg]])
            owns = r["neg_q"][j] or [None]
            for t in owns:
                neg_own = float(p[p_idx[neg]] @ o[o_idx[t]]) if t is not None else np.nan
                rows.append((label, r["qid"], neg_id, q_pos, q_neg, neg_own))
    return pd.DataFrame(rows, columns=["model", "qid", "neg_id", "q_pos", "q_neg", "neg_own"])


def umap_2d(emb: np.ndarray, seed: int = 0, n_neighbors: int = 15,
            method: str = "umap") -> np.ndarray:
    """2-D map of (normalised) embeddings: UMAP with cosine distance, or PCA (``method="pca"``,
    and always when there are fewer than 8 points)."""
    if method == "pca" or len(emb) < 8:
        from sklearn.decomposition import PCA

        return PCA(2, random_state=seed).fit_transform(emb)
    import umap  # here, not at the top: importing it compiles with numba for a minute

    reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(emb) - 1), metric="cosine",
                        random_state=seed)
    return reducer.fit_transform(emb)


# --------------------------------------------------------------------------- the gradient


def gradient_shares(model, examples: list, batches: list[list[int]], config,
                    lams: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.5)) -> pd.DataFrame:
    """How much of CLP's gradient is the penalty's pull, measured on real training batches.

    For each batch (float32, dropout off) the two unweighted parts of CLP, the contrastive
    term ``CL`` (InfoNCE) and the penalty ``P``, are differentiated separately:

    - with respect to the trainable parameters: ``g_CL``, ``g_P``;
    - with respect to each hard negative's embedding ``h'``: the push away from its query
      (from ``CL``) and the pull toward its own queries (from ``P``).

    Rows: one per batch and ``lam`` in ``lams`` (the weighting is applied afterwards, so one
    pair of backward passes serves every lambda): ``penalty_share`` =
    ``||lam g_P|| / ||(1 - lam) g_CL + lam g_P||`` over the parameters, ``push_over_pull`` =
    median over negatives of ``||(1 - lam) dCL/dh'|| / ||lam dP/dh'||``, and
    ``cos_params`` (cosine between ``g_CL`` and ``g_P``). Why the pull is weak: ``dCL/ds(q,
    h')`` is ``p(h'|q) / tau`` per query while ``dP/ds(h', h*)`` is ``1 / (number of slots)``,
    so at tau 0.05 the push outweighs the pull unless lambda is large.
    """

    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()  # dropout off: the two parts see the same forward pass
    rows = []
    for b, idx in enumerate(batches):
        batch = [examples[i] for i in idx]
        n, k = len(batch), len(batch[0].negs)
        m = len(batch[0].neg_qs[0])
        docs = embed(model, [e.pos for e in batch] + [x for e in batch for x in e.negs],
                     config.max_passage_len, kind="passage")
        pos, negs = docs[:n], docs[n:].reshape(n, k, -1)
        own = [t for e in batch for slots in e.neg_qs for t in slots]
        emb = embed(model, [e.query for e in batch] + own, config.max_query_len)
        q, nq = emb[:n], emb[n:].reshape(n, k, m, -1)
        mask = torch.tensor([e.mask for e in batch], device=q.device)
        out = clp_loss(q, pos, negs, nq, mask, lam=0.5, tau=config.tau, variant=config.variant,
                       in_batch=config.in_batch)
        g_cl = torch.autograd.grad(out.contrastive, params + [negs], retain_graph=True,
                                   allow_unused=True)
        g_p = torch.autograd.grad(out.penalty, params + [negs], allow_unused=True)
        flat = [torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                           for g, p in zip(gs[:-1], params, strict=True)]) for gs in (g_cl, g_p)]
        neg_cl = g_cl[-1].norm(dim=-1).flatten()
        neg_p = g_p[-1].norm(dim=-1).flatten() if g_p[-1] is not None else torch.zeros_like(neg_cl)
        cos = float(torch.nn.functional.cosine_similarity(flat[0], flat[1], dim=0))
        for lam in lams:
            total = (1 - lam) * flat[0] + lam * flat[1]
            ratio = ((1 - lam) * neg_cl) / (lam * neg_p).clamp_min(1e-12)
            rows.append({"batch": b, "lam": lam,
                         "penalty_share": float((lam * flat[1]).norm() / total.norm()),
                         "push_over_pull": float(ratio.median()), "cos_params": cos})
        model.zero_grad(set_to_none=True)
    model.train(was_training)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the harm


def own_query_retrieval(model, model_id: str | None, dataset, records: list[dict],
                        trained_qids: set[str] | None = None,
                        batch_size: int | None = None) -> pd.DataFrame:
    """Retrieval of every training query over the training corpus, each marked with the group
    the harm analysis needs.

    CLP's premise: pushing a hard negative away from query i harms its retrieval for the
    queries it answers. For the passages that served as a hard negative in ``records``, their
    own train queries (``group="own"``) are the ones that could be harmed; every other
    training query, whose passage never served as a negative (``group="control"``), is the
    control: the same corpus, the same run, the same training. One row per training query:
    ``qid``, ``passage`` (its relevant passage: the bootstrap resamples passages),
    ``group``, ``trained`` (whether the run also trained on it: training on a query pulls its
    passage back, which would hide the harm), ``ndcg_cut_10`` and ``recall_10``. Passage
    embeddings come from the run's evaluation cache when ``model_id`` names it.
    """
    train = dataset.train()
    negs = {d for r in records for d in r["neg_ids"]}
    qids = sorted(q for q, rels in train.qrels.items() if set(rels) & set(train.corpus))
    everything = dataset.test()  # the whole corpus, in the order evaluation embeds it
    docids = list(everything.corpus)
    emb = encode_passages(model, [everything.passage_text(d) for d in docids], batch_size,
                          progress=False, model_id=model_id)
    keep = np.array([i for i, d in enumerate(docids) if d in train.corpus])
    q_emb = encode_queries(model, [train.queries[q]["text"] for q in qids], batch_size,
                           progress=False)
    scores, idx = search(q_emb, emb[keep], 100)
    run = to_run(qids, [docids[i] for i in keep], scores, idx)
    per_query = evaluate_run(run, {q: train.qrels[q] for q in qids}).per_query
    trained_qids = trained_qids or set()
    passage = {q: sorted(train.qrels[q])[0] for q in qids}
    return pd.DataFrame({"qid": qids, "passage": [passage[q] for q in qids],
                         "group": ["own" if set(train.qrels[q]) & negs else "control"
                                   for q in qids],
                         "trained": [q in trained_qids for q in qids],
                         "ndcg_cut_10": [per_query["ndcg_cut_10"][q] for q in qids],
                         "recall_10": [per_query["recall_10"][q] for q in qids]})


#: Strata of zero-shot nDCG@10 within which the control queries are matched to the
#: negatives' own queries (a query that was already easy or hard before training).
HARM_STRATA = (-0.01, 0.0, 0.4, 0.7, 0.99, 1.0)


def harm_frame(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Per query not trained on: group, passage, zero-shot score, its stratum and the change
    (fine-tuned - zero-shot nDCG@10), from ``own_query_retrieval`` before and after."""
    merged = before.merge(after[["qid", "ndcg_cut_10"]], on="qid", suffixes=("_zs", "_ft"))
    merged = merged[~merged["trained"]].copy()
    merged["change"] = merged["ndcg_cut_10_ft"] - merged["ndcg_cut_10_zs"]
    merged["stratum"] = pd.cut(merged["ndcg_cut_10_zs"], HARM_STRATA, labels=False)
    return merged[["qid", "passage", "group", "stratum", "ndcg_cut_10_zs", "change"]]


def _harm_sums(frame: pd.DataFrame, passages: list[str]) -> np.ndarray:
    """(2 groups, 2 [sum, count], strata, passages) of the changes."""
    pos = {p: i for i, p in enumerate(passages)}
    out = np.zeros((2, 2, len(HARM_STRATA) - 1, len(passages)))
    for g, name in enumerate(("own", "control")):
        part = frame[frame["group"] == name]
        np.add.at(out[g, 0], (part["stratum"].to_numpy(), part["passage"].map(pos).to_numpy()),
                  part["change"].to_numpy())
        np.add.at(out[g, 1], (part["stratum"].to_numpy(), part["passage"].map(pos).to_numpy()), 1)
    return out


def _matched_gap(sums: np.ndarray) -> np.ndarray:
    """Own-group mean change minus the control's, the control reweighted to the own group's
    strata (``sums`` from ``_harm_sums`` with the passage axis summed, any leading axes)."""
    own_sum, own_n = sums[..., 0, 0, :], sums[..., 0, 1, :]
    ctl_sum, ctl_n = sums[..., 1, 0, :], sums[..., 1, 1, :]
    share = own_n / np.maximum(own_n.sum(-1, keepdims=True), 1e-12)
    ctl_mean = np.where(ctl_n > 0, ctl_sum / np.maximum(ctl_n, 1e-12), 0.0)
    matched = (share * ctl_mean).sum(-1) / np.maximum((share * (ctl_n > 0)).sum(-1), 1e-12)
    return own_sum.sum(-1) / np.maximum(own_n.sum(-1), 1e-12) - matched


def repair_reading(gap: pd.Series) -> str:
    """What a "CLP - InfoNCE" row of ``harm_gaps`` says: an interval above zero is a
    measurable repair of the harm, one below zero more harm, one across zero no measurable
    repair."""
    if gap["95% CI low"] > 0:
        return "a measurable repair"
    return "more harm than InfoNCE" if gap["95% CI high"] < 0 else "no measurable repair"


def committed_harm_gaps() -> pd.DataFrame:
    """The extras' committed ``harm_gaps`` table (lambda 0.5 among its rows), indexed by
    comparison; empty when ``make study-extras`` has not run."""
    path = EXTRAS_ROOT / "05_harm_gaps.csv"
    return pd.read_csv(path, index_col="comparison") if path.exists() else pd.DataFrame()


def harm_gaps(frames: dict[tuple[str, int], pd.DataFrame], reference: str, row: str,
              n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The harm, with a control group: for each of ``reference`` (InfoNCE) and ``row`` (CLP),
    the negatives' own queries' change minus the matched control's (a difference in
    differences: negative if serving as a hard negative hurt a passage's own queries), and
    ``row`` minus ``reference`` (does CLP repair it?), each with a 95% interval from a
    two-level bootstrap (seeds, then passages, as ``stats.two_level_bootstrap``).

    ``frames``: ``(row, seed) -> harm_frame``. Seeds pair by number.
    """
    passages = sorted({p for f in frames.values() for p in f["passage"]})
    rows = {name: {s: _harm_sums(f, passages) for (r, s), f in frames.items() if r == name}
            for name in (reference, row)}
    seeds = sorted(set(rows[reference]) & set(rows[row]))
    if not seeds:
        raise ValueError(f"no seed in common between {reference!r} and {row!r}")
    rng = np.random.default_rng(seed)
    w = rng.multinomial(len(passages), np.full(len(passages), 1 / len(passages)), size=n_boot)
    gaps = {}
    for name in (reference, row):
        stacked = np.stack([rows[name][s] for s in seeds])  # (S, 2, 2, strata, P)
        gaps[name] = (_matched_gap(stacked.sum(-1)),  # (S,) estimates
                      _matched_gap(np.einsum("sgkzp,bp->bsgkz", stacked, w)))  # (B, S)
    gaps["difference"] = (gaps[row][0] - gaps[reference][0],
                          gaps[row][1] - gaps[reference][1])
    n = len(seeds)
    pick = rng.multinomial(n, np.full(n, 1 / n), size=n_boot) / n  # (B, S) seed weights
    out = []
    for name, (est, reps) in gaps.items():
        if n > 1:
            centre = reps.mean(1, keepdims=True)
            reps = centre + np.sqrt(n / (n - 1)) * (reps - centre)
        combined = (pick * reps).sum(1)
        low, high = np.quantile(combined, [0.025, 0.975])
        label = f"{row} - {reference}" if name == "difference" else name
        out.append({"comparison": label, "own minus matched control": float(est.mean()),
                    "95% CI low": float(low), "95% CI high": float(high), "seeds": n,
                    "seed values": ", ".join(f"{v:+.4f}" for v in est)})
    return pd.DataFrame(out).set_index("comparison")


def harm_summary(frames: dict[tuple[str, int], pd.DataFrame],
                 trained: dict[tuple[str, int], pd.DataFrame] | None = None) -> pd.DataFrame:
    """Per row and group: zero-shot and fine-tuned nDCG@10 and their change, averaged over
    seeds, and the number of queries (the smallest over seeds: groups differ by seed). With
    ``trained`` (the own queries the runs also trained on), a third group beside the two."""
    parts = [f.assign(row=r, seed=s) for (r, s), f in frames.items()]
    parts += [f.assign(row=r, seed=s, group="own, also trained on")
              for (r, s), f in (trained or {}).items()]
    long = pd.concat(parts, ignore_index=True)
    long["fine-tuned"] = long["ndcg_cut_10_zs"] + long["change"]
    per_seed = long.groupby(["row", "group", "seed"]).agg(
        **{"zero-shot": ("ndcg_cut_10_zs", "mean"), "fine-tuned": ("fine-tuned", "mean"),
           "change": ("change", "mean"), "queries": ("qid", "size")})
    out = per_seed.groupby(["row", "group"]).agg(
        **{"zero-shot": ("zero-shot", "mean"), "fine-tuned": ("fine-tuned", "mean"),
           "change": ("change", "mean"), "queries (fewest over seeds)": ("queries", "min")})
    return out


def trained_frame(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """``harm_frame``'s columns for the negatives' own queries the run ALSO trained on."""
    merged = before.merge(after[["qid", "ndcg_cut_10"]], on="qid", suffixes=("_zs", "_ft"))
    merged = merged[merged["trained"] & (merged["group"] == "own")].copy()
    merged["change"] = merged["ndcg_cut_10_ft"] - merged["ndcg_cut_10_zs"]
    merged["stratum"] = pd.cut(merged["ndcg_cut_10_zs"], HARM_STRATA, labels=False)
    return merged[["qid", "passage", "group", "stratum", "ndcg_cut_10_zs", "change"]]


# --------------------------------------------------------------------------- the temperature


def push_weights(model, records: list[dict], taus: tuple[float, ...] = (0.02, 0.05),
                 batch_size: int | None = None) -> pd.DataFrame:
    """Where InfoNCE's push lands among a query's own hard negatives, at each temperature.

    For every mined record (a query, its positive and its hard negatives, each flagged when
    it contains one of the query's answer strings: a likely false negative), the softmax
    ``pi = softmax(cos(q, .) / tau)`` over the positive and the negatives (no in-batch
    negatives: the official code's setting) gives each negative's share of the push on the
    query. Rows per ``tau``: ``loss`` (mean -log pi_pos), ``negative_mass`` (mean 1 - pi_pos),
    ``top_negative_share`` (mean share of the negatives' mass on the highest-scored one) and
    ``false_negative_share`` (share of the negatives' mass on answer-containing ones, over
    records that have any). A low tau concentrates the push on the top-scored negative, which
    is also the likeliest false negative.
    """
    q = encode_queries(model, [r["query"] for r in records], batch_size, progress=False)
    texts = _passages(records)
    emb = encode_passages(model, texts, batch_size, progress=False, cache_dir=None)
    row_of = {t: i for i, t in enumerate(texts)}
    out = []
    for tau in taus:
        loss, mass, top, fn = [], [], [], []
        for i, r in enumerate(records):
            if not r["neg"]:
                continue  # a query left without negatives by the filters has no push to share
            cand = np.stack([emb[row_of[r["pos"]]], *[emb[row_of[n]] for n in r["neg"]]])
            logits = cand @ q[i] / tau
            pi = np.exp(logits - logits.max())
            pi /= pi.sum()
            neg = pi[1:]
            loss.append(-np.log(pi[0]))
            mass.append(neg.sum())
            top.append(neg.max() / max(neg.sum(), 1e-30))
            hits = np.asarray(r["neg_answer_hit"], dtype=bool)
            if hits.any():
                fn.append(neg[hits].sum() / max(neg.sum(), 1e-30))
        out.append({"tau": tau, "records": len(records), "loss": float(np.mean(loss)),
                    "negative_mass": float(np.mean(mass)),
                    "top_negative_share": float(np.mean(top)),
                    "false_negative_share": float(np.mean(fn)) if fn else np.nan,
                    "records_with_false_negative": len(fn)})
    return pd.DataFrame(out).set_index("tau")


def spread(emb: np.ndarray, pairs: int = 20_000, seed: int = 0) -> dict[str, float]:
    """How spread out a set of normalised embeddings is: the mean cosine of random pairs
    (0 for a uniform sphere, 1 when collapsed) and Wang & Isola's uniformity
    ``log E exp(-2 ||x - y||^2)`` (lower is more uniform).

    InfoNCE with in-batch negatives pushes every passage of a batch away from every other
    query, which keeps the space spread; with a query's own few hard negatives only, nothing
    does, and a collapsing space retrieves worse over a whole corpus.
    """
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(emb), pairs), rng.integers(0, len(emb), pairs)
    keep = i != j
    cos = np.sum(emb[i[keep]] * emb[j[keep]], axis=1)
    return {"mean_pair_cosine": float(cos.mean()),
            "uniformity": float(np.log(np.mean(np.exp(-2 * (2 - 2 * cos)))))}


def corpus_embeddings(model: str, model_id: str, dataset) -> np.ndarray:
    """A model's embeddings of a dataset's whole corpus, from the evaluation cache when the
    run (``model_id``: its run id, or a packaged model's name) already embedded it.

    ``model`` is a model name or folder (a run's ``model/``); it is loaded to name the
    cache entry, and only computes when the entry is missing.
    """
    model = load_model(model)
    everything = dataset.test()
    return encode_passages(model, [everything.passage_text(d) for d in everything.corpus],
                           progress=False, model_id=model_id)


# --------------------------------------------------------------------------- the paper's recipe


def recipe_comparison(runs: list, table2: pd.DataFrame, split: str, records: list[dict],
                      dataset, model_name: str, metric: str = "ndcg_cut_10"
                      ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The paper's recipe (no in-batch negatives, tau 0.02) beside the study's rows.

    Returns ``(pushes, spread_table, sentences)``: where InfoNCE's push lands among a query's
    own negatives at each temperature (``push_weights``, zero-shot model, ``records``), how
    spread out each model leaves the corpus (``spread``, seed 0 of each row, beside its test
    score), and generated sentences saying which way the numbers point at this budget.
    """
    present = {r.row for r in runs if r.split == split}
    recipe_rows = [r for r in PAPER_RECIPE_COUNTERPARTS if r in present]
    pushes = push_weights(load_model(model_name), records, taus=(0.02, 0.05))
    shown = [(ZERO_SHOT, model_name, model_name)] + [
        (r.row, str(r.result.model_path), r.result.run_id) for r in runs
        if r.split == split and r.seed == 0
        and r.row in {*recipe_rows, *(PAPER_RECIPE_COUNTERPARTS[x] for x in recipe_rows)}]
    spreads = pd.DataFrame({row: spread(corpus_embeddings(path, mid, dataset))
                            for row, path, mid in shown}).T
    spreads[f"{metric} (test, mean over seeds)"] = [table2.loc[(split, row), f"{metric} mean"]
                                                    for row in spreads.index]
    zs = table2.loc[(split, ZERO_SHOT), f"{metric} mean"]
    lines = []
    for row in recipe_rows:
        twin = PAPER_RECIPE_COUNTERPARTS[row]
        v, w = (table2.loc[(split, r), f"{metric} mean"] for r in (row, twin))
        lines.append(f"{row}: {v:.4f} against zero-shot {zs:.4f} ({v - zs:+.4f}) and the "
                     f"study's {twin} {w:.4f} ({v - w:+.4f}).")
    top = pushes["top_negative_share"]
    lines.append(f"At tau 0.02 the top-scored negative takes {top.loc[0.02]:.0%} of a query's "
                 f"push, at 0.05 {top.loc[0.05]:.0%}: the lower temperature "
                 + ("concentrates each update on fewer passages." if top.loc[0.02] > top.loc[0.05]
                    else "does not concentrate it."))
    cos = spreads["mean_pair_cosine"]
    for row in recipe_rows:
        twin = PAPER_RECIPE_COUNTERPARTS[row]
        if twin in cos.index and row in cos.index:
            more = cos[row] > cos[twin]
            lines.append(f"{row} leaves random passage pairs at mean cosine {cos[row]:.3f}, "
                         f"the study's {twin} at {cos[twin]:.3f}, zero-shot at "
                         f"{cos[ZERO_SHOT]:.3f}: {'more' if more else 'less'} collapsed than "
                         "in-batch training.")
    return pushes, spreads, lines
