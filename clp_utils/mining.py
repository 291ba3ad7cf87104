"""Training data for the study: random and ANCE negatives, false-negative filters, H*.

For each training query, ``mine`` picks ``num_negatives`` negative passages and, for each, the
negative's own queries (H* in the CLP paper: the TRAIN queries for which that passage IS
relevant, never the query itself):

- ``strategy="random"``: seeded per-query draws among train passages that are not positives.
- ``strategy="ance"``: the model's own ranking of the TRAIN passages (exact faiss search).
  Ranks ``rank_min..rank_max`` (1-based over the full ranking, so a positive inside the window
  takes a rank but is never a candidate: FlagEmbedding's ``range_for_sampling``) are the
  candidates; ``pick="top"`` keeps the best ranked survivors, ``pick="sample"`` draws them.

Filters (``FILTERS``, in order; a candidate is counted by the first that drops it):
``max_score``, ``abs_margin`` (score > pos - abs_margin), ``rel_margin`` (score > pos - |pos| *
rel_margin: NV-Retriever's TopK-PercPos is 0.05; ``|pos|`` as in sentence-transformers, so the
rule does not flip for negative scores), ``answer`` (the passage contains an answer string,
case-insensitive on word boundaries, as DPR's ``has_answer``) and, with
``missing_neg_query="drop"``, a passage without own query. ``pos`` is the query's lowest
positive score (sentence-transformers' choice).

Why not sentence-transformers' ``mine_hard_negatives``: it gives other negatives. Its
``range_min`` counts the candidates left once the positives (and filtered ones) are removed,
so a positive inside the window shifts it; it merges queries of equal text (and their
positives), returns texts rather than ids, samples with the global ``random`` state, has no
answer or own-query filter, and encodes on its own, not with the study's cached embeddings.

The answer check also measures false negatives: ``summary["fn_rate_candidates"]`` is the share
of examined candidates holding an answer (ANCE: the window; random: the draws made),
``summary["fn_rate_negatives"]`` the share among the negatives kept. A query left with fewer
negatives than asked is never padded (``n_missing > 0``, counted by ``short_queries``).

Records are JSONL in the official code's field names (``query``, ``pos``, ``neg``, ``neg_q``)
plus ids and scores, cached under a hash of the data, the model id, every ``MiningConfig``
field and the query subset. ANCE rounds call ``mine`` again with the partly trained model.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from clp_utils.base.io import read_jsonl, stable_hash, write_json, write_jsonl
from clp_utils.base.paths import results_dir
from clp_utils.data import Split
from clp_utils.retrieval import EMBEDDING_CACHE, encode_passages, encode_queries, search

#: Bumped when the record format or the mining rules change, so old caches are not reused.
FORMAT_VERSION = 1
STRATEGIES = ("random", "ance")
PICKS = ("top", "sample")
MISSING = ("keep", "drop")
PSEUDO = (None, "title", "first_sentence")
#: Drop reasons, in the order the filters are applied.
FILTERS = ("max_score", "abs_margin", "rel_margin", "answer", "no_neg_query")
SCORE_CHUNK = 256


@dataclass(frozen=True)
class MiningConfig:
    """Everything that decides which negatives (and which H*) a query gets (every field enters
    the cache key; ``rank_min``/``rank_max`` are ignored by ``strategy="random"``)."""

    strategy: str = "ance"
    num_negatives: int = 4
    rank_min: int = 3
    rank_max: int = 30
    pick: str = "top"
    max_score: float | None = None
    abs_margin: float | None = None
    rel_margin: float | None = None
    answer_filter: bool = True
    neg_queries: str | int = 1
    missing_neg_query: str = "keep"
    pseudo_query: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name, allowed in (("strategy", STRATEGIES), ("pick", PICKS),
                              ("missing_neg_query", MISSING), ("pseudo_query", PSEUDO)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.num_negatives < 1:
            raise ValueError("num_negatives must be >= 1")
        if not 1 <= self.rank_min <= self.rank_max:
            raise ValueError(f"need 1 <= rank_min <= rank_max, got {self.rank_min}, "
                             f"{self.rank_max}")
        if self.neg_queries != "all" and not (
            isinstance(self.neg_queries, int) and self.neg_queries >= 1
        ):
            raise ValueError(f"neg_queries must be 'all' or an int >= 1, got {self.neg_queries!r}")
        for name in ("abs_margin", "rel_margin"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0")


@dataclass
class MinedSet:
    """Mined records (``qid, query, pos_id, pos, pos_score, pos_rank, neg_ids, neg, neg_scores,
    neg_ranks, neg_answer_hit, neg_q_ids, neg_q, n_missing``; ``neg_q[j]``: the H* texts of
    negative ``j``), their counts, and the cached JSONL they were saved to."""

    records: list[dict]
    summary: dict
    path: Path | None = None


# --------------------------------------------------------------------------- text checks


def _norm(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: the form both sides of the answer check take."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def answer_matcher(answers: Sequence[str]) -> Callable[[str], bool] | None:
    """A test ``f(text) -> bool`` for any of ``answers`` as whole words in a text normalised
    by ``_norm``, or ``None`` without answers. Words are bounded by ``(?<!\\w)...(?!\\w)``,
    not ``\\b``: an answer may start or end with punctuation ("$5", "U.S.")."""
    alts = sorted({a for a in (_norm(x) for x in answers) if a}, key=len, reverse=True)
    if not alts:
        return None
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, alts)) + r")(?!\w)")
    # Plain substring search first: most candidates hold no answer at all.
    return lambda text: any(a in text for a in alts) and pattern.search(text) is not None


def contains_answer(text: str, answers: Sequence[str]) -> bool:
    """True if ``text`` contains one of ``answers`` as whole words, ignoring case (DPR style).

    Example:
        >>> contains_answer("He moved to Paris in 1920.", ["paris"])
        True
        >>> contains_answer("A Parisian cafe.", ["Paris"])
        False
    """
    match = answer_matcher(answers)
    return bool(match and match(_norm(text)))


def first_sentence(text: str) -> str:
    """The passage's first sentence (up to the first ., ! or ? followed by a space)."""
    return re.split(r"(?<=[.!?])\s+", " ".join(text.split()), maxsplit=1)[0]


