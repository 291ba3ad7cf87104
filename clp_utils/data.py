"""Retrieval data: SQuADShifts from the committed sources, BEIR folders, MIRACL, and the split.

The study's data travels with the repository: ``data/sources/`` holds SQuAD v1.1 dev and the
SQuADShifts test sets (new_wiki, reddit, amazon; nyt when its file is present) as their
authors released them, checked by sha256 (``clp_utils.sources``). The build
(``python -m clp_utils.catalog build``) reads them there, never the network, and writes every
split in BEIR layout::

    data/squadshifts/<split>/corpus.jsonl   {"_id", "title", "text"}
    data/squadshifts/<split>/queries.jsonl  {"_id", "text", "metadata": {"answers": [...]}}
    data/squadshifts/<split>/qrels/{train,test}.tsv

The train/test split is BY PASSAGE: a fixed-seed 20% of passages are test passages and their
questions are the test queries. ``RetrievalDataset.train()`` gives training code a view
without any test passage or test query, so mining and training cannot leak; ``test()`` gives
the test queries against the WHOLE corpus, as retrieval at test time searches everything.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clp_utils import sources
from clp_utils.base.io import (
    DataError,
    atomic_dir,
    atomic_write,
    read_jsonl,
    sha256_file,
    stable_hash,
    write_json,
    write_jsonl,
)
from clp_utils.base.paths import DATA_DIR

#: The SQuADShifts splits, in the order the tables show them (SQuAD v1.1 dev first). Each is
#: built from the source of the same name in ``clp_utils.sources.SOURCES``.
SQUADSHIFTS = ("squaddev", "new_wiki", "nyt", "reddit", "amazon")
#: Splits whose article titles are real Wikipedia titles (others are URLs or placeholders).
WIKI_TITLED = {"squaddev", "new_wiki"}
#: Bumped when the conversion rules change, so that a built split is rebuilt.
BUILDER_VERSION = 2

DEFAULT_SEED = 13
DEFAULT_TEST_FRACTION = 0.2


def available_splits(splits: Iterable[str] = SQUADSHIFTS) -> list[str]:
    """The SQuADShifts splits whose source file is in ``data/sources/`` (nyt may be absent)."""
    return [s for s in splits if sources.available(s)]


@dataclass
class Split:
    """What one side of the passage split may see.

    ``corpus``: docid -> {"title", "text"}; ``queries``: qid -> {"text", "answers"};
    ``qrels``: qid -> {docid: relevance}. The train split holds only train passages and
    train queries; the test split holds the test queries and the whole corpus.
    """

    name: str
    corpus: dict[str, dict]
    queries: dict[str, dict]
    qrels: dict[str, dict[str, int]]
    title_in_text: bool = False

    def passage_text(self, docid: str) -> str:
        """The text a model embeds for a passage (``title\\ntext`` where titles count)."""
        return passage_text(self.corpus[docid], self.title_in_text)

    def relevant(self, qid: str) -> set[str]:
        """Documents judged relevant (relevance > 0) for ``qid``."""
        return {d for d, r in self.qrels.get(qid, {}).items() if r > 0}


def passage_text(doc: dict, title_in_text: bool) -> str:
    """``title\\ntext`` (FlagEmbedding's MIRACL protocol) or the text alone."""
    if title_in_text and doc.get("title"):
        return f"{doc['title']}\n{doc['text']}"
    return doc["text"]


@dataclass
class RetrievalDataset:
    """A BEIR-style dataset with a by-passage train/test split.

    Training code gets ``train()``; evaluation gets ``test()``. The raw queries and qrels are
    private on purpose: nothing in the study reads test queries except evaluation.
    """

    name: str
    corpus: dict[str, dict]
    _queries: dict[str, dict] = field(repr=False)
    _qrels: dict[str, dict[str, dict[str, int]]] = field(repr=False)
    title_in_text: bool = False
    checksum: str = ""

    @property
    def test_passages(self) -> set[str]:
        """Passages that carry a test query: never shown to training code."""
        return {d for rels in self._qrels.get("test", {}).values() for d in rels}

    @property
    def has_validation(self) -> bool:
        """True when ``with_validation`` carved a validation side."""
        return "val" in self._qrels

    @property
    def val_passages(self) -> set[str]:
        """Passages carved out of the train side for validation (empty without one)."""
        return {d for rels in self._qrels.get("val", {}).values() for d in rels}

    def train(self) -> Split:
        """Train passages and their queries only (no test or validation passage or query)."""
        held_out = self.test_passages | self.val_passages
        qrels = self._qrels.get("train", {})
        corpus = {d: doc for d, doc in self.corpus.items() if d not in held_out}
        leaked = [q for q, rels in qrels.items() if any(d in held_out for d in rels)]
        if leaked:
            raise DataError(
                f"{self.name}: {len(leaked)} train queries are judged on held-out passages "
                f"(e.g. {leaked[:3]}): the split is not by passage"
            )
        queries = {q: self._queries[q] for q in qrels}
        return Split("train", corpus, queries, qrels, self.title_in_text)

    def validation(self) -> Split:
        """Validation queries against every non-test passage (train and validation ones).

        The validation side mirrors the test side one level down: its queries search the
        corpus that training may see plus their own (unseen) passages, and never a test
        passage. Every choice the study makes (budget, learning rates, fusion weights) is
        scored here; ``test()`` is used once, for the final rows.
        """
        qrels = self._qrels.get("val")
        if qrels is None:
            raise ValueError(f"{self.name}: no validation side; use with_validation() first")
        held_out = self.test_passages
        corpus = {d: doc for d, doc in self.corpus.items() if d not in held_out}
        queries = {q: self._queries[q] for q in qrels}
        return Split("val", corpus, queries, qrels, self.title_in_text)

    def with_validation(self, fraction: float, seed: int = DEFAULT_SEED) -> RetrievalDataset:
        """A copy whose train side loses a seeded ``fraction`` of its passages to validation.

        By passage, as the test split: every train query judged on a chosen passage moves to
        the validation side, so no training query shares a passage with a validation query.
        Test passages and test queries are untouched. ``fraction=0`` returns ``self``.
        """
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"validation fraction must be in [0, 1), got {fraction!r}")
        if fraction == 0.0:
            return self
        if "val" in self._qrels:
            raise ValueError(f"{self.name} already has a validation side")
        train_docs = sorted(set(self.corpus) - self.test_passages)
        order = np.random.default_rng(seed).permutation(len(train_docs))
        chosen = {train_docs[i] for i in order[: max(1, round(fraction * len(train_docs)))]}
        qrels = {side: dict(rels) for side, rels in self._qrels.items()}
        train = qrels.get("train", {})
        qrels["val"] = {q: r for q, r in train.items() if set(r) & chosen}
        qrels["train"] = {q: r for q, r in train.items() if q not in qrels["val"]}
        return RetrievalDataset(
            self.name, self.corpus, self._queries, qrels, self.title_in_text,
            stable_hash([self.checksum, "val", fraction, seed]),
        )

    def test(self) -> Split:
        """Test queries against the whole corpus."""
        qrels = self._qrels.get("test", {})
        queries = {q: self._queries[q] for q in qrels}
        return Split("test", self.corpus, queries, qrels, self.title_in_text)

    def subset(self, n_passages: int, seed: int = 0) -> RetrievalDataset:
        """A smaller dataset of ``n_passages`` passages (kept in both split sides, by share).

        Used by the ``smoke`` profile; the split stays by passage since whole passages and
        all their queries are kept or dropped together.
        """
        rng = np.random.default_rng(seed)
        test = sorted(self.test_passages)
        rest = sorted(set(self.corpus) - set(test))
        n_test = max(1, round(n_passages * len(test) / max(1, len(self.corpus))))
        keep = set(rng.choice(test, min(n_test, len(test)), replace=False).tolist())
        keep |= set(
            rng.choice(rest, min(n_passages - len(keep), len(rest)), replace=False).tolist()
        )
        corpus = {d: self.corpus[d] for d in sorted(keep)}
        qrels = {
            side: {q: r for q, r in rels.items() if set(r) <= keep and set(r) & keep}
            for side, rels in self._qrels.items()
        }
        qids = {q for rels in qrels.values() for q in rels}
        queries = {q: v for q, v in self._queries.items() if q in qids}
        return RetrievalDataset(
            f"{self.name}[{n_passages}]",
            corpus,
            queries,
            qrels,
            self.title_in_text,
            stable_hash([self.checksum, n_passages, seed]),
        )

    def sized(self, n_passages: int | None, seed: int = 0) -> RetrievalDataset:
        """``subset(n_passages, seed)``, or ``self`` when ``n_passages`` is None or covers all."""
        if n_passages is None or n_passages >= len(self.corpus):
            return self
        return self.subset(n_passages, seed)

    def counts(self) -> dict[str, int]:
        """Passages and queries on each side of the split (validation only when carved)."""
        train, test = self._qrels.get("train", {}), self._qrels.get("test", {})
        out = {
            "passages": len(self.corpus),
            "train_passages": len(self.corpus) - len(self.test_passages | self.val_passages),
            "test_passages": len(self.test_passages),
            "train_queries": len(train),
            "test_queries": len(test),
        }
        if "val" in self._qrels:
            out.update(val_passages=len(self.val_passages), val_queries=len(self._qrels["val"]))
        return out


