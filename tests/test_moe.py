"""Mixture-of-Experts intermediate layers: exactness at step 0, routing modes, statistics, I/O."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clp_utils.models import load_model
from clp_utils.moe import (
    MoEConfig,
    MoELinear,
    MoETransformer,
    RoutingContext,
    apply_moe,
    moe_balance_loss,
    moe_layers,
    record_routing,
    routing_stats,
)
from clp_utils.policies import apply_policy

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Paris is the capital of France.",
    "Short.",
    "Dense retrieval encodes queries and passages into one vector space for search.",
    "Mixture of experts layers route every token to a few experts.",
    "What is the boiling point of water at sea level?",
]
PAIRS = [
    ("who wrote hamlet", "Hamlet is a tragedy written by William Shakespeare."),
    ("capital of japan", "Tokyo is the capital and largest city of Japan."),
    ("how do bees make honey", "Bees turn nectar into honey by regurgitation and evaporation."),
    ("speed of light", "Light travels at about 300,000 kilometres per second in vacuum."),
]


@pytest.fixture(scope="module")
def base(tiny_model_path):
    """A tiny random BERT (conftest): the MoE mechanics do not depend on trained weights."""
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


def layer0_input(model) -> torch.Tensor:
    """The (N, hidden) input of layer 0's MoE on TEXTS, captured with a forward hook."""
    name, layer = moe_layers(model)[0]
    captured = []
    handle = layer.register_forward_hook(lambda mod, args, out: captured.append(args[0]))
    model.eval()
    with torch.no_grad():
        model(model.preprocess(TEXTS))
    handle.remove()
    return captured[0].reshape(-1, layer.in_features)


def reference_moe(layer: MoELinear, x: torch.Tensor) -> torch.Tensor:
    """Token-by-token MoE computed from the definitions (independent of the batched dispatch)."""
    rows = []
    for token in x:
        logits = layer.gate.weight @ token
        if layer.config.routing == "paper":
            kept, idx = logits.topk(layer.config.top_k)
            weights = kept.softmax(-1)
        else:
            probs = logits.softmax(-1)
            kept, idx = probs.topk(layer.config.top_k)
            weights = kept / kept.sum()
        rows.append(
            sum(
                w * (layer.expert_weight[e] @ token + layer.expert_bias[e])
                for w, e in zip(weights, idx.tolist(), strict=True)
            )
        )
    return torch.stack(rows)


