"""Mining on a hand-made fixture whose scores are known: exact negatives per strategy and
filter, H*, short queries, leakage, cache invalidation, ANCE-round model mode; and ANCE mining
and the answer check against independent brute-force computations on random data."""

from __future__ import annotations

import dataclasses
import json
import unicodedata
from collections import Counter

import numpy as np
import pytest

from clp_utils.data import RetrievalDataset, Split, load_beir, write_beir
from clp_utils.mining import MiningConfig, contains_answer, first_sentence, mine, mining_key
from clp_utils.negatives import candidate_frame, false_negative_table

# Score of each train passage for q0 (its positive is p0): the ranking is
# p1 .95, p0 .90, p2 .89, p3 .80, p4 .70, p5 .60, p6 .50, p7 .40, p8 .30, p9 .20.
SCORES = {
    "p0": 0.90,
    "p1": 0.95,
    "p2": 0.89,
    "p3": 0.80,
    "p4": 0.70,
    "p5": 0.60,
    "p6": 0.50,
    "p7": 0.40,
    "p8": 0.30,
    "p9": 0.20,
}
TEXTS = {
    "p0": "The Eiffel Tower is in Paris, France.",
    "p1": "Many tourists visit paris every summer.",  # answer, lower case: false negative
    "p2": "The tower was built for the 1889 World's Fair. It was criticised at first.",
    "p3": "Gustave Eiffel's company designed the structure.",
    "p4": "PARIS. The capital of France has many museums.",  # answer, upper case
    "p5": "Iron lattice towers are common for radio.",
    "p6": "A Parisian cafe serves coffee.",  # 'Parisian' is not the answer 'Paris'
    "p7": "Bridges are built from steel.",
    "p8": "The river flows through the city.",
    "p9": "Wine is made from grapes.",
}
TITLES = {d: f"Title {d}" for d in TEXTS} | {"p4": ""}
# The train queries of each passage (p4 and p6 have none besides nothing).
OWN = {
    "p0": ["q0", "q0b"],
    "p1": ["q1"],
    "p2": ["q2a", "q2b", "q2c"],
    "p3": ["q3"],
    "p5": ["q5"],
    "p7": ["q7"],
    "p8": ["q8"],
    "p9": ["q9"],
}
# Test side (only for the leakage test): t0 would be q0's best "negative" if it leaked.
TEST_TEXTS = {"t0": "The tower stands on the Champ de Mars.", "t1": "Paris hosts the Louvre."}
TEST_OWN = {"t0": ["tq0"], "t1": ["tq1"]}

AXES = [*TEXTS, *TEST_TEXTS]
DIM = 1 + len(AXES)


def unit(i: int) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i] = 1.0
    return v


def vectors() -> dict[str, np.ndarray]:
    """Text -> embedding: q0 is axis 0; passage d = s * e0 + sqrt(1 - s^2) * e_d."""
    out = {}
    scores = SCORES | {"t0": 0.99, "t1": 0.97}
    for d, text in (TEXTS | TEST_TEXTS).items():
        s = scores[d]
        v = s * unit(0) + np.sqrt(1 - s * s) * unit(1 + AXES.index(d))
        out[text] = v.astype(np.float32)
        out[f"{TITLES.get(d, '')}\n{text}"] = out[text]
    out[QUERIES["q0"]] = unit(0)
    for d, qids in (OWN | TEST_OWN).items():
        for q in qids:
            if q != "q0":
                out[QUERIES[q]] = unit(1 + AXES.index(d))
    return out


QUERIES = {
    "q0": "where is the eiffel tower",
    "q0b": "what city has the eiffel tower",
    "q1": "when do tourists visit",
    "q2a": "when was the tower built",
    "q2b": "what fair was the tower built for",
    "q2c": "was the tower liked",
    "q3": "who designed the structure",
    "q5": "what are lattice towers for",
    "q7": "what are bridges made of",
    "q8": "what flows through the city",
    "q9": "what is wine made from",
    "tq0": "where does the tower stand",
    "tq1": "what does paris host",
}
ANSWERS = {
    "q0": ["Paris"],
    "q0b": ["Paris"],
    "q1": ["every summer"],
    "q2a": ["1889"],
    "tq0": ["Champ de Mars"],
    "tq1": ["the Louvre"],
}


