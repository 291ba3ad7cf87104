"""Retrieval data: SQuADShifts from the committed sources, BEIR folders, MIRACL, and the split.

``python -m clp_utils.catalog build`` reads the raw files in ``data/sources/`` (SQuAD v1.1 dev
and the SQuADShifts test sets, checked by ``clp_utils.sources``), never the network, and
writes every split in BEIR layout::

    data/squadshifts/<split>/corpus.jsonl   {"_id", "title", "text"}
    data/squadshifts/<split>/queries.jsonl  {"_id", "text", "metadata": {"answers": [...]}}
    data/squadshifts/<split>/qrels/{train,test}.tsv

The train/test split is BY PASSAGE: a fixed-seed 20% of passages are test passages and their
questions the test queries. ``RetrievalDataset.train()`` holds no test passage or query, so
mining and training cannot leak; ``test()`` searches the WHOLE corpus, as retrieval does.
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

#: The SQuADShifts splits, in the order the tables show them (SQuAD v1.1 dev first), each
#: built from the source of the same name in ``sources.SOURCES``.
SQUADSHIFTS = ("squaddev", "new_wiki", "nyt", "reddit", "amazon")
#: Splits whose article titles are real Wikipedia titles (others are URLs or placeholders).
WIKI_TITLED = {"squaddev", "new_wiki"}
#: Bumped when the conversion rules change, so that a built split is rebuilt.
BUILDER_VERSION = 2

DEFAULT_SEED = 13
DEFAULT_TEST_FRACTION = 0.2

Qrels = dict[str, dict[str, int]]  # qid -> {docid: relevance}
#: (corpus, queries, qrels) of one dataset, as ``squad_to_beir`` returns them.
BeirTriple = tuple[dict[str, dict], dict[str, dict], Qrels]
#: A source's bytes and file name -> its ``BeirTriple``.
Converter = Callable[[bytes, str], BeirTriple]


def available_splits(splits: Iterable[str] = SQUADSHIFTS) -> list[str]:
    """The SQuADShifts splits whose source file is in ``data/sources/`` (nyt may be absent)."""
    return [s for s in splits if sources.available(s)]


@dataclass
class Split:
    """What one side of the passage split may see: ``corpus`` (docid -> {"title", "text"}),
    ``queries`` (qid -> {"text", "answers"}) and ``qrels`` (qid -> {docid: relevance})."""

    name: str
    corpus: dict[str, dict]
    queries: dict[str, dict]
    qrels: Qrels
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
    """A BEIR-style dataset split by passage: training code gets ``train()``, evaluation
    ``test()``; the raw queries and qrels are private on purpose."""

    name: str
    corpus: dict[str, dict]
    _queries: dict[str, dict] = field(repr=False)
    _qrels: dict[str, Qrels] = field(repr=False)
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
        """Passages carved out of the train side for validation."""
        return {d for rels in self._qrels.get("val", {}).values() for d in rels}

    def _split(self, side: str, held_out: set[str] | None, qrels: Qrels) -> Split:
        """Side ``side``: ``qrels``' queries over the corpus less ``held_out`` (None: all)."""
        corpus = self.corpus if held_out is None else {
            d: doc for d, doc in self.corpus.items() if d not in held_out}
        return Split(side, corpus, {q: self._queries[q] for q in qrels}, qrels,
                     self.title_in_text)

    def train(self) -> Split:
        """Train passages and their queries only (no test or validation passage or query)."""
        held_out = self.test_passages | self.val_passages
        qrels = self._qrels.get("train", {})
        leaked = [q for q, rels in qrels.items() if any(d in held_out for d in rels)]
        if leaked:
            raise DataError(
                f"{self.name}: {len(leaked)} train queries are judged on held-out passages "
                f"(e.g. {leaked[:3]}): the split is not by passage")
        return self._split("train", held_out, qrels)

    def validation(self) -> Split:
        """Validation queries against every non-test passage: where the study's choices are
        scored (``test()`` is used once, for the final rows)."""
        qrels = self._qrels.get("val")
        if qrels is None:
            raise ValueError(f"{self.name}: no validation side; use with_validation() first")
        return self._split("val", self.test_passages, qrels)

    def test(self) -> Split:
        """Test queries against the whole corpus."""
        return self._split("test", None, self._qrels.get("test", {}))

    def with_validation(self, fraction: float, seed: int = DEFAULT_SEED) -> RetrievalDataset:
        """A copy whose train side loses a seeded ``fraction`` of its passages (and every
        train query judged on one) to validation; ``fraction=0`` returns ``self``."""
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
        return RetrievalDataset(self.name, self.corpus, self._queries, qrels, self.title_in_text,
                                stable_hash([self.checksum, "val", fraction, seed]))

    def subset(self, n_passages: int, seed: int = 0) -> RetrievalDataset:
        """A smaller dataset of ``n_passages`` passages, each side keeping its share; a
        passage and its queries are kept or dropped together."""
        rng = np.random.default_rng(seed)
        test = sorted(self.test_passages)
        rest = sorted(set(self.corpus) - set(test))
        n_test = max(1, round(n_passages * len(test) / max(1, len(self.corpus))))
        keep = set(rng.choice(test, min(n_test, len(test)), replace=False).tolist())
        n_rest = min(n_passages - len(keep), len(rest))
        keep |= set(rng.choice(rest, n_rest, replace=False).tolist())
        qrels = {side: {q: r for q, r in rels.items() if set(r) <= keep and set(r) & keep}
                 for side, rels in self._qrels.items()}
        qids = {q for rels in qrels.values() for q in rels}
        return RetrievalDataset(f"{self.name}[{n_passages}]",
                                {d: self.corpus[d] for d in sorted(keep)},
                                {q: v for q, v in self._queries.items() if q in qids}, qrels,
                                self.title_in_text, stable_hash([self.checksum, n_passages, seed]))

    def sized(self, n_passages: int | None, seed: int = 0) -> RetrievalDataset:
        """``subset(n_passages, seed)``, or ``self`` when ``n_passages`` is None or covers all."""
        if n_passages is None or n_passages >= len(self.corpus):
            return self
        return self.subset(n_passages, seed)

    def counts(self) -> dict[str, int]:
        """Passages and queries on each side of the split (validation only when carved)."""
        out = {"passages": len(self.corpus),
               "train_passages": len(self.corpus) - len(self.test_passages | self.val_passages),
               "test_passages": len(self.test_passages),
               "train_queries": len(self._qrels.get("train", {})),
               "test_queries": len(self._qrels.get("test", {}))}
        if "val" in self._qrels:
            out.update(val_passages=len(self.val_passages), val_queries=len(self._qrels["val"]))
        return out


