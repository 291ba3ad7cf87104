"""Data builder, loaders, split and their error messages."""

from __future__ import annotations

import json
import lzma

import pytest
from miracl_fixture import write_miracl_fixture
from sources_fixture import fixture_sources

from clp_utils import data as D
from clp_utils import languages as L
from clp_utils import sources as S
from clp_utils.base import paths
from clp_utils.base.io import DataError, write_jsonl

SQUAD = {
    "version": "1.0",
    "data": [
        {"title": "Alpha_Beta", "paragraphs": [
            {"context": "The cat sat on the mat in 1999.", "qas": [
                {"id": "q1", "question": "Where did the cat sit?",
                 "answers": [{"text": "on the mat", "answer_start": 8},
                             {"text": "on the mat", "answer_start": 8}]},
                {"id": "q2", "question": "When did the cat sit?",
                 "answers": [{"text": "1999", "answer_start": 26}]},
            ]},
            {"context": "Dogs bark at night.", "qas": [
                {"id": "q3", "question": "When do dogs bark?",
                 "answers": [{"text": "at night", "answer_start": 10}]},
            ]},
        ]},
        {"title": "Gamma", "paragraphs": [
            # identical paragraph text in another article: merged into one passage
            {"context": "The cat sat on the mat in 1999. ", "qas": [
                {"id": "q4", "question": "What sat on the mat?",
                 "answers": [{"text": "The cat", "answer_start": 0}]},
            ]},
        ] + [
            {"context": f"Filler passage number {i}.", "qas": [
                {"id": f"f{i}", "question": f"Which filler is {i}?",
                 "answers": [{"text": str(i), "answer_start": 23}]},
            ]} for i in range(12)
        ]},
    ],
}


def test_squad_to_beir_merges_identical_paragraphs_and_keeps_answers():
    corpus, queries, qrels = D.squad_to_beir(SQUAD, "fixture")
    assert len(corpus) == 14  # 2 + 12, the repeated paragraph merged
    assert qrels["q1"] == qrels["q4"] == {"p00000": 1}
    assert corpus["p00000"] == {"title": "Alpha Beta", "text": "The cat sat on the mat in 1999."}
    assert queries["q1"]["answers"] == ["on the mat"]  # duplicates removed
    bad = json.loads(json.dumps(SQUAD))
    bad["data"][1]["paragraphs"][1]["qas"][0]["id"] = "q1"
    with pytest.raises(DataError, match="duplicate question id 'q1'"):
        D.squad_to_beir(bad, "fixture")


def write_fixture(tmp_path, seed=0, frac=0.25):
    corpus, queries, qrels = D.squad_to_beir(SQUAD, "fixture")
    sides = D.split_by_passage(corpus, qrels, seed, frac)
    D.write_beir(tmp_path / "ds", corpus, queries, sides)
    return D.load_beir(tmp_path / "ds")


def test_split_is_by_passage_and_train_view_cannot_see_test(tmp_path):
    ds = write_fixture(tmp_path)
    train, test = ds.train(), ds.test()
    assert ds.counts()["test_passages"] == round(0.25 * 14)
    test_docs = ds.test_passages
    assert not set(train.corpus) & test_docs
    assert not set(train.queries) & set(test.queries)
    # every query of a test passage is a test query (q1 and q4 share a passage)
    for qid, rels in train.qrels.items():
        assert not set(rels) & test_docs, qid
    assert (("q1" in test.queries) == ("q4" in test.queries))
    assert set(test.corpus) == set(ds.corpus)  # retrieval searches the whole corpus
    assert set(train.queries) | set(test.queries) == set(ds._queries)
    # deterministic for a seed
    assert write_fixture(tmp_path / "again").test_passages == test_docs


def test_subset_keeps_split_by_passage(tmp_path):
    ds = write_fixture(tmp_path)
    sub = ds.subset(6, seed=1)
    assert len(sub.corpus) == 6
    for split in (sub.train(), sub.test()):
        for rels in split.qrels.values():
            assert set(rels) <= set(sub.corpus)
    assert not set(sub.train().corpus) & sub.test_passages