class FakeModel:
    """Returns the fixture's fixed vectors; records every text it was asked to embed.

    Like ``SentenceTransformer.encode``, ``encode`` switches the model to eval mode.
    """

    max_seq_length = 32
    prompts: dict = {}

    def __init__(self) -> None:
        self.table = vectors()
        self.seen: list[str] = []
        self.calls = 0
        self.training = False

    def encode(self, texts, **kwargs):
        self.calls += 1
        self.training = False
        self.seen += list(texts)
        return np.stack([self.table[t] for t in texts])

    def train(self, mode: bool = True):
        self.training = mode
        return self


def make_split(name: str = "train") -> Split:
    corpus = {d: {"title": "", "text": t} for d, t in TEXTS.items()}
    qrels = {q: {d: 1} for d, qs in OWN.items() for q in qs}
    queries = {q: {"text": QUERIES[q], "answers": ANSWERS.get(q, [])} for q in qrels}
    return Split(name, corpus, queries, qrels)


def run(cfg: MiningConfig, split: Split | None = None, qids=("q0",), **kw):
    kw.setdefault("cache_dir", None)
    kw.setdefault("embedding_cache_dir", None)
    model = kw.pop("model", None) or FakeModel()
    return mine(model, split or make_split(), cfg, query_ids=list(qids), progress=False, **kw)


def negs(cfg: MiningConfig, **kw) -> list[str]:
    return run(cfg, **kw).records[0]["neg_ids"]


ANCE = MiningConfig(strategy="ance", num_negatives=3, rank_min=1, rank_max=10, answer_filter=False)


# --------------------------------------------------------------------------- answer check


def test_contains_answer_is_case_insensitive_and_word_bounded():
    assert contains_answer("Many tourists visit paris.", ["Paris"])
    assert contains_answer("PARIS. The capital", ["paris"])
    assert not contains_answer("A Parisian cafe.", ["Paris"])
    assert contains_answer("It cost $5 in the U.S. then.", ["U.S."])
    assert contains_answer("built in\n  the   year 1889", ["the year 1889"])
    assert not contains_answer("anything", [])
    assert not contains_answer("anything", ["  "])
    assert first_sentence("One. Two three. Four") == "One."


# --------------------------------------------------------------------------- ance


def test_ance_window_top_without_filters():
    mined = run(ANCE)
    rec = mined.records[0]
    assert rec["neg_ids"] == ["p1", "p2", "p3"]  # p0 (rank 2) is the positive: skipped
    assert rec["neg_ranks"] == [1, 3, 4]
    np.testing.assert_allclose(rec["neg_scores"], [0.95, 0.89, 0.80], atol=1e-6)
    assert rec["pos_id"] == "p0" and rec["pos_rank"] == 2
    assert rec["pos_score"] == pytest.approx(0.90, abs=1e-6)
    assert rec["neg_answer_hit"] == [True, False, False]
    assert rec["query"] == QUERIES["q0"] and rec["pos"] == TEXTS["p0"]
    assert rec["neg"] == [TEXTS[d] for d in rec["neg_ids"]]
    s = mined.summary
    assert s["candidates_examined"] == 9 and s["candidates_with_answer"] == 2
    assert s["fn_rate_candidates"] == pytest.approx(2 / 9)
    assert s["fn_rate_negatives"] == pytest.approx(1 / 3)


def test_ance_default_window_starts_at_rank_3():
    cfg = dataclasses.replace(ANCE, rank_min=3, rank_max=30)
    assert negs(cfg) == ["p2", "p3", "p4"]
    assert negs(dataclasses.replace(cfg, answer_filter=True)) == ["p2", "p3", "p5"]