def filter_reasons(
    scores: np.ndarray,
    pos_score: float | np.ndarray,
    answer_hit: np.ndarray,
    has_query: np.ndarray,
    config: MiningConfig,
) -> np.ndarray:
    """For each candidate, the first filter of ``FILTERS`` that drops it, or ``""`` if kept
    (one query's candidates with a scalar ``pos_score``, or a table with one per row)."""
    c = config
    scores = np.asarray(scores, dtype=np.float64)
    pos = np.broadcast_to(np.asarray(pos_score, dtype=np.float64), scores.shape)
    # A rule that is off is False, which drops nothing.
    hits = (c.max_score is not None and scores > c.max_score,
            c.abs_margin is not None and scores > pos - c.abs_margin,
            c.rel_margin is not None and scores > pos - np.abs(pos) * c.rel_margin,
            c.answer_filter and np.asarray(answer_hit, dtype=bool),
            c.missing_neg_query == "drop" and ~np.asarray(has_query, dtype=bool))
    reason = np.full(scores.shape, "", dtype=object)
    for name, hit in zip(FILTERS, hits, strict=True):
        reason[(reason == "") & hit] = name
    return reason


# --------------------------------------------------------------------------- the index


@dataclass
class TrainIndex:
    """The train side as mining sees it: passages, their embeddings and their own queries."""

    split: Split
    docids: list[str]
    doc_emb: np.ndarray
    doc_queries: dict[str, list[str]]  # docid -> its train qids
    norm_text: list[str]  # each passage as the answer check reads it (``_norm``)


