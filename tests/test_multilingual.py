"""Hindi/Persian builder (question split, BEIR layout, manifest), BM25 words, chapter-06 tables,
and the MIRACL configs of the paper's setting on offline fixtures."""

from __future__ import annotations

import functools
import io
import json
import re
import tarfile
from dataclasses import replace
from types import SimpleNamespace

import pandas as pd
import pytest
from miracl_fixture import write_miracl_fixture

from clp_utils import catalog as C
from clp_utils import data as D
from clp_utils import evaluation as E
from clp_utils import languages as M
from clp_utils import multilingual as S
from clp_utils.base.io import DataError, sha256_file
from clp_utils.base.paths import REPO_ROOT

# --------------------------------------------------------------------------- the split rule

# (input as in hindi_question_answering, expected passage, expected question)
SPLITS = [
    # danda ends the context; the question keeps its own "?"
    (
        "भारत एक विशाल देश है। इसकी राजधानी नई दिल्ली है। भारत की राजधानी क्या है?",
        "भारत एक विशाल देश है। इसकी राजधानी नई दिल्ली है।",
        "भारत की राजधानी क्या है?",
    ),
    # a question without "?" and one ending in a danda
    (
        "डेप ने कई फिल्मों में काम किया। डेप ने किस फिल्म से डेब्यू किया",
        "डेप ने कई फिल्मों में काम किया।",
        "डेप ने किस फिल्म से डेब्यू किया",
    ),
    (
        "ली ने कुछ गाने लिखे थे। उस संगीत के प्रकार का नाम बताएं जिससे ली प्रभावित हुई।",
        "ली ने कुछ गाने लिखे थे।",
        "उस संगीत के प्रकार का नाम बताएं जिससे ली प्रभावित हुई।",
    ),
    # "?" inside the context is a sentence end too
    ("क्या यह सच है? हाँ, यह सच है। कौन सा कथन सच है?", "क्या यह सच है? हाँ, यह सच है।", "कौन सा कथन सच है?"),
    # "." followed by a space ends a sentence; "1.411" does not
    (
        "नए एलबम में शामिल नहीं किया जाएगा. उस संगीत का नाम क्या है?",
        "नए एलबम में शामिल नहीं किया जाएगा.",
        "उस संगीत का नाम क्या है?",
    ),
    (
        "2017 तक जनसंख्या 1.411 बिलियन थी। 2017 में चीन की जनसंख्या कितनी थी?",
        "2017 तक जनसंख्या 1.411 बिलियन थी।",
        "2017 में चीन की जनसंख्या कितनी थी?",
    ),
    # abbreviations: initials spelled in Devanagari, titles, dotted runs, Latin initials
    (
        "यह ली एच. हैमिल्टन ने कहा। डॉ. रेड्डी ने कितना भुगतान किया?",
        "यह ली एच. हैमिल्टन ने कहा।",
        "डॉ. रेड्डी ने कितना भुगतान किया?",
    ),
    (
        "पत्थर का उल्लेख मिलता है। दार्शनिक के पत्थर का 300 ई.पू. में लिखा उल्लेख किसने किया?",
        "पत्थर का उल्लेख मिलता है।",
        "दार्शनिक के पत्थर का 300 ई.पू. में लिखा उल्लेख किसने किया?",
    ),
    (
        "इसे जॉन एफ. केनेडी ने खोला। y. pestis इंग्लैंड कब पहुँचा?",
        "इसे जॉन एफ. केनेडी ने खोला।",
        "y. pestis इंग्लैंड कब पहुँचा?",
    ),
    # ... but a web address or a number before "." is no abbreviation, nor is a bracket
    (
        "कंपनी का व्यापार भी है, marthastewartflowers.com. पैट्रिक ने क्या पद लिया?",
        "कंपनी का व्यापार भी है, marthastewartflowers.com.",
        "पैट्रिक ने क्या पद लिया?",
    ),
    (
        "इसे जीवविज्ञानी मानते हैं (उदा.[36]). किस प्रकार के जीव विज्ञानी यह तर्क देते हैं?",
        "इसे जीवविज्ञानी मानते हैं (उदा.[36]).",
        "किस प्रकार के जीव विज्ञानी यह तर्क देते हैं?",
    ),
    # an ellipsis does not end a sentence
    (
        "2006 में नोट जारी किए गए। कौनसे वर्ष में ५,१,२... के नोट जारी किए गए?",
        "2006 में नोट जारी किए गए।",
        "कौनसे वर्ष में ५,१,२... के नोट जारी किए गए?",
    ),
    # citation marks and closing quotes stay with the sentence they close
    (
        "फ़िल्मांकन नवंबर 2009 को पूर्ण हुई।[8] इंसेप्शन को कितने देशों में फिल्माया गया था?",
        "फ़िल्मांकन नवंबर 2009 को पूर्ण हुई।[8]",
        "इंसेप्शन को कितने देशों में फिल्माया गया था?",
    ),
    ('उसने कहा "यह अच्छा है।" यह किसने कहा?', 'उसने कहा "यह अच्छा है।"', "यह किसने कहा?"),
    (
        "वह विश्वविद्यालय गया था। [26] जब वह १६ वर्ष का था तो वह कहाँ पढ़ता था?",
        "वह विश्वविद्यालय गया था।",
        "जब वह १६ वर्ष का था तो वह कहाँ पढ़ता था?",
    ),
    (
        "रेजिमेंट फ्रांस से भाग गई। [citation needed] इस नेता ने कहाँ पढ़ाया?",
        "रेजिमेंट फ्रांस से भाग गई।",
        "इस नेता ने कहाँ पढ़ाया?",
    ),
    # an ASCII "|" typed as a danda, and a danda without a following space
    (
        "याहू प्रतियोगियों से काफी आगे| क्वेपसा को लाभ या हानि हुई?",
        "याहू प्रतियोगियों से काफी आगे|",
        "क्वेपसा को लाभ या हानि हुई?",
    ),
    ("अध्यक्ष नाकाओ है।अध्यक्ष का कार्यकाल कितना है?", "अध्यक्ष नाकाओ है।", "अध्यक्ष का कार्यकाल कितना है?"),
]