# --------------------------------------------------------------------------- BEIR I/O


def load_beir(
    folder: str | Path, name: str | None = None, title_in_text: bool = False
) -> RetrievalDataset:
    """Load a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<side>.tsv``).

    Every qrels file under ``qrels/`` is loaded under its stem (``train``, ``test``, ``dev``;
    ``dev`` is treated as the test side when there is no ``test.tsv``). Bad input raises
    ``DataError`` naming the file and line: malformed JSON, duplicate ids, empty corpus or
    query set, qrels that name unknown queries or documents.
    """
    folder = Path(folder)
    corpus = _records_by_id(folder / "corpus.jsonl", ("text",))
    queries = _records_by_id(folder / "queries.jsonl", ("text",))
    corpus = {d: {"title": r.get("title", "") or "", "text": r["text"]} for d, r in corpus.items()}
    queries = {
        q: {"text": r["text"], "answers": list((r.get("metadata") or {}).get("answers", []))}
        for q, r in queries.items()
    }
    qrels_dir = folder / "qrels"
    if not qrels_dir.is_dir():
        raise DataError(f"{qrels_dir}: missing qrels folder")
    qrels = {p.stem: read_qrels(p, queries, corpus) for p in sorted(qrels_dir.glob("*.tsv"))}
    if "test" not in qrels and "dev" in qrels:
        qrels["test"] = qrels.pop("dev")
    both = set(qrels.get("train", {})) & set(qrels.get("test", {}))
    if both:
        raise DataError(
            f"{qrels_dir}: {len(both)} queries are in train and test: {sorted(both)[:5]}"
        )
    checksum = stable_hash(
        [sha256_file(folder / "corpus.jsonl"), sha256_file(folder / "queries.jsonl")]
        + [sha256_file(p) for p in sorted(qrels_dir.glob("*.tsv"))]
    )
    return RetrievalDataset(name or folder.name, corpus, queries, qrels, title_in_text, checksum)


