"""The mechanism the paper claims, measured: where negatives sit relative to their own queries.

CLP's penalty pulls each hard negative toward the queries it answers, so that pushing it away
from query i does not wreck it for them (the paper's Figure 1). Two measurements, each against
what would move anyway:

- the cosines (``cosine_shifts``), each shift beside the global shift of all query-passage
  cosines: a model that moves every pair moves these too, so only the excess is the mechanism's;
- the retrieval of training queries (``harm_gaps``): the queries of passages ANCE picked as
  hard negatives (own) against those of passages it ranked in the same window but did not pick
  (control), within strata of zero-shot nDCG@10, each run beside the random-negatives run (the
  placebo: nothing pushed those passages away), all harm claims in one Holm family.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import softmax
from tqdm.auto import tqdm

from clp_utils.base.io import slug, write_json
from clp_utils.base.paths import EXTRAS_ROOT, results_dir
from clp_utils.batching import select_queries, training_records
from clp_utils.data import Split
from clp_utils.evaluation import committed_dir, evaluate_run
from clp_utils.losses import clp_loss
from clp_utils.mining import MiningConfig, index_and_queries, positives_of
from clp_utils.models import load_model
from clp_utils.plots import interval_text, number, read_table
from clp_utils.profiles import (
    ANCE,
    CLP,
    CLP_LAMBDA_05,
    PAPER_RECIPE_COUNTERPARTS,
    RANDOM,
    ZERO_SHOT,
)
from clp_utils.retrieval import (
    EMBEDDING_CACHE,
    encode_passages,
    encode_queries,
    search,
    to_run,
)
from clp_utils.stats import N_BOOT, SMALLEST_EFFECT, half_width, holm, p_value, verdict
from clp_utils.study import StudyRun, missing_cells, run_study
from clp_utils.training import embed

#: ``(row, seed) -> frame``: the per-query frames of the harm analysis.
Frames = dict[tuple[str, int], pd.DataFrame]
#: The three cosines of the paper's Figure 1, as ``similarity_frame`` names them.
COSINES = ("q_pos", "q_neg", "neg_own")
COSINE_NAMES = {"q_pos": "query to its positive", "q_neg": "query to its hard negative",
                "neg_own": "hard negative to its own queries"}


def _encode(model, records: list[dict], batch_size: int | None
            ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Mined records' queries and distinct passages (positives, then negatives) under
    ``model``, and each passage's row."""
    passages = list(dict.fromkeys([r["pos"] for r in records]
                                  + [n for r in records for n in r["neg"]]))
    q = encode_queries(model, [r["query"] for r in records], batch_size, progress=False)
    p = encode_passages(model, passages, batch_size, progress=False, cache_dir=None)
    return q, p, {t: i for i, t in enumerate(passages)}


def similarity_frame(model, records: list[dict], label: str,
                     batch_size: int | None = None) -> pd.DataFrame:
    """One row per (record, negative, own query) with the three cosines under ``model``.

    Columns: ``model`` (= ``label``), ``qid``, ``neg_id``, ``q_pos`` (cos query-positive),
    ``q_neg`` (cos query-negative), ``neg_own`` (cos negative-one of its own queries; NaN when
    the negative has none) and ``q_all`` (the query's mean cosine to every passage of the
    records: averaged over queries, the level a global shift moves).
    """
    q, p, row = _encode(model, records, batch_size)
    own = list(dict.fromkeys(t for r in records for qs in r["neg_q"] for t in qs))
    o = dict(zip(own, encode_queries(model, own, batch_size, progress=False) if own else [],
                 strict=True))
    q_all = q @ p.mean(0)
    rows = []
    for i, r in enumerate(records):
        q_pos = float(q[i] @ p[row[r["pos"]]])
        for neg_id, neg, owns in zip(r["neg_ids"], r["neg"], r["neg_q"], strict=True):
            n = p[row[neg]]
            for t in owns or [None]:
                neg_own = float(n @ o[t]) if t is not None else np.nan
                rows.append((label, r["qid"], neg_id, q_pos, float(q[i] @ n), neg_own,
                             float(q_all[i])))
    return pd.DataFrame(rows, columns=["model", "qid", "neg_id", *COSINES, "q_all"])


def seed_similarities(runs: list[StudyRun], rows: Sequence[str], groups: int,
                      batch_size: int | None = None, progress: bool = True) -> pd.DataFrame:
    """``similarity_frame`` of every seed of ``rows`` and of the zero-shot model, with a
    ``seed`` column, each seed on the first ``groups`` training records of its runs (the
    zero-shot model on the same ones, so shifts pair record by record). The rows must mine
    alike (ANCE and CLP do)."""
    chosen = [r for r in runs if r.row in rows]
    parts, base = [], functools.cache(load_model)
    for s in tqdm(sorted({r.seed for r in chosen}), desc="cosines, per seed",
                  disable=not progress):
        seed_runs = [r for r in chosen if r.seed == s]
        cfg = seed_runs[0].result.config
        if any(r.result.config.mining != cfg.mining for r in seed_runs):
            raise ValueError(f"the rows {list(rows)} mine differently at seed {s}")
        records = training_records(cfg, base(cfg.model))[:groups]
        parts.append(similarity_frame(base(cfg.model), records, ZERO_SHOT, batch_size)
                     .assign(seed=s))
        parts += [similarity_frame(r.result.load_model(), records, r.row, batch_size)
                  .assign(seed=s) for r in seed_runs]
    return pd.concat(parts, ignore_index=True)