@pytest.mark.parametrize(("text", "passage", "question"), SPLITS)
def test_split_question_cuts_at_the_last_sentence_end(text, passage, question):
    assert M.split_question(text) == (passage, question)
    # the split loses nothing but whitespace and set-aside citation marks
    joined = re.sub(r"\s|\[(26|citation needed)\]", "", passage + question)
    assert joined == re.sub(r"\s|\[(26|citation needed)\]", "", text)


def test_unsplittable_inputs_are_none():
    # the real case: a list without any sentence end, then the question after spaces
    assert M.split_question("एनएचएल (अनाहेम डक्स) की टीमें शामिल हैं    एमएलएस टीम कौन-सी है ?") is None
    assert M.split_question("भारत की राजधानी क्या है?") is None  # a question alone
    assert M.split_question("भारत एक देश है।") is None  # nothing after the only sentence end
    assert M.split_question("   ") is None


def test_words_keep_devanagari_vowel_signs_and_split_persian_zwnj():
    # the pitfall: Python's \w is not a word class for Devanagari (vowel signs are marks)
    assert re.findall(r"\w+", "हिन्दी") != ["हिन्दी"]
    assert M.words("हिन्दी भाषा की किताबें, 2 kg") == ["हिन्दी", "भाषा", "की", "किताबें", "kg"]
    assert M.words("آب و هوای می\u200cباشد") == ["آب", "هوای", "می", "باشد"]


# --------------------------------------------------------------------------- conversion

HINDI_TASK = {
    "examples": [
        {
            "input": "भारत एक देश है। इसकी राजधानी दिल्ली है। भारत की राजधानी क्या है?",
            "target": " दिल्ली ",
        },
        {"input": "भारत एक देश है। इसकी राजधानी दिल्ली है। भारत क्या है?", "target": "एक देश"},
        {"input": "टीमें शामिल हैं    कौन सी टीम है?", "target": "कोई"},  # unsplittable
    ]
    + [
        {"input": f"यह अनुच्छेद संख्या {i} है। अनुच्छेद {i} की संख्या क्या है?", "target": str(i)}
        for i in range(10)
    ]
}
PERSIAN_TASK = {
    "examples": [
        {
            "input": "passage: 'تهران پایتخت ایران است.' question: 'پایتخت ایران کجاست؟'",
            "target": ["تهران", "تهران", " شهر تهران "],
        },
        {"input": "passage: 'تهران پایتخت ایران است.' question: 'ایران کجاست؟'", "target": []},
        {"input": "no passage here", "target": ["x"]},  # does not parse: skipped
    ]
    + [
        {
            "input": f"passage: 'بند شماره {i} است.' question: 'شماره بند {i} چیست؟'",
            "target": [str(i)],
        }
        for i in range(10)
    ]
}


def test_hindi_and_persian_conversion_merge_passages_keep_answers_count_skips():
    corpus, queries, qrels, skipped = M.hindi_to_beir(HINDI_TASK, "fixture")
    assert skipped == 1 and len(queries) == 12 and len(corpus) == 11
    assert qrels["hi00000"] == qrels["hi00001"] == {"p00000": 1}  # one context, merged
    assert corpus["p00000"] == {"title": "", "text": "भारत एक देश है। इसकी राजधानी दिल्ली है।"}
    assert queries["hi00000"] == {"text": "भारत की राजधानी क्या है?", "answers": ["दिल्ली"]}
    assert "hi00002" not in queries

    corpus, queries, qrels, skipped = M.persian_to_beir(PERSIAN_TASK, "fixture")
    assert skipped == 1 and len(queries) == 12 and len(corpus) == 11
    assert qrels["fa00000"] == qrels["fa00001"]
    assert queries["fa00000"] == {"text": "پایتخت ایران کجاست؟", "answers": ["تهران", "شهر تهران"]}
    assert queries["fa00001"]["answers"] == []

    with pytest.raises(DataError, match="fixture: no input"):
        M.hindi_to_beir({"examples": [{"input": "कौन?", "target": "x"}]}, "fixture")


