"""Evaluation that IR people trust: trec_eval's metrics, BM25, fusion, zero-shot runs.

``evaluate_run`` computes ``METRICS`` with pytrec_eval (trec_eval's own C code) as
``trec_eval -c``: every judged query counts (a query without results scores 0); documents
rank by score, ties by document id DESCENDING (``retrieval.rank``). ``bm25`` and
``zero_shot`` are the baselines, cached under ``results/baselines/``. Retrieval itself is
``clp_utils.retrieval``; significance tests are ``clp_utils.stats``.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytrec_eval
import torch

from clp_utils.base.io import atomic_write, slug, stable_hash, write_json
from clp_utils.base.paths import REPO_ROOT, results_dir
from clp_utils.base.precision import decide
from clp_utils.data import Qrels, Split
from clp_utils.models import load_model
from clp_utils.retrieval import (
    TOP_K,
    Run,
    rank,
    read_trec,
    retrieve,
    retrieve_splits,
    to_run,
    write_trec,
)
from clp_utils.stats import passage_clusters

METRICS = ("ndcg_cut_5", "ndcg_cut_10", "recall_10", "recall_100", "map_cut_100", "mrr_10")


# --------------------------------------------------------------------------- fusion


def rrf(runs: Sequence[Run], k: int = 60, depth: int = TOP_K) -> Run:
    """Reciprocal rank fusion (Cormack et al. 2009): ``sum_r 1 / (k + rank_r(d))``, ranks in
    trec_eval's order (a run without the document adds nothing); the ``depth`` best per query."""
    fused: Run = {}
    for qid in dict.fromkeys(q for run in runs for q in run):
        scores: dict[str, float] = {}
        for run in runs:
            for r, (docid, _) in enumerate(rank(run.get(qid, {})), start=1):
                scores[docid] = scores.get(docid, 0.0) + 1.0 / (k + r)
        fused[qid] = dict(rank(scores)[:depth])
    return fused


def convex(a: Run, b: Run, weight: float, depth: int = TOP_K) -> Run:
    """``weight * a + (1 - weight) * b`` of per-query min-max normalised scores (a constant
    list scores 1.0, a document missing from a list 0 from it); the ``depth`` best per query."""
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


# --------------------------------------------------------------------------- metrics


@dataclass
class Evaluation:
    """Mean metrics over every judged query, the per-query values behind them, and each
    query's cluster (its relevant passages: ``stats.passage_clusters``), which the study's
    tests resample as a unit."""

    mean: dict[str, float]
    per_query: dict[str, dict[str, float]]  # metric -> qid -> value
    clusters: dict[str, str] = field(default_factory=dict)  # qid -> cluster


def _evaluation(per_query: dict[str, dict[str, float]], qrels: Qrels) -> Evaluation:
    mean = {m: float(np.mean(list(per_query[m].values()))) for m in METRICS}
    return Evaluation(mean, per_query, passage_clusters(qrels))


def evaluate_run(run: Run, qrels: Qrels) -> Evaluation:
    """Metrics averaged over every query in ``qrels`` (``trec_eval -c``); ``mrr_10`` is
    trec_eval's ``recip_rank`` of each query's first 10 documents."""
    if not qrels:
        raise ValueError("no judged queries to evaluate")
    judged = {q: dict(rels) for q, rels in qrels.items()}
    run = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items()}  # C wants floats
    full = pytrec_eval.RelevanceEvaluator(judged, set(METRICS[:-1])).evaluate(run)
    top = {q: dict(rank(docs)[:10]) for q, docs in run.items()}
    for q, values in pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(top).items():
        full.setdefault(q, {})["mrr_10"] = values["recip_rank"]
    return _evaluation({m: {q: full.get(q, {}).get(m, 0.0) for q in qrels} for m in METRICS},
                       qrels)


# --------------------------------------------------------------------------- end to end


@dataclass
class RetrievalResult:
    """What one evaluation produced and where it was written. ``loaded`` is the run when it is
    in memory; ``run`` reads ``run.trec`` on first use (a committed result keeps per-query
    metrics only: reading it back never needs the run file)."""

    run_dir: Path
    loaded: Run | None
    evaluation: Evaluation

    @property
    def metrics(self) -> dict[str, float]:
        return self.evaluation.mean

    @property
    def has_run(self) -> bool:
        """Whether the ranked lists are in memory or on disk here."""
        return self.loaded is not None or (self.run_dir / "run.trec").exists()

    @property
    def run(self) -> Run:
        """The ranked lists (qid -> docid -> score), for fusion."""
        if self.loaded is None:
            path = self.run_dir / "run.trec"
            if not path.exists():
                raise FileNotFoundError(
                    f"{path}: not here (committed results hold per-query metrics, not run "
                    "files); `make study` retrieves and writes it")
            self.loaded = read_trec(path)
        return self.loaded