def _records_by_id(path: Path, required: tuple[str, ...]) -> dict[str, dict]:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    out: dict[str, dict] = {}
    for lineno, row in enumerate(read_jsonl(path), start=1):
        rid = row.get("_id")
        if rid is None:
            raise DataError(f"{path}:{lineno}: record without '_id'")
        for key in required:
            if not isinstance(row.get(key), str):
                raise DataError(f"{path}:{lineno}: record {rid!r} has no string field {key!r}")
        rid = str(rid)
        if rid in out:
            raise DataError(f"{path}:{lineno}: duplicate id {rid!r}")
        out[rid] = row
    if not out:
        raise DataError(f"{path}: empty (no records)")
    return out


def qrels_rows(path: Path) -> list[tuple[int, str, str, int]]:
    """``(line, qid, docid, relevance)`` of a qrels file, BEIR (``query-id corpus-id score``
    with a header, tab-separated) or TREC (``qid Q0 docid rel``, whitespace-separated): the
    project's one qrels parser. A malformed line is a ``DataError`` naming the file and line."""
    rows = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t") if "\t" in line else line.split()
        if not parts or not line.strip() or (lineno == 1 and parts[0] == "query-id"):
            continue
        if len(parts) == 4:
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise DataError(f"{path}:{lineno}: expected 'qid docid relevance' (BEIR) or "
                            f"'qid Q0 docid relevance' (TREC), got {len(parts)} fields")
        qid, docid, score = parts
        try:
            rel = int(score)
        except ValueError:
            raise DataError(f"{path}:{lineno}: relevance {score!r} is not an integer") from None
        rows.append((lineno, qid, docid, rel))
    return rows


