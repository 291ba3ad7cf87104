"""Evaluation that IR people trust: exact search, trec_eval-exact metrics, paired tests.

- ``encode_queries`` / ``encode_passages``: batched, progress bar, L2-normalised float32,
  the model's own "query"/"passage" prompts when it has them; passage embeddings of a named
  model are cached on disk (keyed by model id and the texts), since notebooks reuse them.
- ``search``: exact inner-product search with faiss (``IndexFlatIP``), top 100.
- ``evaluate_run``: ``ndcg_cut_5``, ``ndcg_cut_10``, ``recall_10``, ``recall_100``,
  ``map_cut_100`` with trec_eval's definitions, plus ``mrr_10``. As ``trec_eval -c``, every
  judged query counts (a query without results scores 0); as trec_eval, documents are
  ranked by score and ties broken by document id in DESCENDING order. Tested equal to
  pytrec_eval (the trec_eval C code) to 1e-9.

Significance tests live in ``clp_utils.stats``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch

from clp_utils.data import Split
from clp_utils.io import atomic_write, stable_hash, write_json
from clp_utils.paths import REPO_ROOT, RESULTS_DIR
from clp_utils.precision import autocast, decide

Run = dict[str, dict[str, float]]  # qid -> {docid: score}
Qrels = Mapping[str, Mapping[str, int]]  # qid -> {docid: relevance}

METRICS = ("ndcg_cut_5", "ndcg_cut_10", "recall_10", "recall_100", "map_cut_100", "mrr_10")
TOP_K = 100


# --------------------------------------------------------------------------- encoding


def _device(model) -> str:
    """The model's device type (anything with ``encode`` and no ``device`` counts as CPU)."""
    return str(getattr(model, "device", "cpu"))


def _prompt(model, names: Sequence[str]) -> str | None:
    prompts = getattr(model, "prompts", None) or {}
    return next((n for n in names if n in prompts and prompts[n]), None)


def encode_queries(
    model,
    texts: Sequence[str],
    batch_size: int | None = None,
    progress: bool = True,
    bf16: bool | str = "auto",
) -> np.ndarray:
    """Embed queries (with the model's ``query`` prompt if it has one), normalised float32.

    ``bf16`` goes through ``clp_utils.precision.decide``: bf16 autocast only where the
    hardware computes it natively (``"auto"``), or forced on/off.
    """
    return _encode(model, texts, _prompt(model, ("query",)), batch_size, progress, bf16)


def encode_passages(
    model,
    texts: Sequence[str],
    batch_size: int | None = None,
    progress: bool = True,
    model_id: str | None = None,
    cache_dir: Path | None = RESULTS_DIR / "cache" / "embeddings",
    bf16: bool | str = "auto",
) -> np.ndarray:
    """Embed passages (``passage``/``document`` prompt if any), normalised float32.

    With a ``model_id`` (a name that pins the weights, e.g. ``"minilm"`` or a run id) the
    result is cached under ``cache_dir`` by a hash of the id, the texts and the precision
    that computed it. ``bf16`` as in ``encode_queries``.
    """
    prompt = _prompt(model, ("passage", "document"))
    if model_id is None or cache_dir is None:
        return _encode(model, texts, prompt, batch_size, progress, bf16)
    precision = decide(bf16, _device(model)).name
    key = stable_hash([model_id, prompt, model.max_seq_length, precision, list(texts)], length=20)
    path = Path(cache_dir) / f"{key}.npy"
    if path.exists():
        return np.load(path)
    emb = _encode(model, texts, prompt, batch_size, progress, bf16)
    with atomic_write(path, "wb") as fh:
        np.save(fh, emb)
    return emb


#: Encoding batch per device type when the caller gives none: a GPU wants big batches (the
#: per-batch overhead dominates otherwise), a CPU gains nothing beyond a few dozen passages.
ENCODE_BATCH = {"cuda": 512, "cpu": 64}


def encode_batch_size(model, batch_size: int | None = None) -> int:
    """``batch_size`` if given, else the device's default (``ENCODE_BATCH``)."""
    if batch_size is not None:
        return batch_size
    return ENCODE_BATCH.get(_device(model).split(":")[0], 64)