def save_evaluation(run: Run, split: Split, run_dir: Path, tag: str,
                    qrels_path: Path | None = None) -> RetrievalResult:
    """Write ``run.trec``, ``metrics.json`` (``run``, ``qrels``: the path from the repo root,
    written next to the run when none is given, and ``metrics``) and ``per_query.csv``."""
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
    resolved = Path(qrels_path).resolve()
    qrels_rel = str(resolved.relative_to(REPO_ROOT) if resolved.is_relative_to(REPO_ROOT)
                    else qrels_path)
    write_json(run_dir / "metrics.json",
               {"run": "run.trec", "qrels": qrels_rel, "metrics": evaluation.mean})
    with atomic_write(run_dir / "per_query.csv") as fh:
        writer = csv.writer(fh)
        writer.writerow(["qid", *METRICS])
        for qid in split.qrels:
            writer.writerow([qid, *(repr(float(evaluation.per_query[m][qid])) for m in METRICS)])
    return RetrievalResult(run_dir, run, evaluation)


def evaluate_model(model, split: Split, run_dir: Path, tag: str, model_id: str | None = None,
                   qrels_path: Path | None = None, batch_size: int | None = None,
                   progress: bool = True, bf16: bool | str = "auto") -> RetrievalResult:
    """Retrieve with ``model`` and write the evaluation into ``run_dir`` (``save_evaluation``)."""
    run = retrieve(model, split, batch_size=batch_size, model_id=model_id, progress=progress,
                   bf16=bf16)
    return save_evaluation(run, split, run_dir, tag, qrels_path)


def read_evaluation(run_dir: Path, qrels: Qrels) -> RetrievalResult | None:
    """A finished evaluation in ``run_dir`` read back from ``per_query.csv`` (None when there
    is none): the per-query values ``save_evaluation`` wrote, their means, and each query's
    passage cluster from ``qrels``. The run file is read only if fusion asks for it."""
    if not (run_dir / "metrics.json").exists():
        return None
    with open(run_dir / "per_query.csv", newline="", encoding="utf-8") as fh:
        rows = {row["qid"]: row for row in csv.DictReader(fh)}
    if missing := set(qrels) - set(rows):
        raise ValueError(f"{run_dir / 'per_query.csv'}: {len(missing)} judged queries have no "
                         f"row (e.g. {sorted(missing)[:3]}); the evaluation is stale")
    per_query = {m: {q: float(rows[q][m]) for q in qrels} for m in METRICS}
    return RetrievalResult(run_dir, None, _evaluation(per_query, qrels))


def committed_dir() -> Path:
    """The committed results folder (``figures/results``): where ``make study`` commits the
    small part of its results (per-query metrics, configs, logs), which a fresh clone reads
    back instead of recomputing (``machinery.publish``)."""
    return REPO_ROOT / "figures" / "results"


# --------------------------------------------------------------------------- BM25


def _tokenize(texts: list[str], language: str, token_pattern: str | None = None, **options):
    """bm25s' tokenisation with a Snowball stemmer of ``language``; English drops bm25s'
    English stop words, other languages keep every word (bm25s has no list for them)."""
    import bm25s
    import Stemmer

    if token_pattern is not None:
        options["token_pattern"] = token_pattern
    return bm25s.tokenize(texts, stopwords="en" if language == "english" else None,
                          stemmer=Stemmer.Stemmer(language), show_progress=False, **options)