def read_qrels(path: Path, queries: dict | None = None,
               corpus: dict | None = None) -> dict[str, dict[str, int]]:
    """Read a qrels file (``qrels_rows``), checking every id against ``queries`` and
    ``corpus`` when given, and refusing a duplicate judgement."""
    qrels: dict[str, dict[str, int]] = {}
    for lineno, qid, docid, rel in qrels_rows(path):
        if docid in qrels.get(qid, {}):
            raise DataError(f"{path}:{lineno}: duplicate judgement ({qid}, {docid})")
        qrels.setdefault(qid, {})[docid] = rel
    if queries is None or corpus is None:
        return qrels
    unknown_q = sorted(set(qrels) - set(queries))
    unknown_d = sorted({d for rels in qrels.values() for d in rels} - set(corpus))
    if unknown_q or unknown_d:
        raise DataError(
            f"{path}: qrels name {len(unknown_q)} unknown queries (e.g. {unknown_q[:5]}) and "
            f"{len(unknown_d)} unknown documents (e.g. {unknown_d[:5]})"
        )
    return qrels


def write_beir(
    folder: Path,
    corpus: dict[str, dict],
    queries: dict[str, dict],
    qrels: dict[str, dict[str, dict[str, int]]],
) -> None:
    """Write a BEIR folder atomically (the whole folder appears at once or not at all)."""
    with atomic_dir(folder) as tmp:
        write_jsonl(tmp / "corpus.jsonl", ({"_id": d, **doc} for d, doc in corpus.items()))
        write_jsonl(
            tmp / "queries.jsonl",
            (
                {"_id": q, "text": v["text"], "metadata": {"answers": v.get("answers", [])}}
                for q, v in queries.items()
            ),
        )
        for side, rels in qrels.items():
            with atomic_write(tmp / "qrels" / f"{side}.tsv") as fh:
                fh.write("query-id\tcorpus-id\tscore\n")
                for qid, docs in rels.items():
                    for docid, rel in docs.items():
                        fh.write(f"{qid}\t{docid}\t{rel}\n")


# --------------------------------------------------------------------------- SQuAD -> BEIR


def squad_to_beir(
    squad: dict, source: str, keep_titles: bool = True
) -> tuple[dict[str, dict], dict[str, dict], dict[str, dict[str, int]]]:
    """Turn SQuAD JSON into (corpus, queries, qrels) with identical paragraphs merged.

    Passage ids are ``p00000``... in order of first appearance; query ids are SQuAD's.
    Every query keeps its distinct answer strings (used to detect false negatives).
    """
    corpus: dict[str, dict] = {}
    by_text: dict[str, str] = {}
    queries: dict[str, dict] = {}
    qrels: dict[str, dict[str, int]] = {}
    for article in squad["data"]:
        title = article.get("title", "").replace("_", " ") if keep_titles else ""
        for para in article["paragraphs"]:
            text = para["context"].strip()
            docid = by_text.get(text)
            if docid is None:
                docid = by_text[text] = f"p{len(corpus):05d}"
                corpus[docid] = {"title": title, "text": text}
            for qa in para["qas"]:
                qid = str(qa["id"])
                if qid in queries:
                    raise DataError(f"{source}: duplicate question id {qid!r}")
                answers = list(dict.fromkeys(a["text"].strip() for a in qa.get("answers", [])))
                queries[qid] = {"text": qa["question"].strip(), "answers": answers}
                qrels[qid] = {docid: 1}
    if not corpus or not queries:
        raise DataError(f"{source}: no passages or no questions")
    return corpus, queries, qrels