def _encode(model, texts, prompt_name, batch_size, progress, bf16="auto") -> np.ndarray:
    batch_size = encode_batch_size(model, batch_size)
    with autocast(decide(bf16, _device(model))):
        emb = model.encode(
            list(texts),
            batch_size=batch_size,
            prompt_name=prompt_name,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
    return np.ascontiguousarray(emb, dtype=np.float32)


# --------------------------------------------------------------------------- search


def search(
    query_emb: np.ndarray, doc_emb: np.ndarray, k: int = TOP_K
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k with faiss; returns (scores, indices), each (n_queries, k)."""
    index = faiss.IndexFlatIP(doc_emb.shape[1])
    index.add(np.ascontiguousarray(doc_emb, dtype=np.float32))
    return index.search(np.ascontiguousarray(query_emb, dtype=np.float32), min(k, len(doc_emb)))


def to_run(qids: Sequence[str], docids: Sequence[str], scores: np.ndarray, idx: np.ndarray) -> Run:
    """Turn faiss output into a run; scores go through float32 so file and memory agree."""
    run: Run = {}
    for qid, row_s, row_i in zip(qids, scores, idx, strict=True):
        run[qid] = {
            docids[i]: float(np.float32(s)) for s, i in zip(row_s, row_i, strict=True) if i >= 0
        }
    return run


def rank(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """trec_eval order: score descending, ties by document id descending."""
    return sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)


# --------------------------------------------------------------------------- fusion


def rrf(runs: Sequence[Run], k: int = 60, depth: int = TOP_K) -> Run:
    """Reciprocal rank fusion (Cormack et al. 2009): ``sum_r 1 / (k + rank_r(d))``.

    Ranks follow trec_eval's order (score descending, ties by document id descending); a
    document missing from a run adds nothing from it. Keeps the ``depth`` best per query.
    """
    fused: Run = {}
    for qid in dict.fromkeys(q for run in runs for q in run):
        scores: dict[str, float] = {}
        for run in runs:
            for r, (docid, _) in enumerate(rank(run.get(qid, {})), start=1):
                scores[docid] = scores.get(docid, 0.0) + 1.0 / (k + r)
        fused[qid] = dict(rank(scores)[:depth])
    return fused


def convex(a: Run, b: Run, weight: float, depth: int = TOP_K) -> Run:
    """``weight * a + (1 - weight) * b`` of per-query min-max normalised scores.

    Each run's scores are scaled to [0, 1] within a query's list (a constant list scores
    1.0); a document missing from one list gets 0 from it (below everything it retrieved).
    ``weight`` = 1 is run ``a`` alone, 0 is ``b`` alone. Keeps the ``depth`` best per query.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    fused: Run = {}
    for qid in dict.fromkeys([*a, *b]):
        na, nb = _minmax(a.get(qid, {})), _minmax(b.get(qid, {}))
        scores = {d: weight * na.get(d, 0.0) + (1 - weight) * nb.get(d, 0.0) for d in {*na, *nb}}
        fused[qid] = dict(rank(scores)[:depth])
    return fused


def _minmax(docs: Mapping[str, float]) -> dict[str, float]:
    if not docs:
        return {}
    lo, hi = min(docs.values()), max(docs.values())
    return {d: (v - lo) / (hi - lo) if hi > lo else 1.0 for d, v in docs.items()}


def write_trec(run: Run, path: Path, tag: str, k: int = TOP_K) -> None:
    """Write ``qid Q0 docid rank score tag`` lines, top ``k`` per query, atomically."""
    with atomic_write(path) as fh:
        for qid in sorted(run):
            for r, (docid, score) in enumerate(rank(run[qid])[:k], start=1):
                # %.9g round-trips a float32 exactly, so the file ranks as memory does.
                fh.write(f"{qid} Q0 {docid} {r} {score:.9g} {tag}\n")


def read_trec(path: Path) -> Run:
    """Read a TREC run file back into a run."""
    run: Run = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.split()
            if len(parts) != 6:
                raise ValueError(
                    f"{path}:{lineno}: expected 6 fields 'qid Q0 docid rank score tag'"
                )
            run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
    return run


# --------------------------------------------------------------------------- metrics


@dataclass
class Evaluation:
    """Mean metrics over every judged query, and the per-query values behind them."""

    mean: dict[str, float]
    per_query: dict[str, dict[str, float]]  # metric -> qid -> value


def query_metrics(ranked: Sequence[str], rels: Mapping[str, int]) -> dict[str, float]:
    """trec_eval's measures for one query, from its ranked document ids and its judgements."""
    gains = [max(rels.get(d, 0), 0) for d in ranked]
    num_rel = sum(1 for r in rels.values() if r > 0)
    out: dict[str, float] = {}
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)
    for k in (5, 10):
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]) if g > 0)
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
        out[f"ndcg_cut_{k}"] = dcg / idcg if idcg > 0 else 0.0
    for k in (10, 100):
        out[f"recall_{k}"] = sum(1 for g in gains[:k] if g > 0) / num_rel if num_rel else 0.0
    hits, ap = 0, 0.0
    for i, g in enumerate(gains[:100]):
        if g > 0:
            hits += 1
            ap += hits / (i + 1)
    out["map_cut_100"] = ap / num_rel if num_rel else 0.0
    first = next((i for i, g in enumerate(gains[:10]) if g > 0), None)
    out["mrr_10"] = 1.0 / (first + 1) if first is not None else 0.0
    return out


