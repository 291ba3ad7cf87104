"""Hindi/Persian builder (XQuAD and ParsiNLU to BEIR, manifest), BM25 words, chapter-06 tables,
and the MIRACL configs of the paper's setting on offline fixtures."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import replace
from types import SimpleNamespace

import pandas as pd
import pytest
from miracl_fixture import write_miracl_fixture
from sources_fixture import fixture_sources

from clp_utils import catalog as C
from clp_utils import data as D
from clp_utils import evaluation as E
from clp_utils import languages as M
from clp_utils import multilingual as S
from clp_utils import sources as SRC
from clp_utils.base.io import DataError, sha256_file
from clp_utils.base.paths import REPO_ROOT


def test_words_keep_devanagari_vowel_signs_and_split_persian_zwnj():
    # the pitfall: Python's \w is not a word class for Devanagari (vowel signs are marks)
    assert re.findall(r"\w+", "हिन्दी") != ["हिन्दी"]
    assert M.words("हिन्दी भाषा की किताबें, 2 kg") == ["हिन्दी", "भाषा", "की", "किताबें", "kg"]
    assert M.words("آب و هوای می\u200cباشد") == ["آب", "هوای", "می", "باشد"]


# --------------------------------------------------------------------------- conversion

# XQuAD Hindi is SQuAD JSON: one article, paragraphs with their questions.
XQUAD_HI = {"version": "1.1", "data": [{"title": "Bharat", "paragraphs": [
    {"context": "भारत एक देश है। इसकी राजधानी दिल्ली है।", "qas": [
        {"id": "a1", "question": "भारत की राजधानी क्या है?",
         "answers": [{"answer_start": 27, "text": " दिल्ली "}]},
        {"id": "a2", "question": "भारत क्या है?", "answers": [{"answer_start": 5, "text": "एक देश"}]},
    ]},
] + [{"context": f"यह अनुच्छेद संख्या {i} है।", "qas": [
    {"id": f"n{i}", "question": f"अनुच्छेद {i} की संख्या क्या है?",
     "answers": [{"answer_start": 19, "text": str(i)}]}]} for i in range(10)]}]}
# ParsiNLU reading comprehension: one JSON object per line, answers as [start, text] pairs.
PARSINLU_ROWS = [
    {"question": "پایتخت ایران کجاست؟", "url": "u", "passage": "تهران پایتخت ایران است.",
     "answers": [[0, "تهران"], [0, "تهران"], [0, " شهر تهران "]]},
    {"question": "ایران کجاست؟", "url": "u", "passage": "تهران پایتخت ایران است.",
     "answers": [[6, "پایتخت"]]},
] + [{"question": f"شماره بند {i} چیست؟", "url": "u", "passage": f"بند شماره {i} است.",
      "answers": [[10, str(i)]]} for i in range(10)]


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def test_hindi_and_persian_conversion_merge_passages_and_keep_answers():
    corpus, queries, qrels = M.hindi_to_beir(json.dumps(XQUAD_HI).encode(), "fixture")
    assert len(queries) == 12 and len(corpus) == 11
    assert qrels["a1"] == qrels["a2"] == {"p00000": 1}  # one context, two questions
    assert corpus["p00000"] == {"title": "", "text": "भारत एक देश है। इसकी राजधानी दिल्ली है।"}
    assert queries["a1"] == {"text": "भारत की राजधानी क्या है?", "answers": ["दिल्ली"]}

    corpus, queries, qrels = M.persian_to_beir(_jsonl(PARSINLU_ROWS), "fixture.jsonl")
    assert len(queries) == 12 and len(corpus) == 11
    assert qrels["fa00000"] == qrels["fa00001"]  # identical passages merge
    assert queries["fa00000"] == {"text": "پایتخت ایران کجاست؟", "answers": ["تهران", "شهر تهران"]}
    bad = _jsonl(PARSINLU_ROWS[:2]) + b'{"question": "x", "passage": "y"}\n'
    with pytest.raises(DataError, match=r"fixture\.jsonl:3: not a ParsiNLU row"):
        M.persian_to_beir(bad, "fixture.jsonl")
    empty = _jsonl([{**PARSINLU_ROWS[0], "question": " "}])
    with pytest.raises(DataError, match=r"fixture\.jsonl:1: empty passage, question or answers"):
        M.persian_to_beir(empty, "fixture.jsonl")


def test_build_is_idempotent_writes_manifests_and_load_checks_names(tmp_path, monkeypatch):
    root = fixture_sources(monkeypatch, tmp_path, {
        "hindi": json.dumps(XQUAD_HI, ensure_ascii=False).encode(),
        "persian": _jsonl(PARSINLU_ROWS)})
    out = tmp_path / "data"
    m1 = M.build(out=out, seed=3, test_fraction=0.25, sources_root=root)
    for name in ("hindi", "persian"):
        entry = m1[name]
        assert json.loads((out / name / "manifest.json").read_text()) == {name: entry}
        assert entry["source"] == f"data/sources/{SRC.SOURCES[name].file}"
        assert entry["source_sha256"] == SRC.SOURCES[name].sha256
        assert entry["params"] == {"seed": 3, "test_fraction": 0.25}
        for rel, digest in entry["files"].items():
            assert sha256_file(out / rel) == digest
        ds = M.load(name, root=out)
        assert ds.counts() == entry["counts"] and ds.counts()["passages"] == 11
        assert ds.counts()["test_passages"] == 3  # round(0.25 * 11)
        assert not ds.title_in_text
        assert not set(ds.train().corpus) & ds.test_passages
    stamp = (out / "hindi" / "corpus.jsonl").stat().st_mtime_ns
    M.build(["hindi"], out=out, seed=3, test_fraction=0.25, sources_root=root)
    assert (out / "hindi" / "corpus.jsonl").stat().st_mtime_ns == stamp
    m3 = M.build(["hindi"], out=out, seed=4, test_fraction=0.25, sources_root=root)
    assert m3["hindi"]["params"]["seed"] == 4

    with pytest.raises(
        ValueError, match=r"unknown dataset 'urdu'.*reddit.*'hindi', 'persian'.*miracl"
    ):
        M.load("urdu", root=out)
    with pytest.raises(FileNotFoundError, match="python -m clp_utils.catalog build"):
        M.load("persian", root=tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown multilingual sets"):
        M.build(["urdu"], out=out, sources_root=root)

    # the datasheet takes these entries like SQuADShifts' ones
    sheet = tmp_path / "README.md"
    sheet.write_text(f"# Datasheet\n{D.SHEET_START}\nold\n{D.SHEET_END}\ntail\n", encoding="utf-8")
    D.update_datasheet({"hindi": m3["hindi"], "persian": m1["persian"]}, path=sheet)
    text = sheet.read_text(encoding="utf-8")
    assert "| hindi | 11 | 8 | 3 | " in text and "| persian | 11 | 8 | 3 | " in text
    assert "old" not in text and text.endswith("tail\n")


def test_bm25_uses_whole_devanagari_words_and_caches(tmp_path, monkeypatch):
    monkeypatch.setattr(E, "results_dir", lambda: tmp_path / "results")
    corpus = {
        "d0": {"title": "", "text": "किताबें मेज़ पर रखी हैं।"},
        "d1": {"title": "", "text": "कुत्ते बाहर भौंकते हैं।"},
        "d2": {"title": "", "text": "किसान खेत में काम करते हैं।"},
    }
    queries = {
        "q0": {"text": "किताबें कहाँ रखी हैं?", "answers": []},
        "q1": {"text": "कौन भौंकते हैं?", "answers": []},
        "q2": {"text": "किसान कहाँ काम करते हैं?", "answers": []},
    }
    qrels = {"train": {}, "test": {"q0": {"d0": 1}, "q1": {"d1": 1}, "q2": {"d2": 1}}}
    D.write_beir(tmp_path / "tiny", corpus, queries, qrels)
    ds = D.load_beir(tmp_path / "tiny")
    first = E.bm25(ds, "hindi", token_pattern=M.TOKEN_PATTERN)
    assert first.metrics["mrr_10"] == 1.0
    assert (
        first.run_dir / "run.trec"
    ).exists() and first.run_dir.parent.parent == tmp_path / "results"
    again = E.bm25(ds, "hindi", token_pattern=M.TOKEN_PATTERN)  # read back from the cache
    assert {q: list(d) for q, d in again.run.items()} == {q: list(d) for q, d in first.run.items()}
    assert again.metrics == first.metrics


# --------------------------------------------------------------------------- chapter 06


def test_track_profiles_train_me5_on_hindi_with_frozen_embeddings():
    from clp_utils.profiles import PAPER_ROWS, ZERO_SHOT

    for name in ("smoke", "cpu", "full"):
        tp = S.track_profile(name)
        base = tp.study.base
        assert (base.model, base.split, base.freeze_embeddings) == ("me5-small", "hindi", True)
        assert tp.study.rows[0] == ZERO_SHOT and set(tp.study.rows) <= set(PAPER_ROWS)
    assert len(S.track_profile("cpu").study.seeds) >= 2
    full = S.track_profile("full")
    assert full.study.rows == tuple(PAPER_ROWS) and len(full.study.seeds) >= 3
    assert full.hindi_passages is None and full.study.base.ood_split == "persian"
    with pytest.raises(ValueError, match="choose one of"):
        S.track_profile("huge")


def test_summary_table_matches_hand_computed_deltas():
    from clp_utils.profiles import ZERO_SHOT
    from clp_utils.study import StudyRun

    m = "ndcg_cut_10"
    zero = {"a": 0.5, "b": 0.2, "c": 1.0}
    ance = [{"a": 0.7, "b": 0.2, "c": 1.0}, {"a": 0.5, "b": 0.4, "c": 1.0}]
    clp = [{"a": 1.0, "b": 0.4, "c": 1.0}, {"a": 0.8, "b": 0.4, "c": 0.6}]

    def run(row, seed, values):
        per_query = {m: values, "ndcg_cut_5": values}
        result = None if row == ZERO_SHOT else SimpleNamespace(run_id=f"{row}-{seed}")
        return StudyRun(row, "hindi", seed, result, per_query, None)

    runs = [run(ZERO_SHOT, 0, zero)]
    runs += [run("ANCE negatives", s, v) for s, v in enumerate(ance)]
    runs += [run("ANCE + CLP", s, v) for s, v in enumerate(clp)]
    zs = pd.DataFrame(
        [
            {"dataset": "hindi", "system": "BM25", m: 0.3},
            {"dataset": "hindi", "system": "minilm", m: 0.1},
            {"dataset": "hindi", "system": "me5-small", m: 0.55},
        ]
    ).set_index(["dataset", "system"])
    out = S.summary_table(zs, runs, m)
    assert list(out.index) == [
        "BM25",
        "minilm zero-shot",
        "me5-small zero-shot",
        "me5-small, ANCE negatives",
        "me5-small, ANCE + CLP",
    ]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    clp_mean = mean([mean(list(v.values())) for v in clp])
    assert out.loc["me5-small, ANCE + CLP", f"{m} mean"] == pytest.approx(clp_mean)
    # deltas are over seed-averaged per-query values
    seed_avg = {q: mean([v[q] for v in clp]) for q in zero}
    ance_avg = {q: mean([v[q] for v in ance]) for q in zero}
    assert out.loc["me5-small, ANCE + CLP", "delta vs zero-shot"] == pytest.approx(
        mean([seed_avg[q] - zero[q] for q in zero])
    )
    assert out.loc["me5-small, ANCE + CLP", "delta vs ANCE + InfoNCE"] == pytest.approx(
        mean([seed_avg[q] - ance_avg[q] for q in zero])
    )
    assert out.loc["BM25", f"{m} mean"] == 0.3 and pd.isna(out.loc["BM25", "delta vs zero-shot"])
    low, high = out.loc["me5-small, ANCE + CLP", "95% CI vs zero-shot"].split(" to ")
    assert float(low) <= out.loc["me5-small, ANCE + CLP", "delta vs zero-shot"] <= float(high)


# ------------------------------------------------------------------------ MIRACL (paper's setting)

CONFIGS = REPO_ROOT / "configs" / "miracl"


@pytest.mark.parametrize("lang", ["ko", "fa", "hi"])
def test_miracl_configs_load_with_the_papers_hyperparameters(lang):
    from clp_utils.train_config import TrainConfig

    c = TrainConfig.from_dict(json.loads((CONFIGS / f"bge-m3-{lang}.json").read_text()))
    assert (c.model, c.split) == ("BAAI/bge-m3", f"miracl-{lang}")
    assert (c.loss, c.variant, c.lam, c.tau, c.lr, c.epochs) == ("clp", "paper", 0.1, 0.02, 1e-5, 2)
    assert (c.max_query_len, c.max_passage_len) == (128, 512)
    assert (c.batch_size, c.in_batch) == (4, False)  # the official 1 x 4 accumulation, no in-batch
    assert (c.mining.strategy, c.mining.num_negatives) == ("ance", 4)


MIRACL_DOCS = [
    {"docid": f"{a}#{i}", "title": f"문서 {a}", "text": f"문서 {a}의 {i}번째 문단입니다."}
    for a in range(6)
    for i in range(2)
]
TRAIN_TOPICS = {f"t{a}": f"문서 {a}에 대한 질문" for a in range(5)}
DEV_TOPICS = {"d5": "문서 5에 대한 질문"}


def miracl_fixture(root):
    write_miracl_fixture(
        root,
        "ko",
        MIRACL_DOCS,
        TRAIN_TOPICS,
        [(f"t{a}", f"{a}#0", 1) for a in range(5)],
        split="train",
    )
    write_miracl_fixture(
        root, "ko", MIRACL_DOCS, DEV_TOPICS, [("d5", "5#0", 1), ("d5", "5#1", 0)], split="dev"
    )


def test_miracl_config_loads_train_and_dev_with_title_text_passages(tmp_path, monkeypatch):
    from clp_utils.batching import load_training_data
    from clp_utils.train_config import TrainConfig

    miracl_fixture(tmp_path)
    monkeypatch.setattr(C, "load_miracl", functools.partial(D.load_miracl, root=tmp_path))
    config = TrainConfig.from_dict(json.loads((CONFIGS / "bge-m3-ko.json").read_text()))
    ds, ood = load_training_data(config)  # via catalog.load_named("miracl-ko"), as train() does
    assert ood is None and ds.title_in_text
    train, test = ds.train(), ds.test()
    assert set(train.queries) == set(TRAIN_TOPICS) and set(test.queries) == {"d5"}
    assert train.passage_text("0#0") == "문서 0\n문서 0의 0번째 문단입니다."
    assert test.qrels == {"d5": {"5#0": 1, "5#1": 0}} and test.relevant("d5") == {"5#0"}
    assert ds.test_passages == {"5#0", "5#1"} and not set(train.corpus) & ds.test_passages


def test_miracl_config_trains_end_to_end_on_a_fixture(tmp_path, monkeypatch, tiny_model_path):
    """The paper's config path (no in-batch negatives, tau 0.02, title pseudo-queries as H*),
    with the tiny random BERT of conftest standing in for BGE-M3 and tiny sizes."""
    from clp_utils.training import TrainConfig, train

    miracl_fixture(tmp_path / "miracl")
    monkeypatch.setattr(
        C, "load_miracl", functools.partial(D.load_miracl, root=tmp_path / "miracl")
    )
    config = TrainConfig.from_dict(json.loads((CONFIGS / "bge-m3-ko.json").read_text()))
    config = replace(
        config,
        model=tiny_model_path,
        batch_size=2,
        epochs=1,
        max_query_len=16,
        max_passage_len=32,
        bf16=False,
        mining=replace(config.mining, num_negatives=2),
    )
    result = train(config, root=tmp_path / "runs", progress=False)
    info = json.loads((result.run_dir / "config.json").read_text())
    assert info["steps"] == 2 and info["mining"]  # 5 train queries // batch 2
    assert {"ndcg_cut_5", "ndcg_cut_10"} <= set(result.metrics)
    assert set(result.in_domain.evaluation.per_query["ndcg_cut_5"]) == {"d5"}


# --------------------------------------------------------------------------- the real data


@pytest.mark.slow
def test_real_sets_if_built():
    for name in ("hindi", "persian"):
        manifest_path = D.DATA_DIR / name / "manifest.json"
        if not manifest_path.exists():
            pytest.skip("multilingual sets not built (python -m clp_utils.catalog build)")
        entry = json.loads(manifest_path.read_text())[name]
        ds = M.load(name)
        assert ds.counts() == entry["counts"]
        assert abs(ds.counts()["test_passages"] / ds.counts()["passages"] - 0.2) < 0.01
        train, test = ds.train(), ds.test()
        assert not set(train.queries) & set(test.queries)
        # an independent check of the conversion: the answer is in the passage
        queries = {**train.queries, **test.queries}
        qrels = {**train.qrels, **test.qrels}
        found = sum(
            queries[q]["answers"][0] in ds.corpus[next(iter(qrels[q]))]["text"]
            for q in queries
            if queries[q]["answers"]
        )
        assert found / len(queries) > 0.99
    hindi = json.loads((D.DATA_DIR / "hindi" / "manifest.json").read_text())["hindi"]
    # XQuAD Hindi: 240 paragraphs, 1,190 questions (Artetxe et al. 2020)
    assert hindi["counts"]["passages"] == 240
    assert hindi["counts"]["train_queries"] + hindi["counts"]["test_queries"] == 1190


def test_size_sentence_sets_the_paper_steps_against_the_sets_resolution():
    clusters = {f"q{i}": f"p{i // 2}" for i in range(200)}
    flat = S.size_sentence("hindi", {q: 0.5 for q in clusters}, clusters)
    assert "200 test questions on 100 passages" in flat and "±0.0000" in flat
    assert "Smaller than that" not in flat and "At least that large" in flat  # nothing hides
    rng = __import__("numpy").random.default_rng(0)
    noisy = S.size_sentence("persian", {q: float(rng.integers(0, 2)) for q in clusters}, clusters)
    # a 0/1 score over 100 passages: half-width near 1.96 * 0.5 / sqrt(200) ~ 0.07, above both
    # of the paper's Persian steps (-0.0025 and +0.0151)
    assert "Smaller than that among the paper's Persian steps" in noisy
    assert "-0.0025" in noisy and "+0.0151" in noisy and "At least that large" not in noisy