def test_malformed_jsonl_names_file_and_line(tmp_path):
    ds_dir = tmp_path / "ds"
    write_fixture(tmp_path)
    lines = (ds_dir / "corpus.jsonl").read_text().splitlines()
    lines[2] = '{"_id": "p00002", "text": '
    (ds_dir / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"corpus\.jsonl:3: malformed JSON"):
        D.load_beir(ds_dir)


def test_duplicate_ids_and_empty_sets(tmp_path):
    ds_dir = tmp_path / "ds"
    write_fixture(tmp_path)
    rows = [json.loads(x) for x in (ds_dir / "queries.jsonl").read_text().splitlines()]
    write_jsonl(ds_dir / "queries.jsonl", rows + [rows[0]])
    with pytest.raises(DataError, match=rf"queries\.jsonl:{len(rows) + 1}: duplicate id 'q1'"):
        D.load_beir(ds_dir)
    (ds_dir / "queries.jsonl").write_text("")
    with pytest.raises(DataError, match="empty"):
        D.load_beir(ds_dir)


def test_qrels_with_unknown_ids_list_examples_and_counts(tmp_path):
    ds_dir = tmp_path / "ds"
    write_fixture(tmp_path)
    with open(ds_dir / "qrels" / "test.tsv", "a") as fh:
        fh.write("nope1\tp00000\t1\nnope2\tp00000\t1\nq1\tghost\t1\n")
    with pytest.raises(DataError) as err:
        D.load_beir(ds_dir)
    msg = str(err.value)
    assert ("2 unknown queries" in msg and "nope1" in msg
            and "1 unknown documents" in msg and "ghost" in msg)
    assert "test.tsv" in msg


def test_a_changed_or_missing_source_is_refused_naming_the_file(tmp_path, monkeypatch):
    root = fixture_sources(monkeypatch, tmp_path, {"reddit": json.dumps(SQUAD).encode()})
    assert S.read_source("reddit", root) == json.dumps(SQUAD).encode()
    path = root / f"{S.SOURCES['reddit'].file}.xz"
    path.write_bytes(lzma.compress(b"a tampered copy"))
    with pytest.raises(S.ChecksumError) as err:
        S.read_source("reddit", root)
    assert str(path) in str(err.value) and S.SOURCES["reddit"].sha256 in str(err.value)
    path.write_bytes(b"not xz at all")
    with pytest.raises(S.ChecksumError, match="not a readable xz file"):
        S.read_source("reddit", root)
    path.unlink()
    with pytest.raises(S.SourceMissing, match="reddit_v1.0.json"):
        S.read_source("reddit", root)
    # a required source missing stops the build; the plain original file is read too
    with pytest.raises(S.SourceMissing):
        D.build_squadshifts(["reddit"], tmp_path / "out", sources_root=root)
    (root / S.SOURCES["reddit"].file).write_bytes(json.dumps(SQUAD).encode())
    assert D.build_squadshifts(["reddit"], tmp_path / "out", sources_root=root)["reddit"]


def test_build_is_idempotent_skips_an_absent_split_and_writes_manifest(tmp_path, monkeypatch,
                                                                       capsys):
    root = fixture_sources(monkeypatch, tmp_path, {"reddit": json.dumps(SQUAD).encode()})
    out = tmp_path / "squadshifts"
    (out / "nyt").mkdir(parents=True)  # a split built earlier from another copy
    (out / "nyt" / "corpus.jsonl").write_text("stale\n")
    m1 = D.build_squadshifts(["reddit", "nyt"], out, seed=3, sources_root=root)
    assert set(m1) == {"reddit"} and m1["reddit"]["counts"]["passages"] == 14
    assert m1["reddit"]["source_sha256"] == S.SOURCES["reddit"].sha256
    assert not (out / "nyt").exists()  # never read stale data
    said = capsys.readouterr().out
    assert "nyt: not in this repository" in said and S.SOURCES["nyt"].sha256[:12] in said
    assert D.available_splits(["reddit", "nyt"]) == ["reddit"] and not S.available("nyt", root)
    stamp = (out / "reddit" / "corpus.jsonl").stat().st_mtime_ns
    D.build_squadshifts(["reddit"], out, seed=3, sources_root=root)
    assert (out / "reddit" / "corpus.jsonl").stat().st_mtime_ns == stamp
    # a changed parameter rebuilds
    m3 = D.build_squadshifts(["reddit"], out, seed=4, sources_root=root)
    assert m3["reddit"]["params"]["seed"] == 4
    ds = D.load_squadshifts("reddit", root=out)
    assert ds.counts() == m3["reddit"]["counts"]
    with pytest.raises(FileNotFoundError, match="clp_utils.catalog build"):
        D.load_squadshifts("amazon", root=out)
    # dropping the missing file in is all it takes
    root = fixture_sources(monkeypatch, tmp_path, {"nyt": json.dumps(SQUAD).encode()})
    assert D.build_squadshifts(["nyt"], out, sources_root=root)["nyt"]["counts"]["passages"] == 14