def evaluate_run(run: Run, qrels: Qrels) -> Evaluation:
    """Metrics averaged over every query in ``qrels`` (``trec_eval -c``)."""
    if not qrels:
        raise ValueError("no judged queries to evaluate")
    per_query: dict[str, dict[str, float]] = {m: {} for m in METRICS}
    for qid, rels in qrels.items():
        ranked = [d for d, _ in rank(run.get(qid, {}))]
        for m, v in query_metrics(ranked, rels).items():
            per_query[m][qid] = v
    mean = {m: float(np.mean(list(per_query[m].values()))) for m in METRICS}
    return Evaluation(mean, per_query)


# --------------------------------------------------------------------------- end to end


@dataclass
class RetrievalResult:
    """What one evaluation produced and where it was written."""

    run_dir: Path
    run: Run
    evaluation: Evaluation

    @property
    def metrics(self) -> dict[str, float]:
        return self.evaluation.mean


def retrieve(
    model,
    split: Split,
    k: int = TOP_K,
    batch_size: int | None = None,
    model_id: str | None = None,
    progress: bool = True,
    bf16: bool | str = "auto",
) -> Run:
    """Dense retrieval of ``split``'s queries over ``split``'s corpus, exact search."""
    return retrieve_splits(model, {"": split}, k, batch_size, model_id, progress, bf16)[""]


def retrieve_splits(
    model,
    splits: Mapping[str, Split],
    k: int = TOP_K,
    batch_size: int | None = None,
    model_id: str | None = None,
    progress: bool = True,
    bf16: bool | str = "auto",
) -> dict[str, Run]:
    """Dense retrieval for several sides of one dataset, embedding their corpora once.

    The test side searches the whole corpus and the validation side every non-test passage:
    one encoding of the union serves both, each side searching only its own passages.
    """
    texts = {d: split.passage_text(d) for split in splits.values() for d in split.corpus}
    docids = list(texts)
    doc_emb = encode_passages(model, list(texts.values()), batch_size, progress, model_id,
                              bf16=bf16)
    row = {d: i for i, d in enumerate(docids)}
    runs = {}
    for name, split in splits.items():
        own = np.array([row[d] for d in split.corpus], dtype=np.int64)
        own_ids = [docids[i] for i in own]
        qids = list(split.queries)
        q_emb = encode_queries(
            model, [split.queries[q]["text"] for q in qids], batch_size, progress, bf16
        )
        scores, idx = search(q_emb, doc_emb[own], k)
        runs[name] = to_run(qids, own_ids, scores, idx)
    return runs