def query_term_overlap(split: Split, language: str = "english") -> dict[str, float]:
    """Per query: the share of its distinct terms that its relevant passage(s) contain, with
    BM25's own tokenisation. Extractive questions are written from their passage, so they
    share its words: the lexical signal BM25 scores and a small dense model only
    approximates."""
    qids = [q for q in split.queries if split.qrels.get(q)]
    q_terms = _tokenize([split.queries[q]["text"] for q in qids], language, return_ids=False)
    docs = sorted({d for q in qids for d in split.qrels[q]})
    d_terms = dict(zip(docs, _tokenize([split.passage_text(d) for d in docs], language,
                                       return_ids=False), strict=True))
    out = {}
    for qid, terms in zip(qids, q_terms, strict=True):
        wanted = set(terms)
        if wanted:
            found = set().union(*(d_terms[d] for d, rel in split.qrels[qid].items() if rel > 0))
            out[qid] = len(wanted & found) / len(wanted)
    return out


def zero_shot(dataset, model_name: str = "minilm", model=None, progress: bool = True,
              side: str = "test", bf16: bool | str = "auto",
              committed: bool = False) -> RetrievalResult:
    """Zero-shot dense retrieval on ``dataset.test()`` (or ``validation()``), cached in
    ``results/baselines/`` by model name, data checksum, side and precision; both sides are
    computed at once where there are two (one encoding of the corpus serves both). With
    ``committed``, a result missing here is read from the committed results (``committed_dir``,
    whatever precision made them) before anything is encoded."""
    sides = ["test"] + (["val"] if dataset.has_validation else [])
    if side not in sides:
        raise ValueError(f"side must be one of {sides}, got {side!r}")
    device = model.device if model is not None else "cuda" if torch.cuda.is_available() else "cpu"
    precision = decide(bf16, device).name
    dirs = {s: _baseline_dir(_slug(model_name), dataset, s, f"-{precision}") for s in sides}
    splits = {s: _side(dataset, s) for s in sides}
    if done := read_evaluation(dirs[side], splits[side].qrels):
        return done
    if committed:  # the committed result of any precision (a reopened chapter trains nothing)
        for name in ("bf16", "float32"):
            here = committed_dir() / "baselines" / dirs[side].name.replace(precision, name)
            if done := read_evaluation(here, splits[side].qrels):
                return done
    if model is None:
        model = load_model(model_name)
    runs = retrieve_splits(model, splits, model_id=model_name, progress=progress, bf16=bf16)
    results = {s: save_evaluation(runs[s], splits[s], dirs[s], tag=f"{_slug(model_name)}-zero-shot")
               for s in sides}
    return results[side]


def bm25(dataset, language: str = "english", side: str = "test",
         token_pattern: str | None = None) -> RetrievalResult:
    """BM25 (bm25s, Lucene variant; Snowball stemmer of ``language``) on ``dataset.test()``
    (or ``validation()``), cached like ``zero_shot``.

    ``token_pattern`` is the regular expression that cuts words (``None``: bm25s' default
    ``(?u)\\b\\w\\w+\\b``, right for English; Hindi needs ``languages.TOKEN_PATTERN``, since
    ``\\w`` splits Devanagari words at every vowel sign).
    """
    import bm25s

    split = _side(dataset, side)
    words = "" if token_pattern is None else "-" + stable_hash(token_pattern, 6)
    run_dir = _baseline_dir(f"bm25-{language}{words}", dataset, side)
    if done := read_evaluation(run_dir, split.qrels):
        return done
    docids, qids = list(split.corpus), list(split.queries)
    retriever = bm25s.BM25()
    retriever.index(_tokenize([split.passage_text(d) for d in docids], language, token_pattern),
                    show_progress=False)
    idx, scores = retriever.retrieve(
        _tokenize([split.queries[q]["text"] for q in qids], language, token_pattern),
        k=min(TOP_K, len(docids)), show_progress=False)
    return save_evaluation(to_run(qids, docids, scores, idx), split, run_dir,
                           tag=f"bm25-{language}")


def _baseline_dir(system: str, dataset, side: str, tail: str = "") -> Path:
    """A baseline's folder: system, dataset name and checksum, side (test: none), ``tail``."""
    suffix = "" if side == "test" else f"-{side}"
    return (results_dir() / "baselines"
            / f"{system}-{dataset.name}-{dataset.checksum[:8]}{suffix}{tail}")


def _side(dataset, side: str) -> Split:
    if side == "test":
        return dataset.test()
    if side == "val":
        return dataset.validation()
    raise ValueError(f"side must be 'test' or 'val', got {side!r}")


def _slug(name: str) -> str:
    """A model's name for a folder: the last part of a path or hub id, as ``io.slug``."""
    return slug(name.strip("/").split("/")[-1], keep="-_.")