def test_miracl_loader_on_fixture(tmp_path):
    docs = [{"docid": "1#0", "title": "서울", "text": "서울은 한국의 수도이다."},
            {"docid": "1#1", "title": "서울", "text": "인구는 천만 명이다."},
            {"docid": "2#0", "title": "부산", "text": "부산은 항구 도시이다."}]
    topics = {"10": "한국의 수도는?", "11": "항구 도시는?"}
    judged = [("10", "1#0", 1), ("10", "1#1", 0), ("11", "2#0", 1)]
    write_miracl_fixture(tmp_path, "ko", docs, topics, judged)
    ds = D.load_miracl("ko", root=tmp_path)
    test = ds.test()
    assert test.passage_text("1#0") == "서울\n서울은 한국의 수도이다."  # "title\ntext"
    assert test.qrels == {"10": {"1#0": 1, "1#1": 0}, "11": {"2#0": 1}}
    assert test.relevant("10") == {"1#0"}
    assert ds.train().queries == {}
    # the same files elsewhere (another machine's cache): the same data, the same checksum
    write_miracl_fixture(tmp_path / "moved", "ko", docs, topics, judged)
    assert D.load_miracl("ko", root=tmp_path / "moved").checksum == ds.checksum
    write_miracl_fixture(tmp_path / "bad", "ko", docs, {"10": "x"}, [("10", "9#9", 1)])
    with pytest.raises(DataError, match="unknown document '9#9'"):
        D.load_miracl("ko", root=tmp_path / "bad")


@pytest.mark.slow
def test_real_squadshifts_if_built():
    root = D.DATA_DIR / "squadshifts"
    if not (root / "manifest.json").exists():
        pytest.skip("data not built (make data)")
    manifest = json.loads((root / "manifest.json").read_text())
    for split in D.available_splits():
        ds = D.load_squadshifts(split)
        assert ds.counts() == manifest[split]["counts"]
        train, test = ds.train(), ds.test()
        assert not set(train.queries) & set(test.queries)
        assert not set(train.corpus) & ds.test_passages
        c = ds.counts()
        assert abs(c["test_passages"] / c["passages"] - 0.2) < 0.01
        assert all(q["answers"] for q in test.queries.values())