def save_evaluation(
    run: Run, split: Split, run_dir: Path, tag: str, qrels_path: Path | None = None
) -> RetrievalResult:
    """Write ``run.trec``, ``metrics.json`` and ``per_query.csv`` into ``run_dir``.

    ``metrics.json`` holds ``run`` (file name), ``qrels`` (path from the repo root; when the
    split is not a file on disk, e.g. a subset, its qrels are written next to the run) and
    ``metrics``.
    """
    run_dir = Path(run_dir)
    if split.name not in ("test", "val"):
        raise ValueError(f"evaluation takes the test or validation split, got {split.name!r}")
    evaluation = evaluate_run(run, split.qrels)
    write_trec(run, run_dir / "run.trec", tag)
    if qrels_path is None:
        qrels_path = run_dir / "qrels.test.tsv"
        with atomic_write(qrels_path) as fh:
            for qid, rels in split.qrels.items():
                for docid, rel in rels.items():
                    fh.write(f"{qid} 0 {docid} {rel}\n")
    try:
        qrels_rel = str(Path(qrels_path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        qrels_rel = str(qrels_path)
    write_json(
        run_dir / "metrics.json",
        {"run": "run.trec", "qrels": qrels_rel, "metrics": evaluation.mean},
    )
    with atomic_write(run_dir / "per_query.csv") as fh:
        writer = csv.writer(fh)
        writer.writerow(["qid", *METRICS])
        for qid in split.qrels:
            writer.writerow([qid, *(f"{evaluation.per_query[m][qid]:.9g}" for m in METRICS)])
    return RetrievalResult(run_dir, run, evaluation)


def evaluate_model(
    model,
    split: Split,
    run_dir: Path,
    tag: str,
    model_id: str | None = None,
    qrels_path: Path | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    bf16: bool | str = "auto",
) -> RetrievalResult:
    """Retrieve with ``model`` and write the evaluation into ``run_dir`` (see above)."""
    run = retrieve(model, split, batch_size=batch_size, model_id=model_id, progress=progress,
                   bf16=bf16)
    return save_evaluation(run, split, run_dir, tag, qrels_path)


# --------------------------------------------------------------------------- BM25


def bm25_run(split: Split, k: int = TOP_K, language: str = "english",
             token_pattern: str | None = None) -> Run:
    """BM25 (bm25s, Lucene variant) over ``split`` with a Snowball stemmer of ``language``.

    ``token_pattern`` is the regular expression that cuts words (``None``: bm25s' default
    ``(?u)\\b\\w\\w+\\b``, right for English; Hindi needs ``languages.TOKEN_PATTERN``,
    since ``\\w`` splits Devanagari words at every vowel sign). English drops bm25s' English
    stop words; other languages keep every word (bm25s has no list for them).
    """
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer(language)
    options = dict(stopwords="en" if language == "english" else None, stemmer=stemmer,
                   show_progress=False)
    if token_pattern is not None:
        options["token_pattern"] = token_pattern
    docids = list(split.corpus)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([split.passage_text(d) for d in docids], **options),
                    show_progress=False)
    qids = list(split.queries)
    q_tokens = bm25s.tokenize([split.queries[q]["text"] for q in qids], **options)
    idx, scores = retriever.retrieve(q_tokens, k=min(k, len(docids)), show_progress=False)
    return to_run(qids, docids, scores, idx)


def zero_shot(dataset, model_name: str = "minilm", model=None, progress: bool = True,
              side: str = "test", bf16: bool | str = "auto") -> RetrievalResult:
    """Zero-shot dense retrieval on ``dataset.test()`` (or ``validation()``), cached.

    Cached in ``results/baselines/`` by model name, data checksum, side and precision: a
    finished evaluation is read back, not recomputed. A dataset with a validation side has
    both sides computed at once (one encoding of the corpus serves both).
    """
    sides = ["test"] + (["val"] if dataset.has_validation else [])
    if side not in sides:
        raise ValueError(f"side must be one of {sides}, got {side!r}")
    device = model.device if model is not None else "cuda" if torch.cuda.is_available() else "cpu"
    precision = decide(bf16, device).name
    stem = f"{_slug(model_name)}-{dataset.name}-{dataset.checksum[:8]}"
    dirs = {s: RESULTS_DIR / "baselines" / f"{stem}{'' if s == 'test' else '-' + s}-{precision}"
            for s in sides}
    splits = {s: _side(dataset, s) for s in sides}
    if (dirs[side] / "metrics.json").exists():
        run = read_trec(dirs[side] / "run.trec")
        return RetrievalResult(dirs[side], run, evaluate_run(run, splits[side].qrels))
    if model is None:
        from clp_utils.models import load_model

        model = load_model(model_name)
    runs = retrieve_splits(model, splits, model_id=model_name, progress=progress, bf16=bf16)
    results = {s: save_evaluation(runs[s], splits[s], dirs[s], tag=f"{_slug(model_name)}-zero-shot")
               for s in sides}
    return results[side]


def bm25(dataset, language: str = "english", side: str = "test",
         token_pattern: str | None = None) -> RetrievalResult:
    """BM25 on ``dataset.test()`` (or ``validation()``), cached like ``zero_shot``."""
    split = _side(dataset, side)
    words = "" if token_pattern is None else "-" + stable_hash(token_pattern, 6)
    suffix = "" if side == "test" else f"-{side}"
    run_dir = (RESULTS_DIR / "baselines"
               / f"bm25-{language}{words}-{dataset.name}-{dataset.checksum[:8]}{suffix}")
    if (run_dir / "metrics.json").exists():
        run = read_trec(run_dir / "run.trec")
        return RetrievalResult(run_dir, run, evaluate_run(run, split.qrels))
    run = bm25_run(split, language=language, token_pattern=token_pattern)
    return save_evaluation(run, split, run_dir, tag=f"bm25-{language}")


def _side(dataset, side: str) -> Split:
    if side == "test":
        return dataset.test()
    if side == "val":
        return dataset.validation()
    raise ValueError(f"side must be 'test' or 'val', got {side!r}")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip("/").split("/")[-1])