def index_and_queries(model, train: Split, qids: Sequence[str], model_id: str | None,
                      batch_size: int | None, progress: bool,
                      embedding_cache_dir: Path | None) -> tuple[TrainIndex, np.ndarray]:
    """The train index (passage embeddings cached by ``model_id``) and the embeddings of the
    training queries ``qids`` (another id is a ``KeyError``); a training model stays in it."""
    check_train(train)
    unknown = [q for q in qids if q not in train.queries]
    if unknown:
        raise KeyError(f"not training queries of this split: {unknown[:5]}")
    docids = list(train.corpus)
    texts = [train.passage_text(d) for d in docids]
    doc_queries: dict[str, list[str]] = {}
    for qid in sorted(train.qrels):
        for docid in sorted(train.relevant(qid)):
            doc_queries.setdefault(docid, []).append(qid)
    was_training = getattr(model, "training", None)
    try:
        doc_emb = encode_passages(model, texts, batch_size, progress, model_id,
                                  cache_dir=embedding_cache_dir)
        q_emb = encode_queries(model, [train.queries[q]["text"] for q in qids], batch_size,
                               progress)
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    return TrainIndex(train, docids, doc_emb, doc_queries, [_norm(t) for t in texts]), q_emb


def check_train(split: Split) -> None:
    """Refuse any split but the train one (negatives never come from the test side)."""
    if split.name != "train":
        raise ValueError(
            f"mining takes the train split (RetrievalDataset.train()), got {split.name!r}: "
            "negatives and their queries must never come from test passages or test queries"
        )


def positives_of(split: Split, qid: str) -> list[str]:
    """The query's relevant passages, most relevant first, ties by id."""
    rels = split.qrels.get(qid, {})
    return sorted((d for d, r in rels.items() if r > 0), key=lambda d: (-rels[d], d))


def _query_rng(seed: int, qid: str, stream: int) -> np.random.Generator:
    # Per-query streams: a query gets the same draws whichever subset of queries is mined.
    return np.random.default_rng([seed, stream, zlib.crc32(qid.encode())])


# --------------------------------------------------------------------------- mining


def mine(
    model,
    train: Split,
    config: MiningConfig,
    model_id: str | None = None,
    data_checksum: str = "",
    query_ids: Sequence[str] | None = None,
    cache_dir: Path | None = Path("cache", "mining"),
    progress: bool = True,
    batch_size: int | None = None,
    embedding_cache_dir: Path | None = EMBEDDING_CACHE,
) -> MinedSet:
    """Mine negatives and their own queries for the training queries of ``train``.

    Args:
        model: a sentence-transformers model; a model in training mode is switched to eval to
            encode and switched back.
        train: ``RetrievalDataset.train()``; any other split raises ``ValueError``.
        config: the strategy, window, filters, H* options and seed.
        model_id: names the weights (``"minilm"``, ``"<run>-epoch1"``) for the passage
            embedding and result caches; ``None`` (an in-memory model) caches nothing.
        data_checksum: ``RetrievalDataset.checksum``, keyed with a hash of the split's content.
        query_ids: mine only these training queries, in this order (default all).
        cache_dir: where mined sets are saved (``None``: not saved; relative: under
            ``paths.results_dir()``).
        progress, batch_size, embedding_cache_dir: as in ``retrieval.encode_passages``.

    Returns:
        A ``MinedSet``: one record per query with a positive, the summary counts (short
        queries, drops per filter, negatives without own query, false-negative rates) and
        the cached JSONL path.

    Example:
        >>> ds = load_squadshifts("reddit")
        >>> mined = mine(load_model("minilm"), ds.train(), MiningConfig(), "minilm", ds.checksum)
        >>> mined.records[0]["neg"], mined.records[0]["neg_q"]
    """
    check_train(train)
    qids = list(train.queries) if query_ids is None else list(query_ids)
    key, path = None, None
    if model_id is not None and cache_dir is not None:
        key = mining_key(train, config, model_id, data_checksum, qids)
        path = results_dir() / cache_dir / f"{key}.jsonl"
        summary_path = path.with_suffix(".summary.json")
        if path.exists() and summary_path.exists():
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
            return MinedSet(read_jsonl(path), {**summary, "from_cache": True}, path)

    start = time.perf_counter()
    index, q_emb = index_and_queries(model, train, qids, model_id, batch_size, progress,
                                     embedding_cache_dir)
    records, counts = _mine_records(index, qids, q_emb, config)
    summary = {"key": key, "model_id": model_id, "data_checksum": data_checksum,
               "config": asdict(config), **counts,
               "seconds": round(time.perf_counter() - start, 3)}
    if path is not None:
        write_json(path.with_suffix(".summary.json"), summary)
        write_jsonl(path, records)
    return MinedSet(records, {**summary, "from_cache": False}, path)