@pytest.mark.parametrize(
    "routing,num_experts,top_k",
    [("paper", 2, 1), ("paper", 3, 2), ("learned", 2, 1), ("learned", 4, 2)],
)
def test_batched_dispatch_matches_token_by_token_reference(routing, num_experts, top_k):
    torch.manual_seed(0)
    dense = nn.Linear(24, 40)
    config = MoEConfig(num_experts, top_k, routing)
    layer = MoELinear(dense, config, torch.Generator().manual_seed(1), RoutingContext())
    with torch.no_grad():  # make the experts differ so that a wrong dispatch shows
        layer.expert_weight.add_(0.3 * torch.randn_like(layer.expert_weight))
        layer.expert_bias.add_(0.3 * torch.randn_like(layer.expert_bias))
    x = torch.randn(3, 7, 24)
    out = layer(x)
    assert out.shape == (3, 7, 40)
    ref = reference_moe(layer, x.reshape(-1, 24))
    torch.testing.assert_close(out.reshape(-1, 40), ref, atol=1e-5, rtol=1e-5)
    # The no-autograd path (scratch buffers reused across calls and modes) computes the same.
    for mode in (torch.inference_mode, torch.no_grad, torch.inference_mode):
        with mode():
            torch.testing.assert_close(layer(x), out.detach(), atol=1e-6, rtol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_out = layer(x)
        with torch.no_grad():
            autocast_no_grad = layer(x)
    assert autocast_out.dtype == autocast_no_grad.dtype == torch.bfloat16
    torch.testing.assert_close(autocast_no_grad, autocast_out.detach(), atol=1e-2, rtol=1e-2)

    # Expert gradients of the batched dispatch equal those of the reference.
    probe = torch.randn_like(ref)
    (grad_batched,) = torch.autograd.grad((out.reshape(-1, 40) * probe).sum(), layer.expert_weight)
    (grad_ref,) = torch.autograd.grad(
        (reference_moe(layer, x.reshape(-1, 24)) * probe).sum(), layer.expert_weight
    )
    torch.testing.assert_close(grad_batched, grad_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("hidden,intermediate", [(384, 1536), (1024, 4096)])
@pytest.mark.parametrize("routing,top_k", [("paper", 1), ("learned", 1), ("learned", 2)])
def test_moe_linear_equals_its_dense_at_init_for_any_size(hidden, intermediate, routing, top_k):
    torch.manual_seed(0)
    dense = nn.Linear(hidden, intermediate)
    layer = MoELinear(
        dense, MoEConfig(2, top_k, routing), torch.Generator().manual_seed(0), RoutingContext()
    )
    assert layer.expert_weight.shape == (2, intermediate, hidden)
    assert layer.gate.weight.shape == (2, hidden) and layer.gate.bias is None
    x = torch.randn(5, hidden)
    torch.testing.assert_close(layer(x), dense(x), atol=1e-6, rtol=1e-6)


def test_gate_initialisation_follows_the_seed():
    dense = nn.Linear(16, 32)
    gates = [
        MoELinear(
            dense, MoEConfig(), torch.Generator().manual_seed(s), RoutingContext()
        ).gate.weight
        for s in (0, 0, 1)
    ]
    assert torch.equal(gates[0], gates[1]) and not torch.equal(gates[0], gates[2])


@pytest.mark.parametrize(
    "routing,num_experts,top_k", [("paper", 2, 1), ("learned", 2, 1), ("learned", 3, 2)]
)
def test_moe_model_gives_base_embeddings_at_step0(base, routing, num_experts, top_k):
    model = apply_moe(copy.deepcopy(base), num_experts, top_k, routing, seed=3)
    layers = moe_layers(model)
    assert len(layers) == base[0].auto_model.config.num_hidden_layers
    assert isinstance(model[0], MoETransformer)
    expected = base.encode(TEXTS, convert_to_tensor=True)
    got = model.encode(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_paper_top1_gate_has_exactly_zero_gradient_and_frozen_routing(base):
    model = copy.deepcopy(base)
    apply_policy(model, "moe", num_experts=2, top_k=1, routing="paper", seed=0)
    x0 = layer0_input(model)
    layer0 = moe_layers(model)[0][1]
    routes_before = layer0.route(x0)[0]
    gates_before = [layer.gate.weight.detach().clone() for _, layer in moe_layers(model)]
    experts_before = [layer.expert_weight.detach().clone() for _, layer in moe_layers(model)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    for _ in range(2):
        contrastive_step(model, optimizer)
        for _, layer in moe_layers(model):
            assert layer.gate.weight.grad is not None
            assert torch.equal(layer.gate.weight.grad, torch.zeros_like(layer.gate.weight))
    for (_, layer), gate, experts in zip(
        moe_layers(model), gates_before, experts_before, strict=True
    ):
        assert torch.equal(layer.gate.weight, gate)
        assert not torch.equal(layer.expert_weight, experts)  # training did happen
    # Layer 0's input is frozen under the moe policy, so its routing is exactly reproducible.
    torch.testing.assert_close(layer0_input(model), x0, atol=0, rtol=0)
    assert torch.equal(layer0.route(x0)[0], routes_before)


def test_learned_gate_gets_gradient_and_learns(base):
    model = copy.deepcopy(base)
    apply_policy(model, "moe", num_experts=2, top_k=1, routing="learned", seed=0)
    x0 = layer0_input(model)
    layer0 = moe_layers(model)[0][1]
    probs_before = layer0.route(x0)[2].detach()
    gates_before = [layer.gate.weight.detach().clone() for _, layer in moe_layers(model)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    contrastive_step(model, optimizer)
    for _, layer in moe_layers(model):
        assert layer.gate.weight.grad.abs().sum() > 0
    contrastive_step(model, optimizer)
    for (_, layer), gate in zip(moe_layers(model), gates_before, strict=True):
        assert not torch.equal(layer.gate.weight, gate)
    assert (layer0.route(x0)[2].detach() - probs_before).abs().max() > 1e-4


def test_balance_loss_matches_switch_formula_over_non_padding_tokens(base):
    coef = 0.01
    model = apply_moe(copy.deepcopy(base), 2, 1, "learned", seed=0, balance_coef=coef)
    x0 = layer0_input(model)  # eval mode: nothing recorded
    assert moe_balance_loss(model).item() == 0.0
    features = model.preprocess(TEXTS)
    mask = features["attention_mask"].reshape(-1).bool()
    assert not mask.all()  # the batch has padding, so excluding it matters
    model.eval()  # no dropout, so the layer-0 input equals x0 ...
    for _, layer in moe_layers(model):
        layer.train()  # ... but the MoE layers are training
    model(features)
    context = model[0].moe_context
    assert len(context.aux_losses) == len(moe_layers(model))
    layer0_loss = context.aux_losses[0]
    experts, _, probs = moe_layers(model)[0][1].route(x0)
    experts, probs = experts[mask], probs[mask]
    fraction = torch.bincount(experts.reshape(-1), minlength=2).float() / experts.numel()
    expected = coef * 2 * (fraction * probs.mean(0)).sum()
    torch.testing.assert_close(layer0_loss, expected, atol=1e-6, rtol=1e-5)
    total = moe_balance_loss(model)
    assert total.requires_grad and context.aux_losses == []
    total.backward()
    assert moe_layers(model)[0][1].gate.weight.grad.abs().sum() > 0


def test_paper_routing_refuses_a_balance_loss():
    with pytest.raises(ValueError):
        MoEConfig(2, 1, "paper", balance_coef=0.01)


def test_routing_stats_count_only_non_padding_tokens(base):
    model = apply_moe(copy.deepcopy(base), 3, 2, "learned", seed=0)
    model.encode(TEXTS)  # not recorded
    assert all(s.tokens == 0 for s in routing_stats(model))
    with record_routing(model):
        model.encode(TEXTS, batch_size=len(TEXTS))
    tokenizer = base.tokenizer
    real_tokens = sum(len(tokenizer(t, truncation=True, max_length=32)["input_ids"]) for t in TEXTS)
    stats = routing_stats(model)
    assert len(stats) == base[0].auto_model.config.num_hidden_layers == 2
    assert stats[0].layer == "encoder.layer.0.intermediate.dense"
    # Independent layer-0 load from the routing of the captured input, padding removed.
    mask = model.preprocess(TEXTS)["attention_mask"].reshape(-1).bool()
    x0 = layer0_input(model)
    experts, _, probs = moe_layers(model)[0][1].route(x0)
    load = torch.bincount(experts[mask].reshape(-1), minlength=3).double() / (2 * real_tokens)
    p = probs[mask].detach().double()
    token_entropy = float(-(p * p.log2()).sum(-1).mean())
    for s in stats:
        assert s.tokens == real_tokens
        assert math.isclose(sum(s.load), 1.0, abs_tol=1e-9)
        assert math.isclose(s.load_entropy, -sum(x * math.log2(x) for x in s.load if x > 0))
        assert 0.0 <= s.token_entropy <= math.log2(3) + 1e-9
    np.testing.assert_allclose(stats[0].load, load.numpy(), atol=1e-12)
    used = load[load > 0]
    assert math.isclose(stats[0].load_entropy, float(-(used * used.log2()).sum()), rel_tol=1e-9)
    assert math.isclose(stats[0].token_entropy, token_entropy, rel_tol=1e-5)


def test_moe_model_saves_and_reloads_in_a_fresh_process(base, tmp_path):
    model = apply_moe(copy.deepcopy(base), 2, 1, "learned", seed=0, balance_coef=0.01)
    torch.manual_seed(0)
    with torch.no_grad():  # trained-looking weights: a load that kept the copies would show
        for _, layer in moe_layers(model):
            layer.expert_weight.add_(0.02 * torch.randn_like(layer.expert_weight))
            layer.gate.weight.add_(0.5 * torch.randn_like(layer.gate.weight))
    expected = model.encode(TEXTS)
    assert np.abs(expected - base.encode(TEXTS)).max() > 1e-3
    path = tmp_path / "moe-model"
    model.save(str(path))
    modules = json.loads((path / "modules.json").read_text())
    assert modules[0]["type"] == "clp_utils.moe.MoETransformer"
    script = textwrap.dedent(
        f"""
        import dataclasses, json, sys, numpy as np
        from sentence_transformers import SentenceTransformer
        try:
            SentenceTransformer({str(path)!r})
            sys.exit("loaded without trust_remote_code")
        except ValueError as error:
            assert "trust_remote_code" in str(error)
        model = SentenceTransformer({str(path)!r}, trust_remote_code=True, device="cpu")
        print(json.dumps(dataclasses.asdict(model[0].moe_config)))
        np.save({str(tmp_path / "emb.npy")!r}, model.encode({TEXTS!r}))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads(done.stdout.strip().splitlines()[-1])
    assert config == {"num_experts": 2, "top_k": 1, "routing": "learned", "balance_coef": 0.01}
    np.testing.assert_array_equal(np.load(tmp_path / "emb.npy"), expected)