@pytest.mark.parametrize(
    "change, expected, dropped",
    [
        ({"answer_filter": True}, ["p2", "p3", "p5"], {"answer": 2}),
        ({"max_score": 0.85}, ["p3", "p4", "p5"], {"max_score": 2}),
        ({"abs_margin": 0.0}, ["p2", "p3", "p4"], {"abs_margin": 1}),  # below the positive
        ({"abs_margin": 0.05}, ["p3", "p4", "p5"], {"abs_margin": 2}),  # > 0.85 dropped
        ({"rel_margin": 0.05}, ["p3", "p4", "p5"], {"rel_margin": 2}),  # > 0.855 dropped
        ({"rel_margin": 0.2}, ["p4", "p5", "p6"], {"rel_margin": 3}),  # > 0.72 dropped
        # a candidate is counted once, by the first filter that drops it
        (
            {"max_score": 0.85, "answer_filter": True},
            ["p3", "p5", "p6"],
            {"max_score": 2, "answer": 1},
        ),
        (
            {"num_negatives": 4, "missing_neg_query": "drop"},
            ["p1", "p2", "p3", "p5"],
            {"no_neg_query": 2},
        ),
    ],
)
def test_ance_filters(change, expected, dropped):
    mined = run(dataclasses.replace(ANCE, **change))
    assert mined.records[0]["neg_ids"] == expected
    assert {k: v for k, v in mined.summary["dropped"].items() if v} == dropped


def test_relative_margin_does_not_flip_for_negative_positive_scores():
    from clp_utils.mining import filter_reasons

    cfg = MiningConfig(rel_margin=0.1, answer_filter=False)
    # pos = -0.5: the threshold is -0.55 (5% of |pos| below), not -0.45.
    got = filter_reasons(np.array([-0.54, -0.56]), -0.5, np.zeros(2), np.ones(2), cfg)
    assert list(got) == ["rel_margin", ""]


def test_ance_sample_is_seeded_within_survivors():
    cfg = dataclasses.replace(ANCE, pick="sample", answer_filter=True)
    survivors = {"p2", "p3", "p5", "p6", "p7", "p8", "p9"}
    draws = [tuple(negs(dataclasses.replace(cfg, seed=s))) for s in range(30)]
    for d in draws:
        assert len(d) == 3 and set(d) <= survivors
        assert list(d) == sorted(d, key=lambda x: -SCORES[x])  # kept in rank order
    assert negs(dataclasses.replace(cfg, seed=3)) == list(draws[3])
    assert len(set(draws)) > 5
    assert set().union(*draws) == survivors


def test_short_queries_are_reported_not_padded():
    mined = run(dataclasses.replace(ANCE, num_negatives=4, rank_max=4, answer_filter=True))
    rec = mined.records[0]
    assert rec["neg_ids"] == ["p2", "p3"] and rec["n_missing"] == 2
    assert len(rec["neg"]) == len(rec["neg_q"]) == len(rec["neg_scores"]) == 2
    assert mined.summary["short_queries"] == 1
    assert mined.summary["missing_negatives"] == 2