def mining_key(
    train: Split,
    config: MiningConfig,
    model_id: str | None,
    data_checksum: str,
    query_ids: Sequence[str],
) -> str:
    """The cache key: data (checksum and content), model, every config field, query subset."""
    content = stable_hash(
        [train.corpus, train.queries, train.qrels, train.title_in_text], length=20
    )
    return stable_hash(
        [FORMAT_VERSION, data_checksum, content, model_id, asdict(config), list(query_ids)],
        length=20,
    )


def _mine_records(
    index: TrainIndex, qids: list[str], q_emb: np.ndarray, config: MiningConfig
) -> tuple[list[dict], dict]:
    """One record per query with a positive, and the summary counts."""
    split, k = index.split, config.num_negatives
    row_of = {d: i for i, d in enumerate(index.docids)}
    depth = min(config.rank_max, len(index.docids))
    if config.strategy == "ance":
        top_idx = search(q_emb, index.doc_emb, depth)[1]
    counts = {"queries": 0, "queries_without_positive": 0, "num_negatives_asked": k,
              "negatives": 0, "short_queries": 0, "missing_negatives": 0,
              "candidates_examined": 0, "candidates_with_answer": 0,
              "negatives_with_answer": 0, "dropped": dict.fromkeys(FILTERS, 0),
              "negatives_without_own_query": 0, "own_queries_total": 0}
    records = []
    for row, qid in enumerate(qids):
        if row % SCORE_CHUNK == 0:
            # One matmul per chunk of queries: per-query matvecs pay BLAS threading overhead.
            chunk = q_emb[row : row + SCORE_CHUNK] @ index.doc_emb.T
        positives = positives_of(split, qid)
        if not positives:
            counts["queries_without_positive"] += 1
            continue
        scores = chunk[row % SCORE_CHUNK]
        pos_idx = [row_of[d] for d in positives]
        examine = partial(_examine, index, scores=scores, margin_pos=scores[pos_idx].min(),
                          match=answer_matcher(split.queries[qid].get("answers", [])),
                          qid=qid, config=config, counts=counts)
        rng = _query_rng(config.seed, qid, 0)
        if config.strategy == "ance":
            window = top_idx[row][config.rank_min - 1 : depth]
            chosen, hits = examine(np.array([i for i in window if i >= 0 and i not in pos_idx],
                                            dtype=np.int64))
            if config.pick == "sample" and len(chosen) > k:
                take = np.sort(rng.choice(len(chosen), k, replace=False))
                chosen, hits = chosen[take], hits[take]
            chosen, hits = chosen[:k], hits[:k]
        else:
            # Walk a seeded permutation, drawing as many as are still missing each time, so the
            # counts describe exactly the draws made.
            order = rng.permutation(len(index.docids))
            order = order[~np.isin(order, pos_idx)]
            chosen_l, hits_l, start = [], [], 0
            while len(chosen_l) < k and start < len(order):
                n = k - len(chosen_l)
                kept, kept_hits = examine(order[start : start + n])
                chosen_l += kept.tolist()
                hits_l += kept_hits.tolist()
                start += n
            chosen, hits = np.array(chosen_l, dtype=np.int64), np.array(hits_l, dtype=bool)
        records.append(_record(index, qid, pos_idx[0], scores, chosen, hits, config, counts))
    counts["fn_rate_candidates"] = counts["candidates_with_answer"] / max(
        1, counts["candidates_examined"]
    )
    counts["fn_rate_negatives"] = counts["negatives_with_answer"] / max(1, counts["negatives"])
    return records, counts