# --------------------------------------------------------------------------- BEIR I/O


def load_beir(folder: str | Path, name: str | None = None,
              title_in_text: bool = False) -> RetrievalDataset:
    """Load a BEIR folder (``dev`` qrels are the test side without ``test.tsv``); bad input
    raises ``DataError`` naming the file and line."""
    folder = Path(folder)
    corpus = {d: {"title": r.get("title", "") or "", "text": r["text"]}
              for d, r in _records_by_id(folder / "corpus.jsonl").items()}
    queries = {q: {"text": r["text"], "answers": list((r.get("metadata") or {}).get("answers", []))}
               for q, r in _records_by_id(folder / "queries.jsonl").items()}
    qrels_dir = folder / "qrels"
    if not qrels_dir.is_dir():
        raise DataError(f"{qrels_dir}: missing qrels folder")
    files = sorted(qrels_dir.glob("*.tsv"))
    qrels = {p.stem: read_qrels(p, queries, corpus) for p in files}
    if "test" not in qrels and "dev" in qrels:
        qrels["test"] = qrels.pop("dev")
    both = set(qrels.get("train", {})) & set(qrels.get("test", {}))
    if both:
        raise DataError(f"{qrels_dir}: {len(both)} queries are in train and test: "
                        f"{sorted(both)[:5]}")
    checksum = stable_hash([sha256_file(p) for p in
                            (folder / "corpus.jsonl", folder / "queries.jsonl", *files)])
    return RetrievalDataset(name or folder.name, corpus, queries, qrels, title_in_text, checksum)