def random_split(seed: int = 0, n_docs: int = 60, n_queries: int = 40):
    """A split of random word passages (some with no query, some shared by two queries, some
    queries with two positives), answers taken from the positive, and random embeddings: the
    query's vector is its first positive's plus noise, so positives rank high, not always first.
    """
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(30)]  # w1 is a prefix of w12: word boundaries matter
    texts = {}
    for i in range(n_docs):
        words = [str(w) for w in rng.choice(vocab, 12)]
        words = [w.upper() if rng.random() < 0.2 else w for w in words]
        texts[f"d{i}"] = " ".join(words) + "."
    corpus = {d: {"title": "", "text": t} for d, t in texts.items()}
    emb = {t: rng.normal(size=16) for t in texts.values()}
    queries, qrels, q_emb = {}, {}, {}
    for j in range(n_queries):
        qid = f"q{j}"
        pos = [f"d{i}" for i in rng.choice(n_docs // 2, 1 + (j % 7 == 0), replace=False)]
        words = texts[pos[0]].rstrip(".").lower().split()
        start = int(rng.integers(len(words) - 1))
        answer = " ".join(words[start : start + 1 + (j % 3 == 0)])
        queries[qid] = {"text": f"question {j}", "answers": [answer]}
        qrels[qid] = dict.fromkeys(pos, 1)
        q_emb[queries[qid]["text"]] = emb[texts[pos[0]]] + rng.normal(scale=1.0, size=16)
    table = {t: (v / np.linalg.norm(v)).astype(np.float32) for t, v in (emb | q_emb).items()}
    return Split("train", corpus, queries, qrels), table


def brute_force_ance(split: Split, table: dict, cfg: MiningConfig):
    """The ANCE rule written out directly: float64 scores, ranks over the full ranking, the
    window without positives, the filters in order (first that drops counts), top k."""
    docids = list(split.corpus)
    doc = np.array([table[split.passage_text(d)] for d in docids], dtype=np.float64)
    own = {d: [q for q in split.qrels if d in split.relevant(q)] for d in docids}
    out, dropped, examined = {}, Counter(), 0
    for qid, query in split.queries.items():
        s = doc @ table[query["text"]].astype(np.float64)
        rank = {d: 1 + int((s > s[i]).sum()) for i, d in enumerate(docids)}
        pos = split.relevant(qid)
        pos_min = min(s[docids.index(d)] for d in pos)
        answer = query["answers"][0].split()
        window = sorted((d for d in docids if cfg.rank_min <= rank[d] <= cfg.rank_max
                         and d not in pos), key=rank.get)
        kept = []
        for d in window:
            sc, words = s[docids.index(d)], split.corpus[d]["text"].rstrip(".").lower().split()
            rules = {
                "max_score": cfg.max_score is not None and sc > cfg.max_score,
                "abs_margin": cfg.abs_margin is not None and sc > pos_min - cfg.abs_margin,
                "rel_margin": cfg.rel_margin is not None
                and sc > pos_min - abs(pos_min) * cfg.rel_margin,
                "answer": cfg.answer_filter and any(
                    words[i : i + len(answer)] == answer for i in range(len(words))),
                "no_neg_query": cfg.missing_neg_query == "drop"
                and not any(q != qid for q in own[d]),
            }
            reason = next((name for name, hit in rules.items() if hit), None)
            if reason:
                dropped[reason] += 1
            else:
                kept.append(d)
        examined += len(window)
        # the record's positive is the first by id (all relevances are 1)
        out[qid] = (kept[: cfg.num_negatives], [rank[d] for d in kept[: cfg.num_negatives]],
                    rank[min(pos)])
    return out, dropped, examined


@pytest.mark.parametrize(
    "cfg",
    [
        MiningConfig(num_negatives=4),
        MiningConfig(num_negatives=5, rank_min=1, rank_max=12, answer_filter=False),
        MiningConfig(num_negatives=3, max_score=0.5, abs_margin=0.02),
        MiningConfig(num_negatives=6, rank_min=2, rank_max=20, rel_margin=0.05,
                     missing_neg_query="drop"),
    ],
)
def test_ance_equals_brute_force_on_random_data(cfg):
    split, table = random_split()
    model = FakeModel()
    model.table = table
    mined = run(cfg, split=split, qids=list(split.queries), model=model)
    expected, dropped, examined = brute_force_ance(split, table, cfg)
    assert len(mined.records) == len(split.queries)
    for rec in mined.records:
        neg_ids, neg_ranks, pos_rank = expected[rec["qid"]]
        assert (rec["neg_ids"], rec["neg_ranks"], rec["pos_rank"]) == (
            neg_ids, neg_ranks, pos_rank)
    assert {k: v for k, v in mined.summary["dropped"].items() if v} == dict(dropped)
    assert mined.summary["candidates_examined"] == examined
    # the data exercise the rules: a positive inside the window, a filter that drops
    assert any(cfg.rank_min <= rec["pos_rank"] <= cfg.rank_max for rec in mined.records)
    assert sum(dropped.values()) > 0 or cfg.rank_max == 12


def test_answer_check_equals_a_brute_force_scan():
    def norm(text):
        return " ".join(unicodedata.normalize("NFKC", text).casefold().split())

    def scan(text, answer):  # every occurrence, its neighbours checked one by one
        word = [c.isalnum() or c == "_" for c in text]
        return any(text[i : i + len(answer)] == answer
                   and (i == 0 or not word[i - 1])
                   and (i + len(answer) == len(text) or not word[i + len(answer)])
                   for i in range(len(text) - len(answer) + 1))

    rng = np.random.default_rng(0)
    alphabet = list("aAb_ .$,1é") + ["\u00c9", "\ufb01", "\n"]  # É, the fi ligature, newline
    hits = 0
    for _ in range(3000):
        text = "".join(rng.choice(alphabet, int(rng.integers(0, 14))))
        answers = ["".join(rng.choice(alphabet, int(rng.integers(1, 4)))) for _ in range(2)]
        expected = any(scan(norm(text), norm(a)) for a in answers if norm(a))
        assert contains_answer(text, answers) == expected, (text, answers)
        hits += expected
    assert 300 < hits < 2700  # both outcomes are well represented


# --------------------------------------------------------------------------- random


def test_random_excludes_positives_and_respects_filters():
    cfg = MiningConfig(strategy="random", num_negatives=3, answer_filter=True)
    counts: Counter = Counter()
    for seed in range(350):
        got = negs(dataclasses.replace(cfg, num_negatives=1, seed=seed))
        assert len(got) == 1
        counts[got[0]] += 1
    eligible = {"p2", "p3", "p5", "p6", "p7", "p8", "p9"}
    assert set(counts) == eligible  # never p0 (positive), never p1/p4 (answer)
    assert all(25 <= c <= 75 for c in counts.values()), counts  # uniform: 50 expected
    # without the answer filter (which would also catch p0's "Paris") p0 is still never drawn
    unfiltered = Counter(
        negs(dataclasses.replace(cfg, answer_filter=False, seed=seed))[0] for seed in range(60)
    )
    assert "p0" not in unfiltered and {"p1", "p4"} <= set(unfiltered)
    rec = run(cfg).records[0]
    np.testing.assert_allclose(rec["neg_scores"], [SCORES[d] for d in rec["neg_ids"]], atol=1e-6)
    assert rec["neg_ranks"] == [
        1 + sum(s > SCORES[d] for s in SCORES.values()) for d in rec["neg_ids"]
    ]
    assert run(cfg).records[0]["neg_ids"] == rec["neg_ids"]  # same seed, same draws
    for seed in range(20):  # counts describe the draws made: kept + dropped, nothing more
        s = run(dataclasses.replace(cfg, seed=seed)).summary
        assert s["candidates_examined"] == 3 + s["dropped"]["answer"]
        assert s["candidates_with_answer"] == s["dropped"]["answer"]
    short = run(dataclasses.replace(cfg, num_negatives=9))
    assert sorted(short.records[0]["neg_ids"]) == sorted(eligible)
    assert short.records[0]["n_missing"] == 2 and short.summary["short_queries"] == 1


# --------------------------------------------------------------------------- H*


def test_neg_queries_all_k_keep_drop():
    all_q = run(dataclasses.replace(ANCE, neg_queries="all")).records[0]
    assert all_q["neg_q_ids"] == [["q1"], ["q2a", "q2b", "q2c"], ["q3"]]
    assert all_q["neg_q"][1] == [QUERIES[q] for q in ("q2a", "q2b", "q2c")]
    picks = set()
    for seed in range(20):
        rec = run(dataclasses.replace(ANCE, neg_queries=2, seed=seed)).records[0]
        assert len(rec["neg_q_ids"][1]) == 2 and set(rec["neg_q_ids"][1]) < {"q2a", "q2b", "q2c"}
        assert rec["neg_q_ids"][0] == ["q1"]  # fewer than k: all of them
        picks.add(tuple(rec["neg_q_ids"][1]))
    assert len(picks) > 1
    keep = run(dataclasses.replace(ANCE, num_negatives=4))
    assert keep.records[0]["neg_ids"][3] == "p4" and keep.records[0]["neg_q"][3] == []
    assert keep.summary["negatives_without_own_query"] == 1


def test_pseudo_queries():
    split = make_split()
    for d in split.corpus:
        split.corpus[d]["title"] = TITLES[d]
    cfg = dataclasses.replace(ANCE, num_negatives=4, pseudo_query="title")
    rec = run(cfg, split=split).records[0]
    assert rec["neg_q"] == [["Title p1"], ["Title p2"], ["Title p3"], []]  # p4: no title
    assert rec["neg_q_ids"][0] == ["p1#title"]
    dropped = run(dataclasses.replace(cfg, missing_neg_query="drop"), split=split)
    assert dropped.records[0]["neg_ids"] == ["p1", "p2", "p3", "p5"]
    first = run(dataclasses.replace(cfg, pseudo_query="first_sentence"), split=split)
    assert first.records[0]["neg_q"][1] == ["The tower was built for the 1889 World's Fair."]


def test_own_queries_never_hold_the_query_itself():
    split = make_split()
    mined = run(
        dataclasses.replace(ANCE, neg_queries="all", num_negatives=9),
        split=split,
        qids=list(split.queries),
    )
    assert len(mined.records) == len(split.queries)
    for rec in mined.records:
        assert rec["qid"] not in {q for ids in rec["neg_q_ids"] for q in ids}
        assert not set(rec["neg_ids"]) & split.relevant(rec["qid"])
    # q0b shares q0's positive: neither is ever H* of the other through a negative
    assert all("q0" not in sum(r["neg_q_ids"], []) for r in mined.records if r["qid"] == "q0b")


# --------------------------------------------------------------------------- leakage


def beir_fixture(tmp_path) -> RetrievalDataset:
    corpus = {d: {"title": "", "text": t} for d, t in (TEXTS | TEST_TEXTS).items()}
    train = {q: {d: 1} for d, qs in OWN.items() for q in qs}
    test = {q: {d: 1} for d, qs in TEST_OWN.items() for q in qs}
    queries = {q: {"text": QUERIES[q], "answers": ANSWERS.get(q, [])} for q in train | test}
    write_beir(tmp_path / "fx", corpus, queries, {"train": train, "test": test})
    return load_beir(tmp_path / "fx")


def test_no_test_passage_or_query_leaks(tmp_path):
    ds = beir_fixture(tmp_path)
    test = ds.test()
    test_docs, test_queries = ds.test_passages, set(test.queries)
    assert test_docs == {"t0", "t1"}
    test_texts = set(TEST_TEXTS.values()) | {QUERIES[q] for q in test_queries}
    configs = [
        MiningConfig(strategy="random", num_negatives=9, neg_queries="all"),
        MiningConfig(
            strategy="ance",
            num_negatives=9,
            rank_min=1,
            rank_max=50,
            neg_queries="all",
            answer_filter=False,
        ),
        MiningConfig(
            strategy="ance",
            num_negatives=9,
            rank_min=1,
            rank_max=50,
            pick="sample",
            neg_queries="all",
        ),
    ]
    for cfg in configs:
        model = FakeModel()
        mined = mine(
            model,
            ds.train(),
            cfg,
            model_id=None,
            data_checksum=ds.checksum,
            cache_dir=None,
            progress=False,
        )
        assert {r["qid"] for r in mined.records} == set(ds.train().queries)
        for rec in mined.records:
            assert not set(rec["neg_ids"]) & test_docs
            assert not {q for ids in rec["neg_q_ids"] for q in ids} & test_queries
            assert rec["pos_id"] not in test_docs
        assert not set(model.seen) & test_texts  # a test text was never even embedded
        # t0 would top q0's ranking if it were indexed
        q0 = next(r for r in mined.records if r["qid"] == "q0")
        if cfg.strategy == "ance" and not cfg.answer_filter:
            assert q0["neg_ids"][0] == "p1"
    with pytest.raises(ValueError, match="train split"):
        mine(FakeModel(), test, configs[0], cache_dir=None, progress=False)
    with pytest.raises(KeyError):
        mine(
            FakeModel(),
            ds.train(),
            configs[0],
            query_ids=["q0", "tq0"],
            cache_dir=None,
            progress=False,
        )
    with pytest.raises(ValueError, match="train split"):
        candidate_frame(FakeModel(), test, progress=False)


# --------------------------------------------------------------------------- cache


def test_cache_reuse_and_invalidation(tmp_path):
    kw = {
        "model_id": "fake",
        "data_checksum": "abc",
        "cache_dir": tmp_path / "mining",
        "embedding_cache_dir": tmp_path / "emb",
    }
    model = FakeModel()
    first = run(ANCE, model=model, **kw)
    assert not first.summary["from_cache"] and first.path.exists()
    assert json.loads(first.path.read_text().splitlines()[0])["neg"] == first.records[0]["neg"]
    calls = model.calls
    again = run(ANCE, model=model, **kw)
    assert again.summary["from_cache"] and again.path == first.path
    assert model.calls == calls  # nothing re-encoded
    assert again.records == first.records

    split = make_split()
    base = mining_key(split, ANCE, "fake", "abc", ["q0"])
    alternatives = {
        "strategy": "random",
        "num_negatives": 2,
        "rank_min": 2,
        "rank_max": 9,
        "pick": "sample",
        "max_score": 0.5,
        "abs_margin": 0.1,
        "rel_margin": 0.05,
        "answer_filter": True,
        "neg_queries": "all",
        "missing_neg_query": "drop",
        "pseudo_query": "title",
        "seed": 1,
    }
    assert set(alternatives) == {f.name for f in dataclasses.fields(MiningConfig)}
    keys = {base}
    for name, value in alternatives.items():
        keys.add(
            mining_key(split, dataclasses.replace(ANCE, **{name: value}), "fake", "abc", ["q0"])
        )
    keys.add(mining_key(split, ANCE, "fake-epoch1", "abc", ["q0"]))
    keys.add(mining_key(split, ANCE, "fake", "abd", ["q0"]))
    keys.add(mining_key(split, ANCE, "fake", "abc", ["q0", "q1"]))
    edited = make_split()
    edited.corpus["p9"] = {"title": "", "text": TEXTS["p8"]}
    keys.add(mining_key(edited, ANCE, "fake", "abc", ["q0"]))
    assert len(keys) == len(alternatives) + 5  # every change gives a new key

    changed = run(dataclasses.replace(ANCE, max_score=0.85), model=model, **kw)
    assert changed.path != first.path and not changed.summary["from_cache"]
    assert model.calls > calls and changed.records[0]["neg_ids"] == ["p3", "p4", "p5"]
    assert first.path.exists()  # the earlier set stays for its own parameters
    # no model id (an in-memory model in an ANCE round): nothing is cached
    assert run(ANCE, model=model, **(kw | {"model_id": None})).path is None


def test_ance_round_restores_training_mode():
    model = FakeModel()
    model.train()
    run(ANCE, model=model)
    assert model.training
    model.train(False)
    run(ANCE, model=model)
    assert not model.training


# --------------------------------------------------------------------------- analysis


def test_false_negative_table_matches_mining():
    frame = candidate_frame(
        FakeModel(), make_split(), ["q0"], depth=10, progress=False, embedding_cache_dir=None
    )
    assert list(frame["docid"]) == ["p1", "p0", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"]
    assert frame.loc[frame["docid"] == "p4", "n_own_queries"].item() == 0
    assert frame.loc[frame["docid"] == "p0", "n_own_queries"].item() == 1  # q0b, not q0
    filters = {
        "none": dataclasses.replace(ANCE),
        "rel_margin_0.2": dataclasses.replace(ANCE, rel_margin=0.2),
        "answer": dataclasses.replace(ANCE, answer_filter=True),
    }
    table = false_negative_table(frame, [(1, 5), (3, 10)], filters).set_index(["window", "filter"])
    # window 1-5 holds p1, p2, p3, p4 (p0 is the positive); p1 and p4 contain the answer
    assert table.loc[("1-5", "none"), "candidates"] == 4
    assert table.loc[("1-5", "none"), "fn_rate_before"] == pytest.approx(0.5)
    assert table.loc[("1-5", "rel_margin_0.2"), "kept_share"] == pytest.approx(0.25)  # p4
    assert table.loc[("1-5", "rel_margin_0.2"), "fn_rate_after"] == pytest.approx(1.0)
    assert table.loc[("3-10", "answer"), "fn_rate_after"] == 0.0
    assert table.loc[("3-10", "none"), "fn_rate_before"] == pytest.approx(1 / 8)
    # the mining summary over the same window agrees with the table
    mined = run(dataclasses.replace(ANCE, rank_min=3, rank_max=10))
    assert mined.summary["fn_rate_candidates"] == pytest.approx(1 / 8)
