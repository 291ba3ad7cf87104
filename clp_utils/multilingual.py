"""Hindi and Persian retrieval sets from the bigbench sdist, in the study's BEIR layout.

Two reading-comprehension tasks of the ``bigbench==1.0.0`` sdist (the one SQuADShifts comes
from) become retrieval sets the same way SQuADShifts does: identical passages merge, every
question keeps its answer strings, the split is by passage (``data.split_by_passage``) and
``load(name)`` returns a ``RetrievalDataset``::

    data/<name>/corpus.jsonl, queries.jsonl, qrels/{train,test}.tsv, manifest.json

- ``hindi``: ``hindi_question_answering/task.json``, 6,610 ``{"input", "target"}`` whose
  input is the context and the question joined in one string. ``split_question`` cuts it at
  the last sentence end before the question (the rule is in its docstring); inputs with no
  sentence end before the question are skipped and counted (``manifest["skipped"]``).
- ``persian``: ``parsinlu_reading_comprehension/task.json``, 518 inputs of the form
  ``passage: '...' question: '...'`` with a list of answers.

Passages embed their text alone (no titles). Neither task file states a licence; see
``data/README.md``.

Python's ``\\w`` is not a word character class for Devanagari: vowel signs and the virama
(Unicode categories Mn/Mc) are not ``\\w``, so ``re.findall(r"\\w+", "हिन्दी")`` cuts the
word into pieces. Nothing here splits on ``\\w``; ``TOKEN_PATTERN`` is a word pattern that
keeps combining marks inside words, and ``bm25`` uses it (bm25s' default ``\\b\\w\\w+\\b``
would reduce Hindi words to fragments).

``python -m clp_utils.multilingual build`` builds both sets.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from clp_utils.data import (
    BIGBENCH,
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    SQUADSHIFTS,
    TASKS,
    RetrievalDataset,
    fetch_sdist,
    load_beir,
    read_members,
    split_by_passage,
    write_beir,
)
from clp_utils.io import DataError, sha256_file, write_json
from clp_utils.paths import DATA_DIR, RESULTS_DIR

#: Bumped when the conversion rules change, so that a built set is rebuilt.
BUILDER_VERSION = 1

Converted = tuple[dict[str, dict], dict[str, dict], dict[str, dict[str, int]], int]


# --------------------------------------------------------------------------- words

# Every combining mark of the Basic Multilingual Plane: Devanagari vowel signs, virama,
# nukta, anusvara; Arabic harakat.
_MARKS = "".join(
    chr(c) for c in range(0x300, 0x10000) if unicodedata.category(chr(c)) in ("Mn", "Mc", "Me")
)
#: A word: a letter or digit, then letters, digits, combining marks or ZWJ (two or more code
#: points, as bm25s' default keeps words of two or more characters). ZWJ (U+200D) stays
#: inside: it shapes Devanagari conjuncts. The zero-width NON-joiner (U+200C) splits, as in
#: bm25s' default, because in Persian it separates morphemes (the verbal prefix mi-, the
#: plural -ha) that should match on their own.
TOKEN_PATTERN = f"[^\\W_](?:[^\\W_]|[{_MARKS}\u200d])+"


def words(text: str) -> list[str]:
    """Words of ``text`` by ``TOKEN_PATTERN`` (Devanagari words stay whole).

    Example:
        >>> words("हिन्दी भाषा, 2 kg")
        ['हिन्दी', 'भाषा', 'kg']
    """
    return re.findall(TOKEN_PATTERN, text)


# --------------------------------------------------------------------------- Hindi

# A danda (U+0964), a double danda (U+0965) or an ASCII "|" typed as a danda ends a sentence
# wherever it stands; "?", "!" and "." only before whitespace (so "1.411", "U.S" and
# "रहेंगे.हालांकि" are no ends). Closing quotes/brackets and wiki citation marks ("[8]") that
# follow the mark belong to the sentence that ends.
_AFTER = r"[.…\"'”’»)\]]*(?:\[[^\[\]\s]{1,12}\])*"
_SENTENCE_END = re.compile(rf"(?:[।॥|]|[?!.](?={_AFTER}\s)){_AFTER}")
_TRAILING = set("।॥|?!.\"'”’») \t\r\n")
# What may precede a question but is not part of it: citation marks ("[26]", "[citation
# needed]", "[उद्धरण वांछित]", a broken "[64"), a literal "\n", a quote or bracket standing alone.
_LEADING = re.compile(r"^(?:\[[^\[\]]{1,30}\]|\[\d*(?=\s)|\\n|[\"'](?=\s)|[\s.,;:|)*])+")
#: Tokens after which "." abbreviates instead of ending a sentence: Latin letter names as
#: Hindi spells them (initials such as "ली एच. हैमिल्टन") and common titles. "आई" (the
#: letter I) is left out: it is also a verb ("came") that often ends a sentence.
ABBREVIATIONS = frozenset(
    "ए बी सी डी ई एफ जी एच जे के एल एम एन ओ पी क्यू आर एस टी यू वी डब्ल्यू एक्स वाई जेड ज़ेड "
    "डॉ मि श्री सं पृ पू सेंट प्रो Mr Mrs Ms Dr St Jr Sr vs".split()
)


def _is_letter(ch: str) -> bool:
    """A letter or a combining mark (a Devanagari vowel sign is part of its word)."""
    return ch.isalpha() or unicodedata.category(ch) in ("Mn", "Mc")


def _abbreviates(text: str, dot: int) -> bool:
    """True when the "." at ``dot`` is no sentence end: an ellipsis or an abbreviation.

    Abbreviations: a single Latin letter ("J."), one of ``ABBREVIATIONS`` ("एच.", "डॉ."), or
    a dotted run of short parts ("ई.पू.", "पी.एम.", "U.S."). A "." after a closing bracket
    ends a sentence, and so does one after a dotted token with a long part
    ("marthastewartflowers.com.") or digits ("88.7.").
    """
    if "." in (text[dot - 1 : dot], text[dot + 1 : dot + 2]):
        return True
    before = text[:dot].split()
    token = before[-1].lstrip("(\"'“‘[") if before else ""
    if not token or not _is_letter(token[-1]):
        return False

    def short(part: str) -> bool:
        return part in ABBREVIATIONS or (0 < len(part) <= 3 and all(map(_is_letter, part)))

    if "." in token:
        return all(short(p) for p in token.split("."))
    return (len(token) == 1 and token.isascii()) or token in ABBREVIATIONS


def split_question(text: str) -> tuple[str, str] | None:
    """Split a context-plus-question string into ``(passage, question)``, or ``None``.

    The rule (hindi_question_answering joins each context and its question in one string):

    1. The input's own end (trailing "?", "।", ".", closing quotes and spaces) is set aside, so
       the question's terminator is never taken for the boundary.
    2. A sentence ends at a danda "।", a double danda "॥" or a "|" used as a danda; or at "?",
       "!" or "." followed by whitespace (optionally after closing quotes or brackets and
       wiki citation marks such as "[8]"). A "." does not end a sentence in an ellipsis or
       after an abbreviation: a dotted run of short parts (ई.पू, U.S), a single Latin letter,
       or one of ``ABBREVIATIONS`` (Latin letters spelled in Devanagari, titles such as डॉ).
    3. The question is the text after the LAST sentence end (leading citation marks and
       stray punctuation removed); the passage is everything before, stripped.

    Returns ``None`` (the caller skips and counts the input) when no sentence ends before
    the question or either side would be empty.

    Example:
        >>> split_question("भारत की राजधानी नई दिल्ली है। भारत की राजधानी क्या है?")
        ('भारत की राजधानी नई दिल्ली है।', 'भारत की राजधानी क्या है?')
    """
    text = text.strip()
    end = len(text)
    while end and text[end - 1] in _TRAILING:
        end -= 1
    cut = None
    for m in _SENTENCE_END.finditer(text, 0, end):
        if text[m.start()] == "." and _abbreviates(text, m.start()):
            continue
        cut = m.end()
    if cut is None:
        return None
    passage = text[:cut].strip()
    question = _LEADING.sub("", text[cut:]).strip()
    if not passage or not question:
        return None
    return passage, question


def _add(corpus: dict, by_text: dict, passage: str) -> str:
    """The id of ``passage``, adding it to the corpus on first sight (identical ones merge)."""
    docid = by_text.get(passage)
    if docid is None:
        docid = by_text[passage] = f"p{len(corpus):05d}"
        corpus[docid] = {"title": "", "text": passage}
    return docid


def _answers(target) -> list[str]:
    targets = [target] if isinstance(target, str) else list(target or [])
    return list(dict.fromkeys(t.strip() for t in targets if isinstance(t, str) and t.strip()))


def hindi_to_beir(task: dict, source: str) -> Converted:
    """``hindi_question_answering`` -> (corpus, queries, qrels, skipped).

    Query ids are ``hi<index in task.json>``; passage ids ``p00000``... in order of first
    appearance. ``skipped`` counts the inputs ``split_question`` could not split.
    """
    corpus: dict[str, dict] = {}
    by_text: dict[str, str] = {}
    queries: dict[str, dict] = {}
    qrels: dict[str, dict[str, int]] = {}
    skipped = 0
    for i, ex in enumerate(task["examples"]):
        parts = split_question(ex["input"])
        if parts is None:
            skipped += 1
            continue
        passage, question = parts
        qid = f"hi{i:05d}"
        queries[qid] = {"text": question, "answers": _answers(ex.get("target"))}
        qrels[qid] = {_add(corpus, by_text, passage): 1}
    if not queries:
        raise DataError(f"{source}: no input could be split into passage and question")
    return corpus, queries, qrels, skipped


# --------------------------------------------------------------------------- Persian

_PARSINLU = re.compile(r"^passage: '(?P<passage>.*)' question: '(?P<question>.*)'$", re.S)


def persian_to_beir(task: dict, source: str) -> Converted:
    """``parsinlu_reading_comprehension`` -> (corpus, queries, qrels, skipped).

    Inputs read ``passage: '<text>' question: '<text>'``; one that does not parse is
    skipped and counted. Query ids are ``fa<index in task.json>``.
    """
    corpus: dict[str, dict] = {}
    by_text: dict[str, str] = {}
    queries: dict[str, dict] = {}
    qrels: dict[str, dict[str, int]] = {}
    skipped = 0
    for i, ex in enumerate(task["examples"]):
        m = _PARSINLU.match(ex["input"].strip())
        passage = m["passage"].strip() if m else ""
        question = m["question"].strip() if m else ""
        if not passage or not question:
            skipped += 1
            continue
        qid = f"fa{i:05d}"
        queries[qid] = {"text": question, "answers": _answers(ex.get("target"))}
        qrels[qid] = {_add(corpus, by_text, passage): 1}
    if not queries:
        raise DataError(f"{source}: no input parsed as \"passage: '...' question: '...'\"")
    return corpus, queries, qrels, skipped


# --------------------------------------------------------------------------- the sets


@dataclass(frozen=True)
class Source:
    """One task of the sdist and how it becomes a retrieval set."""

    member: str  # path inside the sdist
    convert: Callable[[dict, str], Converted]
    language: str  # Snowball (PyStemmer) name, for BM25
    licence: str  # as the task files state it


DATASETS = {
    "hindi": Source(
        f"{TASKS}/hindi_question_answering/task.json", hindi_to_beir, "hindi", "not stated"
    ),
    "persian": Source(
        f"{TASKS}/parsinlu_reading_comprehension/task.json",
        persian_to_beir,
        "persian",
        "not stated",
    ),
}


def build(
    names: Iterable[str] = ("hindi", "persian"),
    out: Path = DATA_DIR,
    seed: int = DEFAULT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    sdist_path: Path | None = None,
    force: bool = False,
) -> dict[str, dict]:
    """Build the named sets into ``<out>/<name>/``; idempotent (a finished set is kept).

    Returns ``{name: manifest entry}``, each entry shaped like SQuADShifts' (``source``,
    ``source_sha256``, ``params``, ``counts``, ``files``: sha256 of every written file,
    relative to ``out``) plus ``skipped`` (inputs that could not be converted) and
    ``builder_version``. Each entry is also written to ``<out>/<name>/manifest.json`` as
    ``{name: entry}``.
    """
    names = list(names)
    unknown = set(names) - set(DATASETS)
    if unknown:
        raise ValueError(f"unknown multilingual sets {sorted(unknown)}; known: {list(DATASETS)}")
    out = Path(out)
    params = {"seed": seed, "test_fraction": test_fraction, "sdist": BIGBENCH.sha256}
    manifest = {n: _read_manifest(out, n) for n in names}
    todo = [
        n
        for n in names
        if force
        or manifest[n].get("params") != params
        or manifest[n].get("builder_version") != BUILDER_VERSION
        or not (out / n / "corpus.jsonl").exists()
    ]
    if todo:
        tarball = sdist_path or fetch_sdist()
        members = read_members(tarball, [DATASETS[n].member for n in todo])
        for n in todo:
            src = DATASETS[n]
            raw = members[src.member]
            corpus, queries, qrels, skipped = src.convert(json.loads(raw), src.member)
            write_beir(
                out / n, corpus, queries, split_by_passage(corpus, qrels, seed, test_fraction)
            )
            ds = load_beir(out / n, name=n)
            files = sorted(p for p in (out / n).rglob("*") if p.is_file())
            manifest[n] = {
                "source": f"{BIGBENCH.filename}:{src.member}",
                "source_sha256": hashlib.sha256(raw).hexdigest(),
                "params": params,
                "counts": ds.counts(),
                "files": {str(p.relative_to(out)): sha256_file(p) for p in files},
                "skipped": skipped,
                "builder_version": BUILDER_VERSION,
            }
            write_json(out / n / "manifest.json", {n: manifest[n]})
            print(f"built {out / n}: {ds.counts()}, skipped {skipped} inputs")
    return manifest


def _read_manifest(out: Path, name: str) -> dict:
    path = out / name / "manifest.json"
    return json.loads(path.read_text()).get(name, {}) if path.exists() else {}


def load(name: str, root: Path = DATA_DIR) -> RetrievalDataset:
    """Load a built multilingual set (``hindi`` or ``persian``).

    Raises ``ValueError`` listing every dataset name the configs know for an unknown name,
    and ``FileNotFoundError`` naming the build command when the set is not built.
    """
    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; known: SQuADShifts {list(SQUADSHIFTS)}, "
            f"multilingual {list(DATASETS)}, or 'miracl-<lang>' (hub)"
        )
    folder = Path(root) / name
    if not (folder / "corpus.jsonl").exists():
        raise FileNotFoundError(
            f"{folder} is not built yet: run `python -m clp_utils.data build` "
            "(or `python -m clp_utils.multilingual build`)"
        )
    return load_beir(folder, name=name, title_in_text=False)


def language(name: str) -> str:
    """The Snowball (PyStemmer) language of a multilingual set, for BM25."""
    return DATASETS[name].language


# --------------------------------------------------------------------------- BM25


def bm25(dataset: RetrievalDataset, language: str):
    """BM25 over ``dataset.test()`` with ``TOKEN_PATTERN`` words and a Snowball stemmer.

    As ``evaluation.bm25`` (bm25s, Lucene variant, cached in ``results/baselines/``), but
    words are cut by ``TOKEN_PATTERN``, not bm25s' ``\\b\\w\\w+\\b``, which breaks Devanagari
    words at every vowel sign. No stop-word list (bm25s has none for these languages).
    """
    import bm25s
    import Stemmer

    from clp_utils.evaluation import (
        RetrievalResult,
        evaluate_run,
        read_trec,
        save_evaluation,
        to_run,
    )

    run_dir = RESULTS_DIR / "baselines" / f"bm25-{language}-{dataset.name}-{dataset.checksum[:8]}"
    test = dataset.test()
    if (run_dir / "metrics.json").exists():
        run = read_trec(run_dir / "run.trec")
        return RetrievalResult(run_dir, run, evaluate_run(run, test.qrels))
    stemmer = Stemmer.Stemmer(language)

    def tokenize(texts: list[str]):
        return bm25s.tokenize(
            texts,
            token_pattern=TOKEN_PATTERN,
            stopwords=None,
            stemmer=stemmer,
            show_progress=False,
        )

    docids = list(test.corpus)
    retriever = bm25s.BM25()
    retriever.index(tokenize([test.passage_text(d) for d in docids]), show_progress=False)
    qids = list(test.queries)
    idx, scores = retriever.retrieve(
        tokenize([test.queries[q]["text"] for q in qids]),
        k=min(100, len(docids)),
        show_progress=False,
    )
    return save_evaluation(to_run(qids, docids, scores, idx), test, run_dir, tag=f"bm25-{language}")


# --------------------------------------------------------------------------- the track

#: Trained rows of the cpu profile: the InfoNCE reference, CLP, and CLP on the intermediate
#: layers (the paper's central claims). Random negatives and MoE run in the full profile.
CPU_ROWS = ("ANCE negatives", "ANCE + CLP", "ANCE + CLP, intermediate only")


@dataclass(frozen=True)
class TrackProfile:
    """Sizes of chapter 06 in one profile.

    ``study`` is a ``study.StudyProfile`` (split ``hindi``, seeds, rows, the shared
    ``TrainConfig``: mE5-small with frozen word embeddings); ``base.passages`` is the Hindi
    subset every Hindi number uses, ``persian_passages`` the Persian one (None: all).
    """

    study: object  # study.StudyProfile (imported lazily: it pulls in torch)
    persian_passages: int | None

    @property
    def hindi_passages(self) -> int | None:
        return self.study.base.passages


def track_profile(profile: str):
    """The ``TrackProfile`` of ``"smoke"``, ``"cpu"`` or ``"full"``.

    - ``smoke``: 30 Hindi / 20 Persian passages, two trained rows, one seed, a few steps.
    - ``cpu`` (2 cores, ~30 min): 600 Hindi passages (~170 test queries), all 505 Persian
      ones; ``CPU_ROWS`` with seeds 0 and 1, 10 steps of 16 queries, passages cut to 128
      tokens while training, bf16 autocast where the CPU computes bf16 natively
      (``clp_utils.precision``), as the English cpu profile.
    - ``full`` (a GPU): whole sets, the paper's five rows, seeds 0-2, every training query,
      Persian as the out-of-domain (forgetting) set.

    Every hyperparameter is the English study's (fixed a priori, never tuned on test queries).
    """
    from clp_utils.mining import MiningConfig
    from clp_utils.study import PAPER_ROWS, ZERO_SHOT, StudyProfile
    from clp_utils.training import TrainConfig

    me5 = dict(model="me5-small", split="hindi", freeze_embeddings=True)
    profiles = {
        "smoke": TrackProfile(
            StudyProfile(
                splits=("hindi",),
                seeds=(0,),
                rows=(ZERO_SHOT, "ANCE negatives", "ANCE + CLP"),
                base=TrainConfig(
                    **me5,
                    passages=30,
                    train_queries=8,
                    batch_size=4,
                    max_query_len=16,
                    max_passage_len=32,
                    checkpoint_every=5,
                    ood_split=None,
                    mining=MiningConfig(rank_min=2, rank_max=15, num_negatives=2),
                ),
            ),
            persian_passages=20,
        ),
        "cpu": TrackProfile(
            StudyProfile(
                splits=("hindi",),
                seeds=(0, 1),
                rows=(ZERO_SHOT, *CPU_ROWS),
                base=TrainConfig(
                    **me5,
                    passages=600,
                    train_queries=160,
                    batch_size=16,
                    max_passage_len=128,
                    ood_split=None,
                ),
            ),
            persian_passages=None,
        ),
        "full": TrackProfile(
            StudyProfile(
                splits=("hindi",),
                seeds=(0, 1, 2),
                rows=tuple(PAPER_ROWS),
                base=TrainConfig(
                    **me5,
                    train_queries=None,
                    batch_size=16,
                    max_passage_len=256,
                    ood_split="persian",
                ),
            ),
            persian_passages=None,
        ),
    }
    try:
        return profiles[profile]
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}; choose one of {list(profiles)}") from None


def load_sized(name: str, passages: int | None) -> RetrievalDataset:
    """A multilingual set, subset to ``passages`` as training does (``subset(n, seed=0)``)."""
    ds = load(name)
    return ds.subset(passages, seed=0) if passages is not None and passages < len(ds.corpus) else ds


def zero_shot_runs(
    profile: str, models: Iterable[str] = ("me5-small", "minilm"), progress: bool = True
) -> dict[tuple[str, str], object]:
    """Zero-shot retrieval on Hindi and Persian: ``{(dataset, system): RetrievalResult}``.

    Systems: BM25 (``bm25``: Snowball stemmer of the language, ``TOKEN_PATTERN`` words) and
    each dense model in ``models`` (``evaluation.zero_shot``, cached). The Hindi set is the
    profile's training subset, so these numbers pair with the fine-tuned runs.
    """
    from clp_utils.evaluation import zero_shot
    from clp_utils.models import load_model

    tp = track_profile(profile)
    sets = {
        "hindi": load_sized("hindi", tp.hindi_passages),
        "persian": load_sized("persian", tp.persian_passages),
    }
    out = {}
    for name, ds in sets.items():
        out[(name, "BM25")] = bm25(ds, language(name))
    for model_name in models:
        model = load_model(model_name)
        for name, ds in sets.items():
            out[(name, model_name)] = zero_shot(ds, model_name, model, progress=progress)
    return out


def zero_shot_tables(results: dict, metric: str = "ndcg_cut_10", n_permutations: int = 10_000):
    """(metrics table, significance table) of ``zero_shot_runs``' results.

    Significance: on each dataset, the first dense model against every other system, paired
    over the same test queries, Holm-corrected over the whole table.
    """
    import pandas as pd

    from clp_utils.evaluation import holm, paired_test

    rows = [
        {
            "dataset": d,
            "system": s,
            "test queries": len(r.evaluation.per_query[metric]),
            **r.metrics,
        }
        for (d, s), r in results.items()
    ]
    table = pd.DataFrame(rows).set_index(["dataset", "system"])
    table = table.sort_index(level="dataset", sort_remaining=False)
    tests = []
    for dataset in dict.fromkeys(d for d, _ in results):
        systems = [s for d, s in results if d == dataset]
        dense = [s for s in systems if s != "BM25"]
        if not dense:
            continue
        ref = dense[0]
        for other in systems:
            if other == ref:
                continue
            a = results[(dataset, other)].evaluation.per_query[metric]
            b = results[(dataset, ref)].evaluation.per_query[metric]
            t = paired_test(a, b, metric, n_permutations)
            tests.append(
                {
                    "dataset": dataset,
                    "comparison": f"{ref} vs {other}",
                    "n queries": t.n,
                    "delta": t.mean_delta,
                    "p (permutation)": t.p_permutation,
                    "p (t-test)": t.p_ttest,
                }
            )
    sig = pd.DataFrame(tests)
    if len(sig):
        sig["p Holm (permutation)"] = holm(sig["p (permutation)"].tolist())
        sig["significant (0.05)"] = sig["p Holm (permutation)"] < 0.05
    return table, sig


def run_track(profile: str, progress: bool = True) -> list:
    """Train (or reuse) every Hindi run of the profile: a list of ``study.StudyRun``.

    Rows are ``study.row_config`` rows on split ``hindi`` with the profile's base config, so
    ``study.table2``, ``significance_table`` and ``claims_table`` apply unchanged. The
    zero-shot row evaluates mE5-small on the same subset (and on Persian when the profile
    has an out-of-domain set).
    """
    from dataclasses import replace

    from clp_utils.evaluation import zero_shot
    from clp_utils.study import ZERO_SHOT, StudyRun, row_config
    from clp_utils.training import load_training_data, train

    p = track_profile(profile).study
    runs = []
    for split in p.splits:
        for row in p.rows:
            if row == ZERO_SHOT:
                ds, ood = load_training_data(replace(p.base, split=split))
                zs = zero_shot(ds, p.base.model, progress=progress)
                zo = zero_shot(ood, p.base.model, progress=progress) if ood is not None else None
                runs.append(
                    StudyRun(
                        row,
                        split,
                        0,
                        None,
                        zs.evaluation.per_query,
                        zo.evaluation.per_query if zo else None,
                    )
                )
                continue
            for seed in p.seeds:
                res = train(row_config(row, p.base, split, seed), progress=progress)
                runs.append(
                    StudyRun(
                        row,
                        split,
                        seed,
                        res,
                        res.in_domain.evaluation.per_query,
                        res.ood.evaluation.per_query if res.ood else None,
                    )
                )
    return runs


def trainable_parameters(runs: list):
    """Per trained row: the policy, trainable and total parameters (from each run's config)."""
    import pandas as pd

    rows = {}
    for r in runs:
        if r.result is not None and r.row not in rows:
            info = json.loads((r.result.run_dir / "config.json").read_text())["params"]
            rows[r.row] = {**info, "trainable share": info["trainable"] / info["total"]}
    return pd.DataFrame.from_dict(rows, orient="index")


def summary_table(zero_shot_table, runs: list, metric: str = "ndcg_cut_10"):
    """Chapter 06 in one table (the README's): every Hindi system on the same test queries.

    BM25 and MiniLM zero-shot (from ``zero_shot_tables``), mE5-small zero-shot and each
    fine-tuned row (mean and sd over seeds, ``study.table2``), with the delta and the
    Holm-corrected permutation p-value against mE5 zero-shot and against ANCE + InfoNCE
    (``study.significance_table``: per-query values averaged over seeds).
    """
    import numpy as np
    import pandas as pd

    from clp_utils.study import ZERO_SHOT, significance_table, table2

    t2 = table2(runs, metric).loc["hindi"]
    sig = significance_table(runs, metric).set_index("comparison")
    rows = []
    for system, r in zero_shot_table.loc["hindi"].iterrows():
        if system not in ("BM25", "minilm"):
            continue
        rows.append(
            {
                "system": "BM25" if system == "BM25" else f"{system} zero-shot",
                "seeds": 1,
                f"{metric} mean": r[metric],
            }
        )
    for row, r in t2.iterrows():
        entry = {
            "system": "me5-small zero-shot" if row == ZERO_SHOT else f"me5-small, {row}",
            "seeds": int(r["seeds"]),
            f"{metric} mean": r[f"{metric} mean"],
            f"{metric} sd": r[f"{metric} sd"],
        }
        for ref, tag in ((ZERO_SHOT, "zero-shot"), ("ANCE negatives", "ANCE + InfoNCE")):
            key = f"{row} vs {ref}"
            if key in sig.index:
                entry[f"delta vs {tag}"] = sig.loc[key, "delta"]
                entry[f"Holm p vs {tag}"] = sig.loc[key, "p Holm (permutation)"]
        rows.append(entry)
    out = pd.DataFrame(rows).set_index("system")
    cols = [c for c in out.columns if c != "seeds"]
    return out[["seeds", *cols]].replace({None: np.nan})


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    """``python -m clp_utils.multilingual build [--names hindi persian] [--force]``."""
    parser = argparse.ArgumentParser(
        prog="python -m clp_utils.multilingual", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the Hindi and Persian sets in BEIR layout")
    b.add_argument("--names", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    b.add_argument("--out", type=Path, default=DATA_DIR)
    b.add_argument("--seed", type=int, default=DEFAULT_SEED)
    b.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION)
    b.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    manifest = build(args.names, args.out, args.seed, args.test_fraction, force=args.force)
    json.dump(
        {n: e["counts"] | {"skipped": e["skipped"]} for n, e in manifest.items()},
        sys.stdout,
        indent=2,
    )
    print()


if __name__ == "__main__":
    main()
