"""Dense retrieval: encoding with the model's own prompts, exact search, TREC run files.

Embeddings are L2-normalised float32 in the precision ``base.precision.decide`` picks;
passage embeddings of a named model are cached on disk, since notebooks reuse them. Search
is exact (faiss ``IndexFlatIP``); run files keep trec_eval's order (``rank``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import faiss
import numpy as np

from clp_utils.base.io import atomic_write, stable_hash
from clp_utils.base.paths import results_dir
from clp_utils.base.precision import autocast, decide
from clp_utils.data import Split

Run = dict[str, dict[str, float]]  # qid -> {docid: score}
TOP_K = 100
#: The passage-embedding cache, relative: under the results root of the process that encodes.
EMBEDDING_CACHE = Path("cache", "embeddings")
#: Encoding batch per device type when the caller gives none: a GPU wants big batches (the
#: per-batch overhead dominates otherwise), a CPU gains nothing beyond a few dozen passages.
ENCODE_BATCH = {"cuda": 512, "cpu": 64}


# --------------------------------------------------------------------------- encoding


def _device(model) -> str:
    """The model's device type (anything with ``encode`` and no ``device`` counts as CPU)."""
    return str(getattr(model, "device", "cpu"))


#: The prompt names a model may use for each side, in order of preference.
PROMPT_NAMES = {"query": ("query",), "document": ("passage", "document")}


def prompt_name(model, side: str) -> str | None:
    """The name of the model's non-empty prompt for ``side`` ("query" or "document", first
    of ``PROMPT_NAMES[side]``), or None: what encoding and training both prepend."""
    prompts = getattr(model, "prompts", None) or {}
    return next((n for n in PROMPT_NAMES[side] if prompts.get(n)), None)


def encode_queries(model, texts: Sequence[str], batch_size: int | None = None,
                   progress: bool = True, bf16: bool | str = "auto") -> np.ndarray:
    """Embed queries (with the model's ``query`` prompt if it has one), normalised float32;
    ``bf16`` as ``base.precision.decide`` takes it."""
    return _encode(model, texts, prompt_name(model, "query"), batch_size, progress, bf16)


def encode_passages(model, texts: Sequence[str], batch_size: int | None = None,
                    progress: bool = True, model_id: str | None = None,
                    cache_dir: Path | None = EMBEDDING_CACHE,
                    bf16: bool | str = "auto") -> np.ndarray:
    """Embed passages (``passage``/``document`` prompt if any), normalised float32; with a
    ``model_id`` (a name that pins the weights) cached under ``cache_dir`` (relative: under
    ``paths.results_dir()``) by a hash of the id, the texts and the precision."""
    prompt = prompt_name(model, "document")
    if model_id is None or cache_dir is None:
        return _encode(model, texts, prompt, batch_size, progress, bf16)
    precision = decide(bf16, _device(model)).name
    key = stable_hash([model_id, prompt, model.max_seq_length, precision, list(texts)], length=20)
    path = results_dir() / cache_dir / f"{key}.npy"
    if path.exists():
        return np.load(path)
    emb = _encode(model, texts, prompt, batch_size, progress, bf16)
    with atomic_write(path, "wb") as fh:
        np.save(fh, emb)
    return emb


def encode_batch_size(model, batch_size: int | None = None) -> int:
    """``batch_size`` if given, else the device's default (``ENCODE_BATCH``)."""
    return ENCODE_BATCH.get(_device(model).split(":")[0], 64) if batch_size is None else batch_size


def _encode(model, texts, prompt_name, batch_size, progress, bf16="auto") -> np.ndarray:
    with autocast(decide(bf16, _device(model))):
        emb = model.encode(list(texts), batch_size=encode_batch_size(model, batch_size),
                           prompt_name=prompt_name, show_progress_bar=progress,
                           convert_to_numpy=True, normalize_embeddings=True)
    return np.ascontiguousarray(emb, dtype=np.float32)


# --------------------------------------------------------------------------- search


def search(query_emb: np.ndarray, doc_emb: np.ndarray,
           k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k with faiss; returns (scores, indices), each (n_queries, k)."""
    index = faiss.IndexFlatIP(doc_emb.shape[1])
    index.add(np.ascontiguousarray(doc_emb, dtype=np.float32))
    return index.search(np.ascontiguousarray(query_emb, dtype=np.float32), min(k, len(doc_emb)))


def to_run(qids: Sequence[str], docids: Sequence[str], scores: np.ndarray, idx: np.ndarray) -> Run:
    """Turn faiss output into a run; scores go through float32 so file and memory agree."""
    return {qid: {docids[i]: float(np.float32(s)) for s, i in zip(row_s, row_i, strict=True)
                  if i >= 0}
            for qid, row_s, row_i in zip(qids, scores, idx, strict=True)}


def rank(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """trec_eval order: score descending, ties by document id descending."""
    return sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)


def write_trec(run: Run, path: Path, tag: str, k: int = TOP_K) -> None:
    """Write ``qid Q0 docid rank score tag`` lines, top ``k`` per query, atomically."""
    with atomic_write(path) as fh:
        for qid in sorted(run):
            for r, (docid, score) in enumerate(rank(run[qid])[:k], start=1):
                # %.9g round-trips a float32 exactly, so the file ranks as memory does.
                fh.write(f"{qid} Q0 {docid} {r} {score:.9g} {tag}\n")


def read_trec(path: Path) -> Run:
    """Read a TREC run file back into a run; a malformed line raises naming file and line."""
    run: Run = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.split()
            if len(parts) != 6:
                raise ValueError(f"{path}:{lineno}: expected 6 fields 'qid Q0 docid rank score "
                                 "tag'")
            run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
    return run


def retrieve(model, split: Split, k: int = TOP_K, batch_size: int | None = None,
             model_id: str | None = None, progress: bool = True,
             bf16: bool | str = "auto") -> Run:
    """Dense retrieval of ``split``'s queries over ``split``'s corpus, exact search."""
    return retrieve_splits(model, {"": split}, k, batch_size, model_id, progress, bf16)[""]


def retrieve_splits(model, splits: Mapping[str, Split], k: int = TOP_K,
                    batch_size: int | None = None, model_id: str | None = None,
                    progress: bool = True, bf16: bool | str = "auto") -> dict[str, Run]:
    """Dense retrieval for several sides of one dataset (test: the whole corpus; validation:
    every non-test passage): one encoding of the union, each side searching its own passages."""
    texts = {d: split.passage_text(d) for split in splits.values() for d in split.corpus}
    docids = list(texts)
    doc_emb = encode_passages(model, list(texts.values()), batch_size, progress, model_id,
                              bf16=bf16)
    row = {d: i for i, d in enumerate(docids)}
    runs = {}
    for name, split in splits.items():
        own = np.array([row[d] for d in split.corpus], dtype=np.int64)
        qids = list(split.queries)
        q_emb = encode_queries(model, [split.queries[q]["text"] for q in qids], batch_size,
                               progress, bf16)
        scores, idx = search(q_emb, doc_emb[own], k)
        runs[name] = to_run(qids, [docids[i] for i in own], scores, idx)
    return runs