def _examine(index: TrainIndex, cands: np.ndarray, scores: np.ndarray, margin_pos: float,
             match: Callable[[str], bool] | None, qid: str, config: MiningConfig,
             counts: dict) -> tuple[np.ndarray, np.ndarray]:
    """Filter one query's candidates and count them: (the kept ones, their answer hits)."""
    hits = np.array([bool(match and match(index.norm_text[i])) for i in cands], dtype=bool)
    has_q = [bool(_own(index, index.docids[i], qid, config)[0]) for i in cands]
    reasons = filter_reasons(scores[cands], margin_pos, hits, has_q, config)
    counts["candidates_examined"] += len(cands)
    counts["candidates_with_answer"] += int(hits.sum())
    for r in reasons[reasons != ""]:
        counts["dropped"][r] += 1
    return cands[reasons == ""], hits[reasons == ""]


def _record(index: TrainIndex, qid: str, pos: int, scores: np.ndarray, chosen: np.ndarray,
            hits: np.ndarray, config: MiningConfig, counts: dict) -> dict:
    """One mined group in the official code's field names, its counts added to ``counts``."""
    split, pos_id = index.split, index.docids[pos]
    neg_ids = [index.docids[i] for i in chosen]
    neg_q_ids, neg_q = _own_queries(index, qid, neg_ids, config)
    neg_scores = scores[chosen]
    n_missing = config.num_negatives - len(neg_ids)
    counts["queries"] += 1
    counts["negatives"] += len(neg_ids)
    counts["short_queries"] += int(n_missing > 0)
    counts["missing_negatives"] += n_missing
    counts["negatives_with_answer"] += int(hits.sum())
    counts["negatives_without_own_query"] += sum(1 for q in neg_q if not q)
    counts["own_queries_total"] += sum(len(q) for q in neg_q)
    return {"qid": qid, "query": split.queries[qid]["text"], "pos_id": pos_id,
            "pos": split.passage_text(pos_id), "pos_score": float(np.float32(scores[pos])),
            "pos_rank": int(1 + (scores > scores[pos]).sum()),
            "neg_ids": neg_ids, "neg": [split.passage_text(d) for d in neg_ids],
            "neg_scores": [float(np.float32(s)) for s in neg_scores],
            "neg_ranks": [int(1 + (scores > s).sum()) for s in neg_scores],
            "neg_answer_hit": [bool(h) for h in hits], "neg_q_ids": neg_q_ids,
            "neg_q": neg_q, "n_missing": n_missing}


def _own(index: TrainIndex, docid: str, qid: str,
         config: MiningConfig) -> tuple[list[str], list[str]]:
    """A passage's possible H*: (ids, texts) of its train queries other than ``qid`` (which can
    reach a negative only through a second positive, never a candidate; the rule must not rely
    on that), or of its pseudo query."""
    split, kind = index.split, config.pseudo_query
    if kind is not None:
        doc = split.corpus[docid]
        text = (doc.get("title") or "").strip() if kind == "title" else first_sentence(doc["text"])
        return ([f"{docid}#{kind}"], [text]) if text else ([], [])
    own = [q for q in index.doc_queries.get(docid, ()) if q != qid]
    return own, [split.queries[q]["text"] for q in own]


def _own_queries(index: TrainIndex, qid: str, neg_ids: list[str],
                 config: MiningConfig) -> tuple[list[list[str]], list[list[str]]]:
    """H* of each negative: its own queries (all, or ``neg_queries`` drawn with the seed)."""
    ids_out, texts_out = [], []
    rng, k = _query_rng(config.seed, qid, 1), config.neg_queries
    for docid in neg_ids:
        ids, texts = _own(index, docid, qid, config)
        if k != "all" and len(ids) > k:
            take = sorted(rng.choice(len(ids), k, replace=False))
            ids, texts = [ids[i] for i in take], [texts[i] for i in take]
        ids_out.append(ids)
        texts_out.append(texts)
    return ids_out, texts_out
