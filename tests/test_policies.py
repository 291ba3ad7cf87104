"""Trainable-parameter policies: counts, exactly-the-named-weights training, save and reload."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clp_utils.models import load_model
from clp_utils.policies import (
    ParamCounts,
    apply_policy,
    count_parameters,
    merge_lora,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = ["Paris is the capital of France.", "Bees make honey from nectar.", "Short."]
PAIRS = [
    ("who wrote hamlet", "Hamlet is a tragedy written by William Shakespeare."),
    ("capital of japan", "Tokyo is the capital and largest city of Japan."),
    ("how do bees make honey", "Bees turn nectar into honey by regurgitation and evaporation."),
    ("speed of light", "Light travels at about 300,000 kilometres per second in vacuum."),
]

# What each policy names, written independently of clp_utils as patterns over parameter names.
EXPECTED = {
    "full": r".*",
    "intermediate": r".*encoder\.layer\.\d+\.intermediate\.dense\.(weight|bias)",
    "moe": r".*encoder\.layer\.\d+\.intermediate\.dense\.(expert_weight|expert_bias|gate\.weight)",
    "lora": r".*encoder\.layer\.\d+\.intermediate\.dense\.lora_[AB]\.default\.weight",
}
OPTIONS = {"moe": {"routing": "learned", "seed": 0}, "lora": {"r": 4}}


@pytest.fixture(scope="module")
def base(tiny_model_path):
    """A tiny random BERT (conftest): which weights a policy trains does not depend on their
    values."""
    model = load_model(tiny_model_path, device="cpu")
    model.max_seq_length = 32
    return model


def contrastive_step(model, optimizer) -> None:
    """One in-batch-negatives InfoNCE step on PAIRS."""
    model.train()
    queries = model(model.preprocess([q for q, _ in PAIRS]))["sentence_embedding"]
    docs = model(model.preprocess([d for _, d in PAIRS]))["sentence_embedding"]
    loss = F.cross_entropy(queries @ docs.T / 0.05, torch.arange(len(PAIRS)))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_parameter_counts_per_policy(base):
    config = base[0].auto_model.config
    layers, h, i = config.num_hidden_layers, config.hidden_size, config.intermediate_size
    total = sum(p.numel() for p in base.parameters())
    dense = h * i + i  # one up-projection, weight and bias
    expected = {
        "full": (total, total),
        "intermediate": (layers * dense, total),
        # two experts (one of them a new copy) and a 2 x h gate per layer
        "moe": (layers * (2 * dense + 2 * h), total + layers * (dense + 2 * h)),
        # rank-4 A (4 x h) and B (i x 4) per layer
        "lora": (layers * 4 * (h + i), total + layers * 4 * (h + i)),
    }
    base_embeddings = base.encode(TEXTS)
    for policy, (trainable, all_params) in expected.items():
        model = copy.deepcopy(base)
        counts = apply_policy(model, policy, **OPTIONS.get(policy, {}))
        assert counts == ParamCounts(policy, trainable, all_params)
        assert counts == count_parameters(model, policy)
        # Every policy starts from the base model (LoRA's B is zero, experts are copies).
        np.testing.assert_allclose(model.encode(TEXTS), base_embeddings, atol=1e-6)


def test_minilm_counts_are_the_documented_ones():
    """The module docstring's example on the real all-MiniLM-L6-v2."""
    model = load_model("minilm", device="cpu")
    counts = apply_policy(model, "intermediate")
    assert counts.trainable == 6 * (384 * 1536 + 1536) == 3_548_160
    assert str(counts) == "intermediate: 3,548,160 / 22,713,216 trainable (15.62%)"


@pytest.mark.parametrize("policy", ["full", "intermediate", "moe", "lora"])
def test_policy_trains_exactly_the_parameters_it_names(base, policy):
    model = copy.deepcopy(base)
    apply_policy(model, policy, **OPTIONS.get(policy, {}))
    names = [name for name, _ in model.named_parameters()]
    named = {n for n in names if re.fullmatch(EXPECTED[policy], n)}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == named
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # All parameters go to the optimizer: freezing alone must keep the others unchanged.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    for _ in range(2):  # LoRA's A first gets a gradient once B is non-zero
        contrastive_step(model, optimizer)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    if policy == "full":
        # BertModel's pooler is not used by mean pooling, so it gets no gradient.
        named = {n for n in named if ".pooler." not in n}
    assert changed == named


def test_bad_policy_arguments_are_refused(base):
    model = copy.deepcopy(base)
    with pytest.raises(ValueError):
        apply_policy(model, "attention")
    with pytest.raises(TypeError):
        apply_policy(model, "intermediate", r=4)
    with pytest.raises(TypeError, match="policy 'lora' takes"):
        apply_policy(copy.deepcopy(base), "lora", rank=4)
    apply_policy(model, "moe")
    with pytest.raises(ValueError):
        apply_policy(model, "intermediate")  # the dense layers are experts now


def test_plain_and_merged_lora_models_reload_with_plain_sentence_transformer(base, tmp_path):
    base_embeddings = base.encode(TEXTS)
    expected = {}
    for policy in ("intermediate", "lora"):
        model = copy.deepcopy(base)
        apply_policy(model, policy, **OPTIONS.get(policy, {}))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        contrastive_step(model, optimizer)
        if policy == "lora":  # a second step makes A move too (B starts at zero)
            contrastive_step(model, optimizer)
        model.eval()
        embeddings = model.encode(TEXTS)
        assert np.abs(embeddings - base_embeddings).max() > 1e-4  # it did train
        if policy == "lora":
            merge_lora(model)
            np.testing.assert_allclose(model.encode(TEXTS), embeddings, atol=1e-6)
            embeddings = model.encode(TEXTS)
        model.save(str(tmp_path / policy))
        modules = json.loads((tmp_path / policy / "modules.json").read_text())
        assert all(m["type"].startswith("sentence_transformers.") for m in modules)
        expected[policy] = embeddings
    script = textwrap.dedent(
        f"""
        import numpy as np
        from sentence_transformers import SentenceTransformer
        for policy in ("intermediate", "lora"):
            model = SentenceTransformer({str(tmp_path)!r} + "/" + policy, device="cpu")
            np.save({str(tmp_path)!r} + f"/{{policy}}.npy", model.encode({TEXTS!r}))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    for policy, embeddings in expected.items():
        np.testing.assert_array_equal(np.load(tmp_path / f"{policy}.npy"), embeddings)