@pytest.fixture
def http_root(tmp_path):
    """``(folder, base url)``: a local HTTP server over a folder, as an index and file host."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_refresh_downloads_checks_and_stores_compressed(tmp_path, http_root, monkeypatch):
    root, base = http_root
    payload = json.dumps(SQUAD).encode()
    fixture_sources(monkeypatch, tmp_path, {"reddit": payload})
    (root / "reddit.json").write_bytes(payload)
    (root / "tampered.json").write_bytes(payload + b" ")
    into = tmp_path / "into"
    path = S.refresh("reddit", f"{base}/reddit.json", root=into)
    assert path == into / "reddit_v1.0.json.xz" and lzma.decompress(path.read_bytes()) == payload
    assert S.read_source("reddit", into) == payload
    assert sorted(p.name for p in into.iterdir()) == [path.name]  # no temporary file left
    path.unlink()
    with pytest.raises(S.ChecksumError, match="nothing was written"):
        S.refresh("reddit", f"{base}/tampered.json", root=into)
    assert list(into.iterdir()) == []
    with pytest.raises(DataError, match="no download address"):
        S.refresh("squaddev", root=into)  # the reconstruction has no origin file


def _no_network(monkeypatch):
    """Every connection attempt fails, as with the network cut (``unshare -rn``)."""
    import socket
    import urllib.request

    def refuse(*args, **kwargs):
        raise OSError("network is cut in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_every_dataset_builds_from_the_committed_sources_with_the_network_cut(tmp_path,
                                                                              monkeypatch):
    _no_network(monkeypatch)
    monkeypatch.setitem(paths._SETTINGS, "cache", tmp_path / "empty-cache")
    assert S.verify(echo=lambda line: None)
    squad = D.build_squadshifts(out=tmp_path / "squadshifts")
    more = L.build(out=tmp_path)
    assert set(squad) == set(D.available_splits()) >= {"squaddev", "new_wiki", "reddit",
                                                        "amazon"}
    # the original releases, split by passage: reddit keeps BIG-bench's 407 test passages
    # and gains the 36 questions BIG-bench had removed (1,995 test / 7,808 train questions)
    reddit = squad["reddit"]["counts"]
    assert (reddit["test_passages"], reddit["test_queries"], reddit["train_queries"]) == (
        407, 1995, 7808)
    assert more["hindi"]["counts"]["passages"] == 240
    assert more["persian"]["counts"]["train_queries"] + more["persian"]["counts"][
        "test_queries"] == 570
    # byte for byte what `make data` wrote here, where it ran
    built = D.DATA_DIR / "squadshifts" / "manifest.json"
    if built.exists():
        here = json.loads(built.read_text())
        for split, entry in squad.items():
            if here.get(split, {}).get("source_sha256") == entry["source_sha256"]:
                assert here[split]["files"] == entry["files"], split


def test_the_committed_sources_are_small_checksummed_and_in_the_datasheet():
    files = [p for p in S.SOURCES_DIR.iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 20e6  # git ls-files data stays small
    lines = []
    assert S.verify(echo=lines.append)
    assert len(lines) == len(S.SOURCES) + len(S.explorer_page_sums())
    sheet = D.DATASHEET.read_text(encoding="utf-8")
    assert D.sources_section() in sheet  # the datasheet shows the registry as it is
    for src in S.SOURCES.values():
        assert src.sha256 in sheet and src.licence in sheet


def test_validation_side_is_carved_from_train_passages_by_passage(tmp_path):
    ds = write_fixture(tmp_path)
    val_ds = ds.with_validation(0.3, seed=1)
    train, val, test = val_ds.train(), val_ds.validation(), val_ds.test()
    # test side untouched: same passages, same queries, whole corpus
    assert val_ds.test_passages == ds.test_passages and test.qrels == ds.test().qrels
    assert set(test.corpus) == set(ds.corpus)
    # validation passages come from the old train side and leave it entirely
    assert val_ds.val_passages and val_ds.val_passages <= set(ds.train().corpus)
    assert not set(train.corpus) & (val_ds.val_passages | val_ds.test_passages)
    assert not set(train.queries) & set(val.queries) and not set(val.queries) & set(test.queries)
    assert set(train.queries) | set(val.queries) == set(ds.train().queries)
    # a query of a validation passage is a validation query (q1 and q4 share one passage)
    for rels in train.qrels.values():
        assert not set(rels) & val_ds.val_passages
    # validation searches every non-test passage, never a test passage
    assert set(val.corpus) == set(ds.corpus) - ds.test_passages
    counts = val_ds.counts()
    assert (counts["val_queries"] == len(val.queries)
            and counts["train_queries"] == len(train.queries))
    assert counts["train_passages"] + counts["val_passages"] + counts["test_passages"] == 14
    # seeded, and the checksum names the carving
    assert ds.with_validation(0.3, seed=1).val_passages == val_ds.val_passages
    assert val_ds.checksum != ds.checksum != ds.with_validation(0.3, seed=2).checksum
    assert ds.with_validation(0.0) is ds
    with pytest.raises(ValueError, match="no validation side"):
        ds.validation()
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ds.with_validation(1.0)
    with pytest.raises(ValueError, match="already has"):
        val_ds.with_validation(0.1)


def test_subset_then_validation_keeps_every_side_by_passage(tmp_path):
    sub = write_fixture(tmp_path).subset(10, seed=0).with_validation(0.25, seed=0)
    sides = [sub.train(), sub.validation(), sub.test()]
    for side in sides:
        for rels in side.qrels.values():
            assert set(rels) <= set(side.corpus)
    assert not sub.val_passages & sub.test_passages


def test_a_chapter_builds_only_the_data_it_reads(tmp_path, monkeypatch):
    from clp_utils.machinery import chapter

    built = []
    monkeypatch.setattr(chapter, "BUILT", {k: tmp_path / k / "corpus.jsonl" for k in chapter.BUILT})
    monkeypatch.setattr(chapter, "catalog", lambda argv: built.append(argv))
    monkeypatch.setattr(chapter.paths, "_SETTINGS", dict(chapter.paths._SETTINGS))  # begin sets it
    assert chapter.data_missing("02") == []
    run = chapter.begin("02", "cpu", figures_dir=tmp_path / "figures")  # nothing built: 02
    assert run.figures == tmp_path / "figures"  # reads no data; figures where it was told
    assert built == []
    assert chapter.data_missing("06") == ["squadshifts", "hindi", "persian"]
    assert chapter.data_missing("00") == ["squadshifts"]
    chapter.ensure_data("00")
    assert built == [["build"]]
    with pytest.raises(SystemExit, match="make data"):
        chapter.ensure_data("01", build=False)


def test_a_published_chapter_states_the_committed_timing_not_this_machines(tmp_path,
                                                                          monkeypatch):
    """A chapter executed for publishing is read on other machines: its card names the
    committed run and its machine, even where this machine has timings of its own; a profile
    without committed figures falls back to this machine's last run."""
    from clp_utils.machinery import chapter

    monkeypatch.setattr(chapter.paths, "_SETTINGS", dict(chapter.paths._SETTINGS))
    monkeypatch.setattr(chapter.paths, "FIGURES_ROOT", tmp_path / "figures")
    chapter.paths.configure(results=tmp_path / "results")
    here = tmp_path / "results" / "notebooks"
    for profile in ("cpu", "smoke"):
        (here / profile).mkdir(parents=True)
        (here / profile / "timings.json").write_text(json.dumps({"04_evaluation.ipynb": 30.0}))
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "run.json").write_text(json.dumps({
        "timings": {"04_evaluation.ipynb": 150.0}, "machine": {"describe": "bf16 on AVX512"}}))
    card = chapter.timing_card("04", "cpu")
    assert card.startswith("the committed run took 2.5 min (bf16 on AVX512)")
    assert "this machine" not in card
    assert chapter.timing_card("04", "smoke") == "the last run on this machine took 0.5 min"
    # a chapter told to write elsewhere (make study-avx2) times itself by that folder's record
    (tmp_path / "avx2").mkdir()
    (tmp_path / "avx2" / "run.json").write_text(json.dumps({
        "timings": {"04_evaluation.ipynb": 600.0}, "machine": {"describe": "float32 on AVX2"}}))
    assert chapter.timing_card("04", "cpu", tmp_path / "avx2").startswith(
        "the committed run took 10.0 min (float32 on AVX2)")
    assert chapter.timing_card("05", "smoke") == "no timing recorded for this profile yet"


def test_folders_finished_at_once_leave_one_writer_whole(tmp_path):
    """Two processes converting the same model at once (``atomic_dir``): none fails, the
    folder holds one writer's files only, and nothing is left beside it."""
    import threading

    from clp_utils.base.io import atomic_dir

    target, writers, errors = tmp_path / "model", 6, []
    for _ in range(15):
        barrier = threading.Barrier(writers)

        def write(i, barrier=barrier):
            try:
                with atomic_dir(target) as tmp:
                    for k in range(5):
                        (tmp / f"part{k}").write_text(str(i))
                    barrier.wait()  # every writer commits at the same moment
            except Exception as err:  # noqa: BLE001 (the test reports any)
                errors.append(repr(err))

        threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len({p.read_text() for p in target.iterdir()}) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