def split_by_passage(
    corpus: dict[str, dict],
    qrels: dict[str, dict[str, int]],
    seed: int = DEFAULT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> dict[str, dict[str, dict[str, int]]]:
    """Assign a fixed-seed ``test_fraction`` of passages to test; queries follow them.

    A query judged on any test passage is a test query, so no training query can share a
    passage with a test query.
    """
    ids = sorted(corpus)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_test = round(test_fraction * len(ids))
    test_docs = {ids[i] for i in order[:n_test]}
    out: dict[str, dict[str, dict[str, int]]] = {"train": {}, "test": {}}
    for qid, rels in qrels.items():
        side = "test" if any(d in test_docs for d in rels) else "train"
        out[side][qid] = rels
    return out


#: (corpus, queries, qrels) of one dataset, as ``squad_to_beir`` returns them.
BeirTriple = tuple[dict[str, dict], dict[str, dict], dict[str, dict[str, int]]]
#: A source's bytes and file name -> its ``BeirTriple``.
Converter = Callable[[bytes, str], BeirTriple]


def build_one(name: str, convert: Converter, out: Path, params: dict, previous: dict,
              sources_root: Path | None = None, force: bool = False) -> dict | None:
    """Build dataset ``name`` from its source into ``<out>/<name>/`` (BEIR layout, split by
    passage with ``params``' seed and test fraction) and return its manifest entry; None when
    ``previous`` (its last entry) shows the same source, parameters and builder.

    ``convert(raw bytes, file name) -> (corpus, queries, qrels)``. The entry holds the source
    file and sha256, the parameters, the builder version, the counts, and the sha256 of every
    written file relative to ``out``.
    """
    src, folder = sources.SOURCES[name], out / name
    if (not force and previous.get("params") == params
            and previous.get("source_sha256") == src.sha256
            and previous.get("builder_version") == BUILDER_VERSION
            and (folder / "corpus.jsonl").exists()):
        return None
    corpus, queries, qrels = convert(sources.read_source(name, sources_root), src.file)
    write_beir(folder, corpus, queries,
               split_by_passage(corpus, qrels, params["seed"], params["test_fraction"]))
    ds = load_beir(folder, name=name)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    print(f"built {folder}: {ds.counts()}")
    return {"source": f"data/sources/{src.file}", "source_sha256": src.sha256,
            "params": params, "builder_version": BUILDER_VERSION, "counts": ds.counts(),
            "files": {str(p.relative_to(out)): sha256_file(p) for p in files}}


def build_squadshifts(
    splits: Iterable[str] = SQUADSHIFTS,
    out: Path = DATA_DIR / "squadshifts",
    seed: int = DEFAULT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    sources_root: Path | None = None,
    force: bool = False,
) -> dict[str, dict]:
    """Build the SQuADShifts splits in BEIR layout from the committed sources; idempotent.

    A finished split is kept unless its source, the split parameters or the builder changed.
    A split whose (optional) source is absent is skipped with one line saying why, and a
    folder built earlier from another copy is removed, so nothing reads stale data. Returns a
    manifest: per built split, the counts and the sha256 of the source and of every written
    file; it is also written to ``<out>/manifest.json``.
    """
    splits = list(splits)
    unknown = set(splits) - set(SQUADSHIFTS)
    if unknown:
        raise ValueError(
            f"unknown SQuADShifts splits {sorted(unknown)}; known: {list(SQUADSHIFTS)}"
        )
    params = {"seed": seed, "test_fraction": test_fraction}
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    changed = False
    for s in splits:
        if not sources.SOURCES[s].required and not sources.available(s, sources_root):
            print(sources.missing_line(s))
            if s in manifest or (out / s).exists():
                shutil.rmtree(out / s, ignore_errors=True)
                manifest.pop(s, None)
                changed = True
            continue
        entry = build_one(s, lambda raw, source, s=s: squad_to_beir(json.loads(raw), source,
                                                                   s in WIKI_TITLED),
                          out, params, manifest.get(s, {}), sources_root, force)
        if entry is not None:
            manifest[s], changed = entry, True
    if changed or not manifest_path.exists():
        write_json(manifest_path, dict(sorted(manifest.items())))
    return {s: manifest[s] for s in splits if s in manifest}


def load_squadshifts(split: str, root: Path = DATA_DIR / "squadshifts") -> RetrievalDataset:
    """Load one built SQuADShifts split (run ``python -m clp_utils.catalog build`` first)."""
    folder = root / split
    if not (folder / "corpus.jsonl").exists():
        raise FileNotFoundError(
            f"{folder} is not built yet: run `python -m clp_utils.catalog build` (or `make data`)"
        )
    return load_beir(folder, name=split, title_in_text=False)


# --------------------------------------------------------------------------- MIRACL

MIRACL_REPO = "miracl/miracl"
MIRACL_CORPUS_REPO = "miracl/miracl-corpus"


def load_miracl(
    lang: str,
    root: str | Path | None = None,
    splits: tuple[str, ...] = ("dev",),
    max_corpus_files: int | None = None,
) -> RetrievalDataset:
    """Load MIRACL for one language: topics, qrels and the ``title\\ntext`` corpus.

    Files follow the MIRACL hub layout::

        miracl-v1.0-<lang>/topics/topics.miracl-v1.0-<lang>-<split>.tsv   qid \\t query
        miracl-v1.0-<lang>/qrels/qrels.miracl-v1.0-<lang>-<split>.tsv     qid Q0 docid rel
        miracl-corpus-v1.0-<lang>/docs-*.jsonl.gz                        {docid,title,text}

    With ``root=None`` they are fetched from the hub (``miracl/miracl`` and
    ``miracl/miracl-corpus``, needs network); with a local ``root`` holding the same layout
    nothing touches the network. The corpus is read with HF ``datasets``' JSON loader.
    ``dev`` becomes the test side; ``train`` (if asked) the train side.
    """
    import datasets

    base = f"miracl-v1.0-{lang}"
    corpus_dir = f"miracl-corpus-v1.0-{lang}"
    from huggingface_hub import hf_hub_download, list_repo_files

    def fetch(repo: str, name: str) -> Path:
        """A file of the hub layout: from ``root`` when given, else downloaded."""
        if root is not None:
            return Path(root) / name
        return Path(hf_hub_download(repo, name, repo_type="dataset"))

    if root is None:
        doc_names = sorted(
            f
            for f in list_repo_files(MIRACL_CORPUS_REPO, repo_type="dataset")
            if f.startswith(corpus_dir + "/") and f.endswith(".jsonl.gz")
        )
        doc_files = [fetch(MIRACL_CORPUS_REPO, f) for f in doc_names[:max_corpus_files]]
    else:
        doc_files = sorted((Path(root) / corpus_dir).glob("docs-*.jsonl.gz"))[:max_corpus_files]
    if not doc_files:
        raise DataError(f"no MIRACL corpus files for {lang!r} ({corpus_dir}/docs-*.jsonl.gz)")

    queries: dict[str, dict] = {}
    raw_qrels: dict[str, list[tuple[Path, int, str, str, int]]] = {}
    for split in splits:
        topics = fetch(MIRACL_REPO, f"{base}/topics/topics.{base}-{split}.tsv")
        for lineno, line in enumerate(topics.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise DataError(f"{topics}:{lineno}: expected 'qid<TAB>query'")
            queries[parts[0]] = {"text": parts[1], "answers": []}
        qrels_path = fetch(MIRACL_REPO, f"{base}/qrels/qrels.{base}-{split}.tsv")
        raw_qrels["test" if split == "dev" else split] = [
            (qrels_path, *row) for row in qrels_rows(qrels_path)]

    table = datasets.load_dataset("json", data_files=[str(f) for f in doc_files], split="train")
    corpus: dict[str, dict] = {}
    for row in table:
        corpus[str(row["docid"])] = {"title": row.get("title") or "", "text": row["text"]}

    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for side, rows in raw_qrels.items():
        rels: dict[str, dict[str, int]] = {}
        for path, lineno, qid, docid, rel in rows:
            if qid not in queries:
                raise DataError(f"{path}:{lineno}: unknown query {qid!r}")
            if docid not in corpus:
                # A partial corpus (max_corpus_files) cannot judge this pair: skip it.
                if max_corpus_files is None:
                    raise DataError(f"{path}:{lineno}: unknown document {docid!r}")
                continue
            rels.setdefault(qid, {})[docid] = rel
        qrels[side] = rels
    used = {q for rels in qrels.values() for q in rels}
    queries = {q: v for q, v in queries.items() if q in used}
    return RetrievalDataset(
        f"miracl-{lang}",
        corpus,
        queries,
        qrels,
        title_in_text=True,
        checksum=stable_hash([lang, splits, [str(f) for f in doc_files], len(corpus)]),
    )


# --------------------------------------------------------------------------- datasheet

DATASHEET = DATA_DIR / "README.md"
SHEET_START, SHEET_END = "<!-- counts:start -->", "<!-- counts:end -->"
SOURCES_START, SOURCES_END = "<!-- sources:start -->", "<!-- sources:end -->"


def sources_section() -> str:
    """The datasheet's table of raw sources, generated from ``sources.SOURCES``."""
    lines = [SOURCES_START, "",
             "| source | file in `data/sources/` (`.xz`) | bytes | sha256 (original bytes) | kind "
             "| origin | licence | attribution | difference from the study's earlier copy |",
             "|---|---|---:|---|---|---|---|---|---|"]
    for name, src in sources.SOURCES.items():
        lines.append(f"| {name} | `{src.file}` | {src.size:,} | `{src.sha256}` | {src.kind} | "
                     f"{src.origin} | {src.licence} | {src.attribution} | {src.note or '—'} |")
    return "\n".join([*lines, "", SOURCES_END])


def counts_section(manifest: dict[str, dict]) -> str:
    """The datasheet's table of built datasets (counts, source checksum) from a manifest."""
    lines = [SHEET_START, "",
             "| dataset | passages | train passages | test passages | train queries "
             "| test queries | source sha256 |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, entry in sorted(manifest.items()):
        c = entry["counts"]
        lines.append(
            f"| {name} | {c['passages']:,} | {c['train_passages']:,} | {c['test_passages']:,} | "
            f"{c['train_queries']:,} | {c['test_queries']:,} | `{entry['source_sha256'][:16]}…` |"
        )
    params = {json.dumps(e["params"], sort_keys=True) for e in manifest.values()}
    lines += ["", f"Split parameters: {', '.join(sorted(params))}. Full checksums of every written "
              "file: `data/<dataset>/manifest.json`.", "", SHEET_END]
    return "\n".join(lines)


def update_datasheet(manifest: dict[str, dict], path: Path = DATASHEET) -> None:
    """Rewrite the datasheet's generated sections (raw sources; counts and checksums).

    The build is deterministic, so rewriting it leaves the file unchanged unless the data
    (or the split parameters) changed. A section whose markers are absent is left out.
    """
    text = new = path.read_text(encoding="utf-8")
    for start, end, body in ((SOURCES_START, SOURCES_END, sources_section()),
                             (SHEET_START, SHEET_END, counts_section(manifest))):
        if start in new:
            head, rest = new.split(start, 1)
            new = head + body + rest.split(end, 1)[1]
    if new != text:
        with atomic_write(path) as fh:
            fh.write(new)