def _records_by_id(path: Path) -> dict[str, dict]:
    """A JSONL file's records by ``_id``, each with a string ``text``."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    out: dict[str, dict] = {}
    for lineno, row in enumerate(read_jsonl(path), start=1):
        rid = row.get("_id")
        if rid is None:
            raise DataError(f"{path}:{lineno}: record without '_id'")
        if not isinstance(row.get("text"), str):
            raise DataError(f"{path}:{lineno}: record {rid!r} has no string field 'text'")
        rid = str(rid)
        if rid in out:
            raise DataError(f"{path}:{lineno}: duplicate id {rid!r}")
        out[rid] = row
    if not out:
        raise DataError(f"{path}: empty (no records)")
    return out


def qrels_rows(path: Path) -> list[tuple[int, str, str, int]]:
    """``(line, qid, docid, relevance)`` of a BEIR (tab-separated, header) or TREC (``qid Q0
    docid rel``) qrels file; a malformed line is a ``DataError`` naming the file and line."""
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
            rows.append((lineno, qid, docid, int(score)))
        except ValueError:
            raise DataError(f"{path}:{lineno}: relevance {score!r} is not an integer") from None
    return rows


def read_qrels(path: Path, queries: dict | None = None, corpus: dict | None = None) -> Qrels:
    """Read a qrels file, refusing a duplicate judgement and (when given) unknown ids."""
    qrels: Qrels = {}
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
            f"{len(unknown_d)} unknown documents (e.g. {unknown_d[:5]})")
    return qrels


def write_beir(folder: Path, corpus: dict[str, dict], queries: dict[str, dict],
               qrels: dict[str, Qrels]) -> None:
    """Write a BEIR folder atomically (the whole folder appears at once or not at all)."""
    with atomic_dir(folder) as tmp:
        write_jsonl(tmp / "corpus.jsonl", ({"_id": d, **doc} for d, doc in corpus.items()))
        write_jsonl(tmp / "queries.jsonl", (
            {"_id": q, "text": v["text"], "metadata": {"answers": v.get("answers", [])}}
            for q, v in queries.items()))
        for side, rels in qrels.items():
            with atomic_write(tmp / "qrels" / f"{side}.tsv") as fh:
                fh.write("query-id\tcorpus-id\tscore\n")
                for qid, docs in rels.items():
                    for docid, rel in docs.items():
                        fh.write(f"{qid}\t{docid}\t{rel}\n")


# --------------------------------------------------------------------------- SQuAD -> BEIR


def squad_to_beir(squad: dict, source: str, keep_titles: bool = True) -> BeirTriple:
    """SQuAD JSON -> (corpus, queries, qrels), identical paragraphs merged (ids ``p00000``...
    in order of first appearance), each query's distinct answer strings kept."""
    corpus: dict[str, dict] = {}
    by_text: dict[str, str] = {}
    queries: dict[str, dict] = {}
    qrels: Qrels = {}
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


def split_by_passage(corpus: dict[str, dict], qrels: Qrels, seed: int = DEFAULT_SEED,
                     test_fraction: float = DEFAULT_TEST_FRACTION) -> dict[str, Qrels]:
    """Assign a fixed-seed ``test_fraction`` of passages to test; a query judged on any test
    passage is a test query, so no training query shares a passage with a test query."""
    ids = sorted(corpus)
    order = np.random.default_rng(seed).permutation(len(ids))
    test_docs = {ids[i] for i in order[:round(test_fraction * len(ids))]}
    out: dict[str, Qrels] = {"train": {}, "test": {}}
    for qid, rels in qrels.items():
        out["test" if any(d in test_docs for d in rels) else "train"][qid] = rels
    return out


def build_one(name: str, convert: Converter, out: Path, params: dict, previous: dict,
              sources_root: Path | None = None, force: bool = False) -> dict | None:
    """Build dataset ``name`` from its source into ``<out>/<name>/`` (split by passage with
    ``params``) and return its manifest entry (source, parameters, builder version, counts,
    sha256 of every file); None when ``previous`` shows the same source, parameters and builder."""
    src, folder = sources.SOURCES[name], out / name
    if (not force and previous.get("params") == params
            and previous.get("source_sha256") == src.sha256
            and previous.get("builder_version") == BUILDER_VERSION
            and (folder / "corpus.jsonl").exists()):
        return None
    corpus, queries, qrels = convert(sources.read_source(name, sources_root), src.file)
    write_beir(folder, corpus, queries,
               split_by_passage(corpus, qrels, params["seed"], params["test_fraction"]))
    counts = load_beir(folder, name=name).counts()
    print(f"built {folder}: {counts}")
    return {"source": f"data/sources/{src.file}", "source_sha256": src.sha256,
            "params": params, "builder_version": BUILDER_VERSION, "counts": counts,
            "files": {str(p.relative_to(out)): sha256_file(p)
                      for p in sorted(folder.rglob("*")) if p.is_file()}}


def build_squadshifts(splits: Iterable[str] = SQUADSHIFTS, out: Path = DATA_DIR / "squadshifts",
                      seed: int = DEFAULT_SEED, test_fraction: float = DEFAULT_TEST_FRACTION,
                      sources_root: Path | None = None, force: bool = False) -> dict[str, dict]:
    """Build the SQuADShifts splits (``build_one``), skipping with one line a split whose
    optional source is absent (and removing its earlier folder); returns the manifest, also
    written to ``<out>/manifest.json``."""
    splits = list(splits)
    unknown = set(splits) - set(SQUADSHIFTS)
    if unknown:
        raise ValueError(f"unknown SQuADShifts splits {sorted(unknown)}; "
                         f"known: {list(SQUADSHIFTS)}")
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