#: The reading of a comparison with one seed: its interval holds no seed-to-seed variance
#: (``stats``: "one seed: no verdict"; in a Holm family it counts as untested).
ONE_SEED = "one seed: no verdict"


def _interval(seed_values: np.ndarray, passage_var: float, passage_df: float
              ) -> tuple[float, float, float, bool]:
    """``(low, high, p, read)`` of a mean over seeds, as ``stats.t_interval`` combines it
    (``stats.half_width``, ``stats.p_value``): a passage (or group) part ``passage_var`` with
    ``passage_df`` df and, with S >= 2 seeds, a seed part s ** 2 / S with S - 1 df. With one
    seed ``read`` is False: the interval is printed, no verdict is read from it."""
    est = float(np.mean(seed_values))
    if not np.isfinite(est) or not np.isfinite(passage_var):
        return np.nan, np.nan, np.nan, False
    parts = [(passage_var, passage_df)]
    if len(seed_values) >= 2:
        parts.append((float(np.var(seed_values, ddof=1)) / len(seed_values),
                      len(seed_values) - 1))
    half = half_width(parts)
    return est - half, est + half, p_value(est, parts), len(seed_values) >= 2


def cosine_shifts(sims: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """Each cosine's shift from one model to another, beside the global shift.

    ``sims``: ``seed_similarities``; ``pairs``: ``(model, reference)``. A shift is model minus
    reference, paired by seed and training record (each record's cosines averaged; records
    without an own query drop out of ``neg_own`` only); the global shift is the same
    difference of ``q_all``. Intervals (``_interval``): a group part, the variance of the mean
    over records within each seed, and a seed part. Rows ``(pair, cosine)``; ``specific``
    reads the excess's interval against the global shift (not with one seed).
    """
    per = sims.groupby(["model", "seed", "qid"])[[*COSINES, "q_all"]].mean()
    out = []
    for row, ref in pairs:
        seeds = sorted(set(per.loc[row].index.get_level_values("seed"))
                       & set(per.loc[ref].index.get_level_values("seed")))
        if not seeds:
            raise ValueError(f"no seed in common between {row!r} and {ref!r}")
        for cos in COSINES:
            diffs = []  # per seed: (records, [shift, global, excess])
            for s in seeds:
                both = per.loc[(row, s)].merge(per.loc[(ref, s)], left_index=True,
                                               right_index=True, suffixes=("", "_ref"))
                both = both.dropna(subset=[cos, f"{cos}_ref"])
                if len(both) < 2:
                    raise ValueError(f"fewer than two records measure {cos} for {row!r} and "
                                     f"{ref!r} at seed {s}")
                shift, glob = both[cos] - both[f"{cos}_ref"], both["q_all"] - both["q_all_ref"]
                diffs.append(np.stack([shift, glob, shift - glob], 1))
            read = []
            for k in range(3):
                means = np.array([d[:, k].mean() for d in diffs])
                group_var = sum(d[:, k].var(ddof=1) / len(d) for d in diffs) / len(diffs) ** 2
                read.append((float(means.mean()),
                             *_interval(means, group_var, sum(len(d) - 1 for d in diffs))))
            (shift, low, high, _, _), (glob, *_), (excess, e_low, e_high, _, counted) = read
            side = "above" if e_low > 0 else "below" if e_high < 0 else "not distinguishable from"
            out.append({"pair": f"{row} - {ref}", "cosine": cos, "shift": shift,
                        "95% CI low": low, "95% CI high": high, "global shift": glob,
                        "excess over global": excess, "excess CI low": e_low,
                        "excess CI high": e_high,
                        "records per seed": sum(len(d) for d in diffs) // len(seeds),
                        "seeds": len(seeds),
                        "specific": f"{side} the global shift" if counted else ONE_SEED})
    return pd.DataFrame(out).set_index(["pair", "cosine"])


def shift_sentences(shifts: pd.DataFrame, cosines: Sequence[str] = COSINES) -> list[str]:
    """One generated sentence per row of ``cosine_shifts`` (only ``cosines``): the shift, its
    interval, the global shift of all query-passage cosines, and whether the shift exceeds it."""
    return [f"- {pair}, {COSINE_NAMES[cos]}: {interval_text(s, 'shift')} against a global shift of "
            f"{s['global shift']:+.4f}; the excess, "
            f"{interval_text(s, 'excess over global', 'excess CI low', 'excess CI high')}, is "
            f"{s['specific']}." for (pair, cos), s in shifts.iterrows() if cos in cosines]


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

    Per batch (dropout off) CLP's unweighted terms ``CL`` and ``P`` are differentiated
    separately, for the parameters (``g_CL``, ``g_P``) and each hard negative's embedding h';
    each ``lam`` in ``lams`` weighs them afterwards. Rows per batch and ``lam``:
    ``penalty_share`` = ``||lam g_P|| / ||(1 - lam) g_CL + lam g_P||``, ``push_over_pull`` =
    median over negatives of ``||(1 - lam) dCL/dh'|| / ||lam dP/dh'||``, ``cos_params`` (of
    ``g_CL`` and ``g_P``). The pull is weak: ``dCL/ds(q, h')`` is ``p(h'|q) / tau`` per query,
    ``dP/ds(h', h*)`` is ``1 / (number of slots)``.
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
                                   materialize_grads=True)
        g_p = torch.autograd.grad(out.penalty, params + [negs], materialize_grads=True)
        flat = [torch.cat([g.flatten() for g in gs[:-1]]) for gs in (g_cl, g_p)]
        neg_cl, neg_p = (gs[-1].norm(dim=-1).flatten() for gs in (g_cl, g_p))
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


def _corpus_embeddings(model, model_id: str | None, dataset,
                       batch_size: int | None = None) -> tuple[list[str], np.ndarray]:
    """The ids and embeddings of the dataset's whole corpus, in the order (and under the
    evaluation cache key, ``model_id``) in which a run's evaluation embeds it."""
    everything = dataset.test()
    docids = list(everything.corpus)
    return docids, encode_passages(model, [everything.passage_text(d) for d in docids],
                                   batch_size, progress=False, model_id=model_id)


def own_query_retrieval(model, model_id: str | None, dataset,
                        batch_size: int | None = None) -> pd.DataFrame:
    """Retrieval of every training query over the training passages (what ``harm_frame``
    groups): one row per training query with a relevant training passage, ``qid``,
    ``passage`` (its relevant passage: the bootstrap resamples passages), ``ndcg_cut_10`` and
    ``recall_10``. Passages come from the run's evaluation cache when ``model_id`` names it."""
    train = dataset.train()
    qids = sorted(q for q, rels in train.qrels.items() if set(rels) & set(train.corpus))
    docids, emb = _corpus_embeddings(model, model_id, dataset, batch_size)
    keep = np.array([i for i, d in enumerate(docids) if d in train.corpus])
    q_emb = encode_queries(model, [train.queries[q]["text"] for q in qids], batch_size,
                           progress=False)
    scores, idx = search(q_emb, emb[keep], 100)
    run = to_run(qids, [docids[i] for i in keep], scores, idx)
    per_query = evaluate_run(run, {q: train.qrels[q] for q in qids}).per_query
    return pd.DataFrame({"qid": qids, "passage": [sorted(train.qrels[q])[0] for q in qids],
                         "ndcg_cut_10": [per_query["ndcg_cut_10"][q] for q in qids],
                         "recall_10": [per_query["recall_10"][q] for q in qids]})


def ance_window(model, train: Split, query_ids: Sequence[str], config: MiningConfig,
                model_id: str | None = None, batch_size: int | None = None,
                embedding_cache_dir: Path | None = EMBEDDING_CACHE) -> frozenset[str]:
    """Every passage ANCE mining ranked inside its window for ``query_ids``: ranks
    ``config.rank_min..rank_max`` (1-based, a positive taking a rank but never a candidate) of
    ``model``'s ranking of the train passages, ranked as ``mining.mine`` ranks them. The
    picked negatives are among them; the others were as near a query, but not pushed away."""
    qids = list(query_ids)
    index, q_emb = index_and_queries(model, train, qids, model_id, batch_size, False,
                                      embedding_cache_dir)
    depth = min(config.rank_max, len(index.docids))
    _, idx = search(q_emb, index.doc_emb, depth)
    window: set[str] = set()
    for row, qid in enumerate(qids):
        positives = set(positives_of(train, qid))
        if positives:  # mining skips a query without a positive
            window.update(index.docids[i] for i in idx[row][config.rank_min - 1 : depth]
                          if i >= 0 and index.docids[i] not in positives)
    return frozenset(window)


#: The groups the harm compares: the passage served as a hard negative, or it was ranked in
#: the same candidate window and not picked.
HARM_GROUPS = ("own", "control")


@dataclass(frozen=True)
class HarmGroups:
    """Which training passages one seed's harm analysis compares (``harm_frames``)."""

    picked: frozenset[str]  # served as a hard negative: their queries form the own group
    window: frozenset[str]  # ranked in the candidate window (the picked ones included)
    trained: frozenset[str]  # the training queries the runs trained on (set apart)
    exclude: frozenset[str] = frozenset()  # passages left out (the placebo's own negatives)

    def group(self, passage: str) -> str:
        """``own``, ``control``, ``unranked`` (outside the window) or ``excluded``."""
        if passage in self.exclude:
            return "excluded"
        if passage in self.picked:
            return "own"
        return "control" if passage in self.window else "unranked"


def harm_frame(before: pd.DataFrame, after: pd.DataFrame, groups: HarmGroups,
               trained: bool = False) -> pd.DataFrame:
    """Per query not trained on whose passage is in ``HARM_GROUPS`` (``trained``: per own
    query the run DID train on): ``qid``, ``passage``, ``group``, zero-shot score
    ``ndcg_cut_10_zs`` and the ``change`` (fine-tuned - zero-shot nDCG@10), from
    ``own_query_retrieval`` before and after."""
    merged = before.merge(after[["qid", "ndcg_cut_10"]], on="qid", suffixes=("_zs", "_ft"))
    merged["group"] = merged["passage"].map(groups.group)
    merged["change"] = merged["ndcg_cut_10_ft"] - merged["ndcg_cut_10_zs"]
    kept = (merged["group"] == "own") if trained else merged["group"].isin(HARM_GROUPS)
    keep = kept & (merged["qid"].isin(groups.trained) == trained)
    return merged.loc[keep, ["qid", "passage", "group", "ndcg_cut_10_zs", "change"]
                      ].reset_index(drop=True)


def placebo_runs(profile: str, runs: list[StudyRun], split: str,
                 row: str = RANDOM) -> list[StudyRun]:
    """The placebo's runs (``row``, random negatives) on ``split``: the profile's own, else,
    for the extras profile, the cpu profile's (the same configs are the same runs) when every
    one of them has finished (nothing trains here); empty when there are none."""
    own = [r for r in runs if r.row == row and r.split == split]
    partner = {"extras": "cpu"}.get(profile)
    if own or partner is None or missing_cells(partner, [row]):
        return own
    return [r for r in run_study(partner, rows=[row], progress=False) if r.split == split]


def harm_frames(runs: list[StudyRun], dataset, reference: str = ANCE, placebo: str = RANDOM,
                batch_size: int | None = None, progress: bool = True) -> tuple[Frames, Frames]:
    """``(harm frames, trained frames)``, each ``(row, seed) -> frame``, for every run.

    Every row is scored on the groups of the ``reference`` run of its seed (its picks, its
    ``ance_window`` over the queries it trained on, those queries set apart); a row must mine
    as the reference does, except ``placebo`` (random negatives), which must train on the same
    queries: it never pushed those passages away, and the queries whose passage it drew as a
    random negative are left out. Zero-shot scores come from the runs' base model.
    """
    refs = {r.seed: r.result.config for r in runs if r.row == reference}
    base, zero, groups = {}, {}, {}
    frames, trained = {}, {}
    for r in tqdm(runs, desc="own-query retrieval, per run", disable=not progress):
        cfg = r.result.config
        if r.seed not in refs:
            raise ValueError(f"no {reference!r} run at seed {r.seed} to draw the groups from")
        ref = refs[r.seed]
        if cfg.model not in base:
            base[cfg.model] = load_model(cfg.model)
            zero[cfg.model] = own_query_retrieval(base[cfg.model], cfg.model, dataset, batch_size)
        if r.seed not in groups:
            train = dataset.train()
            qids = select_queries(list(train.queries), ref.train_queries, ref.seed)
            picked = frozenset(d for rec in training_records(ref, base[cfg.model])
                               for d in rec["neg_ids"])
            window = ance_window(base[cfg.model], train, qids, ref.mining, ref.model, batch_size)
            groups[r.seed] = HarmGroups(picked, window | picked, frozenset(qids))
        g = groups[r.seed]
        if r.row == placebo:
            fields = ("model", "split", "passages", "val_fraction", "train_queries", "seed")
            if differ := [f for f in fields if getattr(cfg, f) != getattr(ref, f)]:
                raise ValueError(f"{cfg.label} and {ref.label} differ in {differ}: the "
                                 "placebo must train on the reference's queries")
            drawn = training_records(cfg, base[cfg.model])
            g = replace(g, exclude=frozenset(d for rec in drawn for d in rec["neg_ids"]))
        elif cfg.mining != ref.mining:
            raise ValueError(f"{r.row!r} mines differently from {reference!r}")
        after = own_query_retrieval(r.result.load_model(), r.result.run_id, dataset, batch_size)
        frames[(r.row, r.seed)] = harm_frame(zero[cfg.model], after, g)
        trained[(r.row, r.seed)] = harm_frame(zero[cfg.model], after, g, trained=True)
    return frames, trained


#: The fewest queries of each group a stratum of zero-shot nDCG@10 holds in every frame (or
#: the whole group, when it is smaller).
MIN_STRATUM = 10


def zero_shot_strata(frames: Iterable[pd.DataFrame], min_queries: int = MIN_STRATUM
                     ) -> np.ndarray:
    """Strata of zero-shot nDCG@10 chosen from the data so that none is empty.

    nDCG@10 with one relevant passage takes only the values 0 and 1 / log2(r + 1), r = 1..10,
    so the strata start as those exact values; adjacent values merge, lowest first, until a
    stratum holds at least ``min_queries`` own and ``min_queries`` control queries in every
    frame (a group smaller than that: all of it), and a short last stratum joins the one
    below. Returns the strata's ascending upper bounds, the last one ``inf``
    (``np.searchsorted(bounds, score)`` is a query's stratum).
    """
    frames = list(frames)
    if not frames:
        raise ValueError("no harm frame to stratify")
    values = np.unique(np.concatenate([f["ndcg_cut_10_zs"].to_numpy() for f in frames]))
    passages = sorted({p for f in frames for p in f["passage"]})
    # (frames, groups, values): each exact value its own stratum
    counts = np.stack([_harm_sums(f, passages, values)[:, 1].sum(-1) for f in frames])
    need = np.minimum(min_queries, counts.sum(-1))
    bounds, held = [], np.zeros(need.shape)
    for v, value in enumerate(values):
        held += counts[..., v]
        if (held >= need).all():
            bounds.append(float(value))
            held[:] = 0
    # the last stratum reaches up to inf: values above the last full stratum join it
    return np.array([*bounds[:-1], np.inf])


def _harm_sums(frame: pd.DataFrame, passages: list[str], bounds: np.ndarray) -> np.ndarray:
    """(2 groups, 2 [sum, count], strata, passages) of the changes; a query's stratum is
    ``np.searchsorted(bounds, its zero-shot score)``."""
    pos = {p: i for i, p in enumerate(passages)}
    out = np.zeros((len(HARM_GROUPS), 2, len(bounds), len(passages)))
    for g, name in enumerate(HARM_GROUPS):
        part = frame[frame["group"] == name]
        at = (np.searchsorted(bounds, part["ndcg_cut_10_zs"].to_numpy()),
              part["passage"].map(pos).to_numpy())
        np.add.at(out[g, 0], at, part["change"].to_numpy())
        np.add.at(out[g, 1], at, 1)
    return out


def _matched_gap(sums: np.ndarray) -> np.ndarray:
    """Own-group mean change minus the control's within each stratum, averaged with the own
    group's stratum weights (``sums`` from ``_harm_sums`` with the passage axis summed, any
    leading axes). A stratum one group lacks (possible in a bootstrap resample) drops out
    and the weights renormalise; NaN when no stratum holds both."""
    own_sum, own_n = sums[..., 0, 0, :], sums[..., 0, 1, :]
    ctl_sum, ctl_n = sums[..., 1, 0, :], sums[..., 1, 1, :]
    both = (own_n > 0) & (ctl_n > 0)
    weight = np.where(both, own_n, 0.0)
    diff = np.where(both, own_sum / np.maximum(own_n, 1) - ctl_sum / np.maximum(ctl_n, 1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weight * diff).sum(-1) / weight.sum(-1)


@dataclass(frozen=True)
class HarmContrast:
    """One row of ``harm_gaps``: a run's gap (``minus`` None) or the difference of two runs'
    gaps, the claim it tests and the sign of a value that supports it."""

    label: str
    row: str
    minus: str | None
    claim: str
    sign: int  # +1: a positive value supports the claim; -1: a negative one
    tested: bool = True  # in the Holm family (False: a descriptive row)


def harm_family(infonce: str = ANCE, clp: str = CLP, strong: str = CLP_LAMBDA_05,
                placebo: str = RANDOM) -> tuple[HarmContrast, ...]:
    """The declared rows of ``harm_gaps``: the harm gap of each ANCE-trained row, the
    placebo's gap (descriptive), the harm attributable to serving as a negative (InfoNCE's gap
    minus the placebo's), CLP's repair at each lambda and lambda 0.5 against lambda 0.1. Every
    row but the placebo's own gap is one Holm family, whether or not this profile ran it."""
    harm = "serving as a hard negative harms a passage's own queries"
    return (
        HarmContrast(infonce, infonce, None, f"Under InfoNCE, {harm}", -1),
        HarmContrast(clp, clp, None, f"Under CLP (the paper's lambda), {harm}", -1),
        HarmContrast(strong, strong, None, f"Under CLP at lambda 0.5, {harm}", -1),
        HarmContrast(placebo, placebo, None, "Random negatives (the placebo) leave the own group "
                     "behind the control without pushing its passages away", -1, tested=False),
        HarmContrast(f"{infonce} - {placebo}", infonce, placebo, "InfoNCE's harm exceeds the "
                     "placebo's gap: it is due to serving as a negative", -1),
        HarmContrast(f"{clp} - {infonce}", clp, infonce,
                     "CLP (the paper's lambda) repairs part of InfoNCE's harm", +1),
        HarmContrast(f"{strong} - {infonce}", strong, infonce,
                     "CLP at lambda 0.5 repairs part of InfoNCE's harm", +1),
        HarmContrast(f"{strong} - {clp}", strong, clp,
                     "Lambda 0.5 repairs more than the paper's lambda", +1),
    )


#: ``harm_gaps``' verdict for a declared row whose runs this profile did not train.
NOT_RUN = "not run"
#: The placebo's own row: a gap read descriptively, outside the Holm family.
DESCRIPTIVE = "descriptive"
#: ``harm_gaps``' columns (its index: the comparison).
GAP_COLUMNS = ["claim", "own minus matched control", "unadjusted", "95% CI low", "95% CI high",
               "p", "p Holm", "verdict", "seeds", "seed values", "strata"]


def harm_gaps(frames: Frames, family: Sequence[HarmContrast],
              n_boot: int = N_BOOT, seed: int = 0, min_queries: int = MIN_STRATUM
              ) -> pd.DataFrame:
    """The harm, against the control and the placebo, one Holm family.

    A run's gap is its own group's mean change minus the control's within strata of zero-shot
    nDCG@10 (``zero_shot_strata`` over all ``frames``: ``harm_frames``' first part), weighted
    as the own group is; a contrast is two runs' gaps subtracted seed by seed. Intervals
    (``_interval``): a passage part, the bootstrap variance over resampled passages (one
    resample for every row) times C / (C - 1), and a seed part. ``p Holm`` adjusts the tested
    rows of ``family`` together (a row not run, or with one seed, counts as p = 1);
    ``verdict`` reads each against its claim's direction. Rows: ``family``'s labels; columns:
    ``GAP_COLUMNS`` (``unadjusted``: the gap without strata).
    """
    bounds = zero_shot_strata(frames.values(), min_queries)
    passages = sorted({p for f in frames.values() for p in f["passage"]})
    if len(passages) < 2:
        raise ValueError("an interval over passages needs two or more passages")
    rng = np.random.default_rng(seed)
    w = rng.multinomial(len(passages), np.full(len(passages), 1 / len(passages)),
                        size=n_boot).astype(float)
    gaps = {}  # row -> seed -> (gap, unadjusted gap, (B,) replicates)
    for (row, s), frame in frames.items():
        sums = _harm_sums(frame, passages, bounds)
        reps = (sums.reshape(-1, len(passages)) @ w.T).T.reshape(n_boot, *sums.shape[:-1])
        tot = sums.sum(-1).sum(-1)  # no strata: the unadjusted gap
        with np.errstate(invalid="ignore", divide="ignore"):
            raw = tot[0, 0] / tot[0, 1] - tot[1, 0] / tot[1, 1]
        gaps.setdefault(row, {})[s] = (float(_matched_gap(sums.sum(-1))), float(raw),
                                       _matched_gap(reps))
    rows = []
    for c in family:
        parts = [gaps.get(c.row, {})] + ([gaps.get(c.minus, {})] if c.minus else [])
        seeds = sorted(set.intersection(*(set(p) for p in parts)))
        entry = {"comparison": c.label, "claim": c.claim, "tested": c.tested,
                 "seeds": len(seeds)}
        if not seeds:
            rows.append({**entry, "verdict": NOT_RUN})
            continue
        sign = np.array([1.0, -1.0])[: len(parts)]  # a gap, or a gap minus another
        est = sign @ np.array([[p[s][0] for s in seeds] for p in parts])  # (S,)
        raw = sign @ np.array([[p[s][1] for s in seeds] for p in parts])
        reps = sign @ np.array([np.mean([p[s][2] for s in seeds], 0) for p in parts])  # (B,)
        reps = reps[np.isfinite(reps)]  # a resample without a common stratum says nothing
        n = len(passages)
        low, high, p, read = _interval(est, reps.var(ddof=1) * n / (n - 1) if len(reps) > 1
                                       else np.nan, n - 1)
        word = "" if read else ONE_SEED if np.isfinite(p) else "not measurable (an empty group)"
        rows.append({**entry, "own minus matched control": float(est.mean()),
                     "unadjusted": float(raw.mean()), "95% CI low": low, "95% CI high": high,
                     "p": p, "seed values": ", ".join(f"{v:+.4f}" for v in est),
                     "verdict": word})
    out = pd.DataFrame(rows).set_index("comparison").reindex(columns=[*GAP_COLUMNS, "tested"])
    measured = out["tested"].astype(bool) & (out["verdict"] == "")
    if measured.any():
        out.loc[measured, "p Holm"] = holm(out.loc[measured, "p"].tolist(),
                                           sum(c.tested for c in family))
    for label, c in zip(out.index, family, strict=True):
        if measured[label]:
            low, high = sorted((c.sign * out.at[label, "95% CI low"],
                                c.sign * out.at[label, "95% CI high"]))
            out.at[label, "verdict"] = verdict(low, high, out.at[label, "p Holm"])
        elif not c.tested and np.isfinite(out.at[label, "p"]):
            out.at[label, "verdict"] = DESCRIPTIVE
    out["strata"] = len(bounds)
    return out.drop(columns="tested")


#: What a verdict of ``harm_gaps`` says about its row's claim.
VERDICT_WORDS = {"held": "holds", "reversed": "reversed, the interval lies on the other side",
                 "equivalent": f"ruled out, the interval lies inside +/- {SMALLEST_EFFECT}",
                 "inconclusive": "not shown, the interval is too wide",
                 ONE_SEED: "no verdict, one seed (the interval holds no seed-to-seed variance)"}


def repair_reading(gap: pd.Series) -> str:
    """What a "CLP - InfoNCE" row of ``harm_gaps`` says about the repair: from its Holm
    verdict, or, in a table older than the Holm family, from its unadjusted interval (and
    says so)."""
    readings = {"held": "a measurable repair", "reversed": "more harm than InfoNCE",
                "equivalent": "a repair too small to matter, if any",
                "inconclusive": "no measurable repair", NOT_RUN: "not run in this profile",
                ONE_SEED: f"{ONE_SEED} (the interval holds no seed variance)"}
    if isinstance(gap.get("verdict"), str) and gap["verdict"] in readings:
        return readings[gap["verdict"]]
    reading = ("a measurable repair" if gap["95% CI low"] > 0 else "more harm than InfoNCE"
               if gap["95% CI high"] < 0 else "no measurable repair")
    return f"{reading} (unadjusted interval)"


def committed_harm_gaps() -> pd.DataFrame:
    """The extras' committed ``harm_gaps`` table (lambda 0.5 among its rows), indexed by
    comparison; empty when ``make study-extras`` has not run."""
    path = EXTRAS_ROOT / "05_harm_gaps.csv"
    return read_table(path, index_col="comparison") if path.exists() else pd.DataFrame()


def harm_summary(frames: Frames, trained: Frames | None = None) -> pd.DataFrame:
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
    return per_seed.groupby(["row", "group"]).agg(
        {"zero-shot": "mean", "fine-tuned": "mean", "change": "mean", "queries": "min"}
    ).rename(columns={"queries": "queries (fewest over seeds)"})


def _gap_sentence(label: str, g: pd.Series, where: str = "") -> str:
    reading = VERDICT_WORDS.get(g["verdict"], g["verdict"])
    holm_p = f", Holm p {number(g['p Holm'], 'p')}" if pd.notna(g.get("p Holm")) else ""
    more = f"{holm_p}; seeds {g['seed values']}"
    return (f"- {g['claim']}: {reading}{where}. {label}: "
            f"{interval_text(g, 'own minus matched control', more=more)}.")


def harm_sentences(gaps: pd.DataFrame, committed: pd.DataFrame | None = None) -> list[str]:
    """One generated sentence per row of ``harm_gaps``: its claim and what its verdict says,
    with the estimate, the interval and the Holm-adjusted p. A row this profile did not run
    is read from ``committed`` (the extras' table, ``committed_harm_gaps``) when that table
    holds it with a verdict (its own Holm family), else said to be not run."""
    committed = committed if committed is not None else pd.DataFrame()
    lines = []
    for label, g in gaps.iterrows():
        c = committed.loc[label] if label in committed.index else {}
        if g["verdict"] == NOT_RUN and c.get("verdict") in VERDICT_WORDS:
            lines.append(_gap_sentence(label, c, " in `make study-extras`' own family"))
        elif g["verdict"] == NOT_RUN:
            lines.append(f"- {g['claim']}: not run in this profile.")
        elif g["verdict"] == DESCRIPTIVE:
            lines.append(f"- {g['claim']}: a descriptive gap of "
                         f"{interval_text(g, 'own minus matched control')}, the part of a gap "
                         "not due to serving as a negative.")
        elif g["verdict"] in VERDICT_WORDS:
            lines.append(_gap_sentence(label, g))
        else:
            lines.append(f"- {g['claim']}: {g['verdict']}.")
    return lines


def what_survives(gaps: pd.DataFrame, shifts: pd.DataFrame,
                  committed: pd.DataFrame | None = None) -> list[str]:
    """The chapter's findings, generated: which claims of the harm family hold after the
    zero-shot strata, the placebo and Holm's adjustment (``harm_gaps``), which are reversed,
    ruled out or not shown, the rows this profile did not run (as ``harm_sentences`` reads
    them), and how far the negatives' shift toward their own queries exceeds the global shift
    of all query-passage cosines (``cosine_shifts``)."""
    claims = {v: [g["claim"] for _, g in gaps.iterrows() if g["verdict"] == v]
              for v in VERDICT_WORDS}
    lines = ["What survives the zero-shot strata, the placebo and Holm's adjustment: "
             + ("; ".join(claims["held"]) + "." if claims["held"]
                else "none of the harm family's claims.")]
    for v, prefix in (("reversed", "Reversed"),
                      ("equivalent", "Ruled out as smaller than the smallest effect that matters"),
                      ("inconclusive", "Not shown (an interval too wide)"),
                      (ONE_SEED, "No verdict with one seed")):
        if claims[v]:
            lines.append(f"{prefix}: " + "; ".join(claims[v]) + ".")
    lines += [line for line, v in zip(harm_sentences(gaps, committed), gaps["verdict"],
                                      strict=True) if v == NOT_RUN]
    specific = [f"{pair}: {s['excess over global']:+.4f}, {s['specific']}"
                for (pair, cos), s in shifts.iterrows() if cos == "neg_own"]
    lines.append("The hard negatives' shift toward their own queries beyond the global shift of "
                 "all query-passage cosines: " + "; ".join(specific) + ".")
    return lines


# --------------------------------------------------------------------------- the temperature


def push_weights(model, records: list[dict], taus: tuple[float, ...] = (0.02, 0.05),
                 batch_size: int | None = None) -> pd.DataFrame:
    """Where InfoNCE's push lands among a query's own hard negatives, at each temperature.

    Per mined record, ``pi = softmax(cos(q, .) / tau)`` over the positive and the negatives
    (no in-batch negatives: the official code's setting). Rows per ``tau``: ``loss`` (mean
    -log pi_pos), ``negative_mass`` (mean 1 - pi_pos), ``top_negative_share`` (mean share of
    the negatives' mass on the highest-scored one) and ``false_negative_share`` (on negatives
    flagged in ``neg_answer_hit``, likely false negatives, over records that have any).
    """
    q, emb, row_of = _encode(model, records, batch_size)
    out = []
    for tau in taus:
        loss, mass, top, fn = [], [], [], []
        for i, r in enumerate(records):
            if not r["neg"]:
                continue  # a query left without negatives by the filters has no push to share
            cand = np.stack([emb[row_of[r["pos"]]], *[emb[row_of[n]] for n in r["neg"]]])
            pi = softmax(cand @ q[i] / tau)
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


#: Where each model's corpus spread is kept, by model id and data checksum; ``make study``
#: commits it with the results (``machinery.publish``), so a reopened chapter reads it without
#: the trained model.
SPREADS = "spreads"


def corpus_spread(path: str, model_id: str, dataset) -> dict[str, float]:
    """``spread`` of the embeddings of the dataset's whole corpus under the model at ``path``
    (a model name or a run's ``model/``; ``model_id``, its run id or name, names its
    evaluation cache entry), kept in ``results/spreads``: read from there, then from the
    committed results, before the model is loaded or anything is embedded."""
    name = f"{slug(model_id)}-{dataset.checksum[:8]}.json"
    for root in (results_dir(), committed_dir()):
        if (root / SPREADS / name).exists():
            return json.loads((root / SPREADS / name).read_text(encoding="utf-8"))
    _, emb = _corpus_embeddings(load_model(path), model_id, dataset)
    out = {k: float(v) for k, v in spread(emb).items()}
    write_json(results_dir() / SPREADS / name, out)
    return out


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
    spreads = pd.DataFrame({row: corpus_spread(path, mid, dataset)
                            for row, path, mid in shown}).T
    score = table2.xs(split)[f"{metric} mean"]
    spreads[f"{metric} (test, mean over seeds)"] = [score[row] for row in spreads.index]
    cos = spreads["mean_pair_cosine"]
    lines, collapse = [], []
    for row in recipe_rows:
        twin = PAPER_RECIPE_COUNTERPARTS[row]
        v, w, zs = score[row], score[twin], score[ZERO_SHOT]
        lines.append(f"{row}: {v:.4f} against zero-shot {zs:.4f} ({v - zs:+.4f}) and the "
                     f"study's {twin} {w:.4f} ({v - w:+.4f}).")
        if twin in cos.index and row in cos.index:
            collapse.append(f"{row} leaves random passage pairs at mean cosine {cos[row]:.3f}, "
                            f"the study's {twin} at {cos[twin]:.3f}, zero-shot at "
                            f"{cos[ZERO_SHOT]:.3f}: "
                            f"{'more' if cos[row] > cos[twin] else 'less'} collapsed than "
                            "in-batch training.")
    top = pushes["top_negative_share"]
    lines.append(f"At tau 0.02 the top-scored negative takes {top.loc[0.02]:.0%} of a query's "
                 f"push, at 0.05 {top.loc[0.05]:.0%}: the lower temperature "
                 + ("concentrates each update on fewer passages." if top.loc[0.02] > top.loc[0.05]
                    else "does not concentrate it."))
    return pushes, spreads, lines + collapse
