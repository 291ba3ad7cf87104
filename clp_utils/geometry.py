"""The mechanism the paper claims, measured: where negatives sit relative to their own queries.

CLP's penalty pulls each hard negative toward the queries it answers, so that pushing it away
from query i does not wreck it for them (the paper's Figure 1). ``similarity_frame`` measures,
for a model and a set of mined training records, the three cosines that tell whether that
happened: query-positive, query-hard negative, and hard negative-its own query.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clp_utils.evaluation import encode_passages, encode_queries


def similarity_frame(model, records: list[dict], label: str, batch_size: int = 64) -> pd.DataFrame:
    """One row per (record, negative, own query) with the three cosines under ``model``.

    Columns: ``model`` (= ``label``), ``qid``, ``neg_id``, ``q_pos`` (cos query-positive),
    ``q_neg`` (cos query-negative), ``neg_own`` (cos negative-one of its own queries; NaN when
    the negative has none).
    """
    queries = [r["query"] for r in records]
    passages = list(dict.fromkeys([r["pos"] for r in records] + [n for r in records for n in r["neg"]]))
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


def umap_2d(emb: np.ndarray, seed: int = 0, n_neighbors: int = 15, method: str = "umap") -> np.ndarray:
    """2-D map of (normalised) embeddings: UMAP with cosine distance, or PCA (``method="pca"``,
    and always when there are fewer than 8 points)."""
    if method == "pca" or len(emb) < 8:
        from sklearn.decomposition import PCA

        return PCA(2, random_state=seed).fit_transform(emb)
    import umap

    reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(emb) - 1), metric="cosine", random_state=seed)
    return reducer.fit_transform(emb)