def load_built(folder: Path, name: str) -> RetrievalDataset:
    """Load a dataset that ``make data`` builds, or say (``FileNotFoundError``) how to build it."""
    if not (folder / "corpus.jsonl").exists():
        raise FileNotFoundError(
            f"{folder} is not built yet: run `python -m clp_utils.catalog build` (or `make data`)")
    return load_beir(folder, name=name, title_in_text=False)


def load_squadshifts(split: str, root: Path = DATA_DIR / "squadshifts") -> RetrievalDataset:
    """Load one built SQuADShifts split (run ``python -m clp_utils.catalog build`` first)."""
    return load_built(root / split, split)


# --------------------------------------------------------------------------- MIRACL

def load_miracl(lang: str, root: str | Path | None = None,
                splits: tuple[str, ...] = ("dev",)) -> RetrievalDataset:
    """Load MIRACL for one language (``title\\ntext`` passages) from a local ``root`` or (None)
    the hub (cached by ``huggingface_hub``), in the hub's layout::

        miracl-v1.0-<lang>/topics/topics.miracl-v1.0-<lang>-<split>.tsv   qid \\t query
        miracl-v1.0-<lang>/qrels/qrels.miracl-v1.0-<lang>-<split>.tsv     qid Q0 docid rel
        miracl-corpus-v1.0-<lang>/docs-*.jsonl.gz                        {docid,title,text}

    ``dev`` becomes the test side, ``train`` (if asked) the train side.
    """
    import datasets

    base, corpus_dir = f"miracl-v1.0-{lang}", f"miracl-corpus-v1.0-{lang}"
    if root is None:
        from huggingface_hub import snapshot_download

        root = snapshot_download("miracl/miracl", repo_type="dataset", allow_patterns=[
            f"{base}/{kind}/{kind}.{base}-{split}.tsv"
            for kind in ("topics", "qrels") for split in splits])
        corpus_root = Path(snapshot_download("miracl/miracl-corpus", repo_type="dataset",
                                             allow_patterns=[f"{corpus_dir}/docs-*.jsonl.gz"]))
    else:
        corpus_root = Path(root)
    doc_files = sorted((corpus_root / corpus_dir).glob("docs-*.jsonl.gz"))
    if not doc_files:
        raise DataError(f"no MIRACL corpus files for {lang!r} ({corpus_dir}/docs-*.jsonl.gz)")

    queries: dict[str, dict] = {}
    judged = {}  # split -> (path, rows): a missing or malformed file fails before the corpus loads
    for split in splits:
        topics = Path(root) / base / "topics" / f"topics.{base}-{split}.tsv"
        for lineno, line in enumerate(topics.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                parts = line.split("\t")
                if len(parts) != 2:
                    raise DataError(f"{topics}:{lineno}: expected 'qid<TAB>query'")
                queries[parts[0]] = {"text": parts[1], "answers": []}
        path = Path(root) / base / "qrels" / f"qrels.{base}-{split}.tsv"
        judged[split] = (path, list(qrels_rows(path)))
    table = datasets.load_dataset("json", data_files=[str(f) for f in doc_files], split="train")
    corpus = {str(r["docid"]): {"title": r.get("title") or "", "text": r["text"]} for r in table}
    qrels: dict[str, Qrels] = {}
    for split, (path, rows) in judged.items():
        rels = qrels["test" if split == "dev" else split] = {}
        for lineno, qid, docid, rel in rows:
            if qid not in queries:
                raise DataError(f"{path}:{lineno}: unknown query {qid!r}")
            if docid not in corpus:
                raise DataError(f"{path}:{lineno}: unknown document {docid!r}")
            rels.setdefault(qid, {})[docid] = rel
    used = {q for rels in qrels.values() for q in rels}
    return RetrievalDataset(
        f"miracl-{lang}", corpus, {q: v for q, v in queries.items() if q in used}, qrels,
        title_in_text=True,
        # the files' names, not their paths: a cache moved or on another machine keeps run ids
        checksum=stable_hash([lang, splits, [f.relative_to(corpus_root).as_posix()
                                             for f in doc_files], len(corpus)]))


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
    """Rewrite the datasheet's generated sections (raw sources; counts and checksums) where
    their markers are (the file changes only when the data or the split parameters do)."""
    text = new = path.read_text(encoding="utf-8")
    for start, end, body in ((SOURCES_START, SOURCES_END, sources_section()),
                             (SHEET_START, SHEET_END, counts_section(manifest))):
        if start in new:
            head, rest = new.split(start, 1)
            new = head + body + rest.split(end, 1)[1]
    if new != text:
        with atomic_write(path) as fh:
            fh.write(new)
