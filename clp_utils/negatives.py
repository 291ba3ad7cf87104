"""Looking at mined negatives: false-negative tables, score frames, neighbourhoods, triples.

Chapter 01's analysis of what ``clp_utils.mining`` produces, as tables and text.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from clp_utils.data import Split
from clp_utils.mining import (
    MinedSet,
    MiningConfig,
    answer_matcher,
    check_train,
    filter_reasons,
    index_and_queries,
    positives_of,
)
from clp_utils.retrieval import EMBEDDING_CACHE, encode_passages, encode_queries, search


def candidate_frame(model, train: Split, query_ids: Sequence[str] | None = None, depth: int = 200,
                    model_id: str | None = None, batch_size: int | None = None,
                    progress: bool = True,
                    embedding_cache_dir: Path | None = EMBEDDING_CACHE) -> pd.DataFrame:
    """The model's ranking of train passages for each query, one row per (query, rank), for
    ``false_negative_table``: ``qid, docid, rank, score, pos_score`` (lowest positive score),
    ``is_pos``, ``answer_hit``, ``n_own_queries`` (the passage's other train queries).
    """
    check_train(train)
    qids = list(train.queries) if query_ids is None else list(query_ids)
    index, q_emb = index_and_queries(model, train, qids, model_id, batch_size, progress,
                                      embedding_cache_dir)
    depth = min(depth, len(index.docids))
    scores, idx = search(q_emb, index.doc_emb, depth)
    pos_of = {d: i for i, d in enumerate(index.docids)}
    rows = []
    for row, qid in enumerate(qids):
        positives = set(positives_of(train, qid))
        if not positives:
            continue
        pos_score = float(min(index.doc_emb[pos_of[d]] @ q_emb[row] for d in positives))
        match = answer_matcher(train.queries[qid].get("answers", []))
        for r, (s, i) in enumerate(zip(scores[row], idx[row], strict=True), start=1):
            docid = index.docids[i]
            own = [q for q in index.doc_queries.get(docid, ()) if q != qid]
            rows.append((qid, docid, r, float(s), pos_score, docid in positives,
                         bool(match and match(index.norm_text[i])), len(own)))
    columns = ["qid", "docid", "rank", "score", "pos_score", "is_pos", "answer_hit"]
    return pd.DataFrame(rows, columns=[*columns, "n_own_queries"])


def false_negative_table(frame: pd.DataFrame, windows: Sequence[tuple[int, int]],
                         filters: dict[str, MiningConfig]) -> pd.DataFrame:
    """False-negative rate of the non-positive candidates of each rank window ``(lo, hi)``
    under each named config's filters: ``candidates``, ``kept_share`` (share kept),
    ``fn_rate_before`` (share holding an answer) and ``fn_rate_after`` (among the kept).
    """
    rows = []
    cand = frame[~frame["is_pos"]]
    for lo, hi in windows:
        win = cand[(cand["rank"] >= lo) & (cand["rank"] <= hi)]
        for name, cfg in filters.items():
            reasons = filter_reasons(win["score"].to_numpy(), win["pos_score"].to_numpy(),
                                     win["answer_hit"].to_numpy(),
                                     win["n_own_queries"].to_numpy() > 0, cfg)
            kept = win[reasons == ""]
            rows.append({"window": f"{lo}-{hi}", "filter": name, "candidates": len(win),
                         "kept_share": len(kept) / max(1, len(win)),
                         # (the mean of no candidates is NaN)
                         "fn_rate_before": float(win["answer_hit"].mean()),
                         "fn_rate_after": float(kept["answer_hit"].mean())})
    return pd.DataFrame(rows)


def negatives_frame(mined: MinedSet, label: str | None = None) -> pd.DataFrame:
    """One row per mined negative: ``qid, docid, rank, score, pos_score, answer_hit,
    n_own_queries`` and ``label`` (default: the strategy), for plots and tables."""
    label = label or mined.summary.get("config", {}).get("strategy", "")
    rows = [(r["qid"], d, rk, s, r["pos_score"], h, len(q), label) for r in mined.records
            for d, rk, s, h, q in zip(r["neg_ids"], r["neg_ranks"], r["neg_scores"],
                                      r["neg_answer_hit"], r["neg_q"], strict=True)]
    cols = ["qid", "docid", "rank", "score", "pos_score", "answer_hit", "n_own_queries", "label"]
    return pd.DataFrame(rows, columns=cols)


def neighbourhood(model, train: Split, record: dict, n_background: int = 100,
                  model_id: str | None = None, batch_size: int | None = None) -> pd.DataFrame:
    """Texts around one mined record with their embeddings (``kind, id, text, emb``), for a
    2-D picture: the query, its positive, its negatives and their own queries, and the
    ``n_background`` train passages ranked highest for the query (``model_id``: cached)."""
    check_train(train)
    q_emb = encode_queries(model, [record["query"]], batch_size, progress=False)
    docids = list(train.corpus)
    doc_emb = encode_passages(model, [train.passage_text(d) for d in docids], batch_size, False,
                              model_id)
    _, idx = search(q_emb, doc_emb, min(n_background, len(docids)))
    shown = {record["pos_id"], *record["neg_ids"]}
    items = [("query", record["qid"], record["query"], q_emb[0]),
             ("positive", record["pos_id"], record["pos"], doc_emb[docids.index(record["pos_id"])])]
    items += [("negative", d, train.passage_text(d), doc_emb[docids.index(d)])
              for d in record["neg_ids"]]
    own = [(qid, t) for ids, texts in zip(record["neg_q_ids"], record["neg_q"], strict=True)
           for qid, t in zip(ids, texts, strict=True)]
    if own:
        own_emb = encode_queries(model, [t for _, t in own], batch_size, progress=False)
        items += [("negative's query", q, t, e) for (q, t), e in zip(own, own_emb, strict=True)]
    items += [("other passage", docids[i], train.passage_text(docids[i]), doc_emb[i])
              for i in idx[0] if docids[i] not in shown]
    return pd.DataFrame(items, columns=["kind", "id", "text", "emb"])


def mining_summary_frame(mined: dict[str, MinedSet]) -> pd.DataFrame:
    """One row per named mining result: its summary's counts and false-negative rates."""
    rows = {}
    for name, m in mined.items():
        s = m.summary
        rows[name] = {"queries": s["queries"], "negatives": s["negatives"],
                      "short queries": s["short_queries"],
                      "candidates examined": s["candidates_examined"],
                      "dropped": sum(s["dropped"].values()),
                      "fn_rate_candidates": s["fn_rate_candidates"],
                      "fn_rate_negatives": s["fn_rate_negatives"],
                      "negatives without own query": s["negatives_without_own_query"],
                      "own queries per negative": s["own_queries_total"] / max(1, s["negatives"])}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("configuration")


def show_record(record: dict, train: Split, chars: int = 260) -> str:
    """One mined group as text: the query and its answers, the positive, and each negative
    with rank, score, ANSWER when it contains one, and its own queries (H*)."""
    q = train.queries[record["qid"]]
    lines = [f"QUERY {record['qid']}: {q['text']}   answers: {q['answers']}",
             f"  POS  rank {record['pos_rank']:>3}  score {record['pos_score']:.3f}  "
             + textwrap.shorten(record["pos"], chars)]
    for j in range(len(record["neg_ids"])):
        flag = "ANSWER" if record["neg_answer_hit"][j] else "      "
        lines.append(f"  NEG  rank {record['neg_ranks'][j]:>3}  score "
                     f"{record['neg_scores'][j]:.3f}  {flag}  "
                     + textwrap.shorten(record["neg"][j], chars))
        lines += [f"         H*: {text}" for text in record["neg_q"][j]]
    return "\n".join(lines) + "\n"