def make_sdist(tmp_path):
    path = tmp_path / "fake.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, task in (("hindi", HINDI_TASK), ("persian", PERSIAN_TASK)):
            blob = json.dumps(task, ensure_ascii=False).encode()
            info = tarfile.TarInfo(M.DATASETS[name].member)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def test_build_is_idempotent_writes_manifests_and_load_checks_names(tmp_path):
    sdist, out = make_sdist(tmp_path), tmp_path / "data"
    m1 = M.build(out=out, seed=3, test_fraction=0.25, sdist_path=sdist)
    for name in ("hindi", "persian"):
        entry = m1[name]
        assert json.loads((out / name / "manifest.json").read_text()) == {name: entry}
        assert entry["source"].endswith(M.DATASETS[name].member)
        assert entry["params"] == {"seed": 3, "test_fraction": 0.25, "sdist": D.BIGBENCH.sha256}
        assert entry["skipped"] == 1
        for rel, digest in entry["files"].items():
            assert sha256_file(out / rel) == digest
        ds = M.load(name, root=out)
        assert ds.counts() == entry["counts"] and ds.counts()["passages"] == 11
        assert ds.counts()["test_passages"] == 3  # round(0.25 * 11)
        assert not ds.title_in_text
        assert not set(ds.train().corpus) & ds.test_passages
    stamp = (out / "hindi" / "corpus.jsonl").stat().st_mtime_ns
    M.build(["hindi"], out=out, seed=3, test_fraction=0.25, sdist_path=sdist)
    assert (out / "hindi" / "corpus.jsonl").stat().st_mtime_ns == stamp
    m3 = M.build(["hindi"], out=out, seed=4, test_fraction=0.25, sdist_path=sdist)
    assert m3["hindi"]["params"]["seed"] == 4

    with pytest.raises(
        ValueError, match=r"unknown dataset 'urdu'.*reddit.*'hindi', 'persian'.*miracl"
    ):
        M.load("urdu", root=out)
    with pytest.raises(FileNotFoundError, match="python -m clp_utils.catalog build"):
        M.load("persian", root=tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown multilingual sets"):
        M.build(["urdu"], out=out, sdist_path=sdist)

    # the datasheet takes these entries like SQuADShifts' ones
    sheet = tmp_path / "README.md"
    sheet.write_text(f"# Datasheet\n{D.SHEET_START}\nold\n{D.SHEET_END}\ntail\n", encoding="utf-8")
    D.update_datasheet({"hindi": m3["hindi"], "persian": m1["persian"]}, path=sheet)
    text = sheet.read_text(encoding="utf-8")
    assert "| hindi | 11 | 8 | 3 | " in text and "| persian | 11 | 8 | 3 | " in text
    assert "old" not in text and text.endswith("tail\n")


def test_bm25_uses_whole_devanagari_words_and_caches(tmp_path, monkeypatch):
    monkeypatch.setattr(E, "RESULTS_DIR", tmp_path / "results")
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


@pytest.mark.slow
def test_miracl_config_trains_end_to_end_on_a_fixture(tmp_path, monkeypatch):
    """The paper's config path (no in-batch negatives, tau 0.02, title pseudo-queries as H*),
    with MiniLM standing in for BGE-M3 and tiny sizes."""
    from clp_utils.training import TrainConfig, train

    miracl_fixture(tmp_path / "miracl")
    monkeypatch.setattr(
        C, "load_miracl", functools.partial(D.load_miracl, root=tmp_path / "miracl")
    )
    config = TrainConfig.from_dict(json.loads((CONFIGS / "bge-m3-ko.json").read_text()))
    config = replace(
        config,
        model="minilm",
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
            pytest.skip("multilingual sets not built (python -m clp_utils.languages build)")
        entry = json.loads(manifest_path.read_text())[name]
        ds = M.load(name)
        assert ds.counts() == entry["counts"]
        assert abs(ds.counts()["test_passages"] / ds.counts()["passages"] - 0.2) < 0.01
        train, test = ds.train(), ds.test()
        assert not set(train.queries) & set(test.queries)
        # an independent check of the question split: the answer is in the passage
        queries = {**train.queries, **test.queries}
        qrels = {**train.qrels, **test.qrels}
        found = sum(
            queries[q]["answers"][0] in ds.corpus[next(iter(qrels[q]))]["text"]
            for q in queries
            if queries[q]["answers"]
        )
        assert found / len(queries) > 0.99
    hindi = json.loads((D.DATA_DIR / "hindi" / "manifest.json").read_text())["hindi"]
    assert 4_700 <= hindi["counts"]["passages"] <= 4_800 and hindi["skipped"] < 30
