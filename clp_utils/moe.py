"""Mixture-of-Experts intermediate layers for any BERT/XLM-R style sentence-transformers model.

The paper (arXiv 2412.17364, section 3.3) replaces each transformer layer's FFN up-projection
(``layer.intermediate.dense``, hidden -> intermediate) by E experts copied from that dense plus
a bias-free linear gate, routes every token to its top-k experts, and trains only those. Its
code is hard-wired to XLM-R large; here every size comes from the existing ``nn.Linear``, so
MiniLM (384 -> 1536) and BGE-M3 (1024 -> 4096) work alike.

Two routing modes, with g = gate(x) the E logits of a token:

- ``paper``: keep the top-k logits, weights = softmax over the k kept logits. With k = 1 the
  weight is softmax of a single number = 1.0 exactly, so the gate receives a gradient of exactly
  zero and the routing stays at its random initialisation (the official code's behaviour).
- ``learned``: p = softmax(g) over all E experts, keep the top-k, weights = p_kept / sum(p_kept).
  The normaliser is treated as a constant in the backward pass: its value renormalises the
  weights (so identical experts still reproduce the base model exactly at step 0), but with a
  differentiable normaliser and k = 1 the weight would again be identically 1 and the gate would
  learn nothing from the task loss. With the normaliser held constant, the gate receives the
  Switch Transformer gradient (Fedus et al., 2021) divided by sum(p_kept). An optional
  Switch-style load-balancing loss, E * sum_i f_i * P_i (f_i: fraction of routing slots sent to
  expert i, P_i: mean router probability of expert i, both over non-padding tokens), is
  collected with :func:`moe_balance_loss` (``TrainConfig.moe_balance`` adds it to a run's loss;
  the extras' learned-gate row trains with it).

Tokens are dispatched per expert with batched tensor operations (sort by expert, one matmul per
expert, scatter back); padding tokens are excluded from routing statistics and from the balance
loss. :func:`apply_moe` turns the model's first module into a :class:`MoETransformer`, which
saves and reloads the experts (``SentenceTransformer(path, trust_remote_code=True)``).

Example:
    >>> model = load_model("minilm")
    >>> apply_moe(model, num_experts=2, top_k=1, routing="learned", seed=0, balance_coef=0.01)
    >>> with record_routing(model):
    ...     model.encode(passages)
    >>> routing_stats(model)[0].load       # fraction of tokens per expert in layer 0
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from torch import Tensor, nn

Routing = Literal["paper", "learned"]
ROUTINGS: tuple[str, ...] = ("paper", "learned")

#: The suffix that names the FFN up-projection in BERT, RoBERTa and XLM-R module trees.
INTERMEDIATE_SUFFIX = "intermediate.dense"
MOE_CONFIG_FILE = "moe_config.json"
MOE_WEIGHTS_FILE = "moe.safetensors"
#: The arguments of sentence-transformers' ``load`` that say where the files are.
_HUB_ARGUMENTS = ("subfolder", "token", "cache_folder", "revision", "local_files_only")


@dataclass(frozen=True)
class MoEConfig:
    """How the intermediate layers were replaced (saved as ``moe_config.json``)."""

    num_experts: int = 2
    top_k: int = 1
    routing: Routing = "paper"
    balance_coef: float = 0.0

    def __post_init__(self) -> None:
        if self.routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {self.routing!r}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(
                f"need 1 <= top_k <= num_experts, got {self.top_k}, {self.num_experts}"
            )
        if self.balance_coef < 0:
            raise ValueError("balance_coef must be >= 0")
        if self.routing == "paper" and self.balance_coef > 0:
            # A balance loss would train the gate, which is exactly what `paper` routing is not.
            raise ValueError("the balance loss needs routing='learned'")


@dataclass(eq=False)
class RoutingContext:
    """State shared by one model's MoE layers: the batch's padding mask and recording switches."""

    attention_mask: Tensor | None = None
    record: bool = False
    aux_losses: list[Tensor] = field(default_factory=list)
    _workspaces: dict[str, Tensor] = field(default_factory=dict)

    def workspace(self, name: str, rows: int, cols: int, dtype: torch.dtype) -> Tensor:
        """A (rows, cols) CPU scratch buffer, reused by the layers across forward passes.

        Fresh CPU tensors of tens of MB are page-faulted on every allocation (glibc maps them
        afresh), which cost the MoE about as much as its matmuls; buffers shared by all layers
        (they run one after the other) avoid that without holding one per layer.
        """
        buf = self._workspaces.get(name)
        if (
            buf is None
            or buf.numel() < rows * cols
            or buf.dtype != dtype
            or buf.is_inference() != torch.is_inference_mode_enabled()
        ):
            buf = self._workspaces[name] = torch.empty(rows * cols, dtype=dtype)
        return buf[: rows * cols].view(rows, cols)


class MoELinear(nn.Module):
    """A drop-in replacement for a hidden -> intermediate ``nn.Linear``: E experts and a gate.

    Args:
        dense: the pretrained linear layer; every expert starts as an exact copy of it.
        config: number of experts, top-k, routing mode and balance coefficient.
        generator: the random stream that initialises the gate (seeded by :func:`apply_moe`).
        context: the model's shared :class:`RoutingContext`.
    """

    def __init__(
        self,
        dense: nn.Linear,
        config: MoEConfig,
        generator: torch.Generator,
        context: RoutingContext,
    ) -> None:
        super().__init__()
        self.config = config
        self.context = context
        self.in_features, self.out_features = dense.in_features, dense.out_features
        num_experts = config.num_experts
        weight = dense.weight.detach()
        self.expert_weight = nn.Parameter(weight.unsqueeze(0).repeat(num_experts, 1, 1))
        if dense.bias is not None:
            self.expert_bias = nn.Parameter(dense.bias.detach().unsqueeze(0).repeat(num_experts, 1))
        else:
            self.register_parameter("expert_bias", None)
        self.gate = nn.Linear(self.in_features, num_experts, bias=False)
        # nn.Linear's own initialisation, drawn from the seeded stream instead of the global one.
        nn.init.kaiming_uniform_(self.gate.weight, a=math.sqrt(5), generator=generator)
        self.gate.to(device=weight.device, dtype=weight.dtype)
        self.reset_routing_stats()

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"num_experts={c.num_experts}, top_k={c.top_k}, routing={c.routing!r}"
        )

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Route tokens ``x`` (N, in_features) to experts.

        Returns:
            ``(experts, weights, probs)``: the (N, k) chosen expert ids, their (N, k) mixing
            weights, and the (N, E) softmax over all gate logits (float32, for statistics).
        """
        logits = self.gate(x).float()
        probs = logits.softmax(dim=-1)
        k = self.config.top_k
        if self.config.routing == "paper":
            kept, experts = logits.topk(k, dim=-1)
            weights = kept.softmax(dim=-1)
        else:
            kept, experts = probs.topk(k, dim=-1)
            weights = kept / kept.sum(dim=-1, keepdim=True).detach()
        return experts, weights, probs

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        flat = x.reshape(-1, self.in_features)
        experts, weights, probs = self.route(flat)
        out = self._dispatch(flat, experts, weights)
        balance = self.config.balance_coef > 0 and self.training and torch.is_grad_enabled()
        if self.context.record or balance:
            mask = self.context.attention_mask
            # Packed (unpadded) inputs carry no padding, and a mask of another shape is not ours.
            if mask is not None and tuple(mask.shape) == tuple(shape[:-1]):
                valid = mask.reshape(-1).bool()
                experts, probs = experts[valid], probs[valid]
            if self.context.record:
                self._record(experts, probs)
            if balance:  # Switch's load-balancing loss E * sum_i f_i * P_i, valid tokens only
                num_experts = self.config.num_experts
                share = torch.bincount(experts.reshape(-1), minlength=num_experts).float()
                loss = (num_experts * (share / experts.numel() * probs.mean(dim=0)).sum()
                        if probs.shape[0] else probs.sum() * 0.0)
                self.context.aux_losses.append(self.config.balance_coef * loss)
        return out.reshape(*shape[:-1], self.out_features)

    def _dispatch(self, flat: Tensor, experts: Tensor, weights: Tensor) -> Tensor:
        # Sort the N*k (token, slot) pairs by expert: each expert then runs one matmul on a
        # contiguous block of its tokens, and the rows go back to their tokens.
        n, k = experts.shape
        slot_expert = experts.reshape(-1)
        order = slot_expert.argsort(stable=True)
        counts = torch.bincount(slot_expert, minlength=self.config.num_experts).tolist()
        token_of_slot = order // k if k > 1 else order
        slot_weight = weights.reshape(-1)[order]
        if flat.device.type == "cpu" and not torch.is_grad_enabled():
            return self._dispatch_inference(flat, counts, token_of_slot, slot_weight, k)
        out, start = None, 0
        for e, count in enumerate(counts):
            if not count:
                continue
            tokens = token_of_slot[start : start + count]
            bias = None if self.expert_bias is None else self.expert_bias[e]
            y = F.linear(flat.index_select(0, tokens), self.expert_weight[e], bias)
            # With k = 1 this weight is exactly 1.0; it carries the gate's gradient.
            y = y * slot_weight[start : start + count, None].to(y.dtype)
            if out is None:
                # Every row is written when k = 1; with k > 1 slots add up.
                shape = (n, self.out_features)
                out = y.new_empty(shape) if k == 1 else y.new_zeros(shape)
            out = out.index_copy_(0, tokens, y) if k == 1 else out.index_add_(0, tokens, y)
            start += count
        return flat.new_zeros(0, self.out_features) if out is None else out

    def _dispatch_inference(
        self, flat: Tensor, counts: list[int], token_of_slot: Tensor, slot_weight: Tensor, k: int
    ) -> Tensor:
        # The same computation without autograd on CPU: the expert matmuls write into a shared
        # scratch buffer (out=) instead of fresh tensors. Autocast does not apply to out= ops,
        # so its cast is done by hand.
        dtype = flat.dtype
        if torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
        slots = token_of_slot.shape[0]
        inputs = self.context.workspace("inputs", slots, self.in_features, flat.dtype)
        torch.index_select(flat, 0, token_of_slot, out=inputs)
        inputs = inputs.to(dtype)
        results = self.context.workspace("results", slots, self.out_features, dtype)
        start = 0
        with torch.autocast("cpu", enabled=False):
            for e, count in enumerate(counts):
                rows = slice(start, start + count)
                weight = self.expert_weight[e].to(dtype).t()
                if self.expert_bias is None:
                    torch.mm(inputs[rows], weight, out=results[rows])
                else:
                    bias = self.expert_bias[e].to(dtype)
                    torch.addmm(bias, inputs[rows], weight, out=results[rows])
                start += count
        out = results.new_empty(flat.shape[0], self.out_features)
        if k == 1:  # every weight is exactly 1.0
            return out.index_copy_(0, token_of_slot, results)
        results.mul_(slot_weight[:, None].to(dtype))
        return out.zero_().index_add_(0, token_of_slot, results)

    @torch.no_grad()
    def _record(self, experts: Tensor, probs: Tensor) -> None:
        # Out of place: these are plain CPU tensors that may have been created in inference mode.
        counts = torch.bincount(experts.reshape(-1), minlength=self.config.num_experts)
        self.expert_counts = self.expert_counts + counts.to(self.expert_counts)
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum()
        self.token_entropy_sum = self.token_entropy_sum + entropy.double().cpu()
        self.tokens += probs.shape[0]

    def reset_routing_stats(self) -> None:
        """Zero the recorded expert counts and entropies of this layer."""
        self.expert_counts = torch.zeros(self.config.num_experts, dtype=torch.float64)
        self.token_entropy_sum = torch.zeros((), dtype=torch.float64)
        self.tokens = 0

    def as_linear(self, expert: int = 0) -> nn.Linear:
        """One expert as a plain ``nn.Linear`` (sharing no storage with this layer)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.expert_bias is not None)
        linear.weight = nn.Parameter(self.expert_weight[expert].detach().clone())
        if self.expert_bias is not None:
            linear.bias = nn.Parameter(self.expert_bias[expert].detach().clone())
        return linear


class MoETransformer(Transformer):
    """A sentence-transformers ``Transformer`` whose model holds :class:`MoELinear` layers.

    It passes each batch's attention mask to its MoE layers (so padding is not counted in
    routing statistics) and saves and loads the experts and gates next to the base checkpoint.
    Created by :func:`apply_moe`; reloaded by ``SentenceTransformer(path, trust_remote_code=True)``
    (sentence-transformers imports a module class from outside its own namespace only with that
    flag, even from a local folder; without it the load fails rather than drop the experts).
    """

    moe_config: MoEConfig
    moe_context: RoutingContext

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        self.moe_context.attention_mask = features.get("attention_mask")
        try:
            return super().forward(features, **kwargs)
        finally:
            self.moe_context.attention_mask = None

    def __repr__(self) -> str:
        return f"MoE{super().__repr__()[:-1]}, moe={asdict(self.moe_config)})"

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """Save a loadable base checkpoint, ``moe_config.json`` and ``moe.safetensors``."""
        layers = dict(moe_layers(self.model))
        # The Hugging Face part stays a valid base checkpoint: expert 0 stands in for each MoE.
        for name, layer in layers.items():
            self.model.set_submodule(name, layer.as_linear(0))
        try:
            super().save(output_path, *args, safe_serialization=safe_serialization, **kwargs)
        finally:
            for name, layer in layers.items():
                self.model.set_submodule(name, layer)
        with open(os.path.join(output_path, MOE_CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(asdict(self.moe_config), f, indent=2)
        state = {key: value.detach().contiguous().cpu() for key, value in _moe_state(self.model)}
        save_file(state, os.path.join(output_path, MOE_WEIGHTS_FILE))

    @classmethod
    def load(cls, model_name_or_path: str, **kwargs) -> MoETransformer:
        """Load the base checkpoint, re-create the MoE layers and load their weights."""
        module = super().load(model_name_or_path, **kwargs)
        where = {key: kwargs[key] for key in _HUB_ARGUMENTS if key in kwargs}
        config_path, weights_path = (
            cls.load_file_path(model_name_or_path, filename, **where)
            for filename in (MOE_CONFIG_FILE, MOE_WEIGHTS_FILE)
        )
        if config_path is None or weights_path is None:
            raise FileNotFoundError(
                f"{model_name_or_path} has no {MOE_CONFIG_FILE}/{MOE_WEIGHTS_FILE}"
            )
        with open(config_path, encoding="utf-8") as f:
            config = MoEConfig(**json.load(f))
        _install_moe(module, config, seed=0)
        state = load_file(weights_path)
        if set(state) != {key for key, _ in _moe_state(module.model)}:
            raise ValueError(f"{weights_path} does not match the model's MoE layers")
        module.model.load_state_dict(state, strict=False)
        return module


def transformer_module(model: SentenceTransformer) -> Transformer:
    """The sentence-transformers ``Transformer`` module (the first module) of ``model``."""
    module = model[0]
    if not isinstance(module, Transformer):
        raise TypeError(f"expected a Transformer first module, got {type(module).__name__}")
    return module


def _hf_model(model: SentenceTransformer | nn.Module) -> nn.Module:
    return transformer_module(model).auto_model if isinstance(model, SentenceTransformer) else model


def intermediate_denses(model: SentenceTransformer | nn.Module) -> list[tuple[str, nn.Linear]]:
    """Every FFN up-projection (``...intermediate.dense`` ``nn.Linear``) of the model.

    Names are relative to the Hugging Face model (``model[0].auto_model``) when given a
    ``SentenceTransformer``, e.g. ``encoder.layer.0.intermediate.dense``.
    """
    return [(name, module) for name, module in _hf_model(model).named_modules()
            if name.endswith(INTERMEDIATE_SUFFIX) and type(module) is nn.Linear]


def moe_layers(model: SentenceTransformer | nn.Module) -> list[tuple[str, MoELinear]]:
    """Every :class:`MoELinear` of the model, with its name inside the Hugging Face model."""
    return [(name, module) for name, module in _hf_model(model).named_modules()
            if isinstance(module, MoELinear)]


def _moe_state(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """The experts' and gates' state, named inside the Hugging Face model."""
    for name, layer in moe_layers(model):
        for key, value in layer.state_dict().items():
            yield f"{name}.{key}", value


def _install_moe(module: Transformer, config: MoEConfig, seed: int) -> None:
    denses = intermediate_denses(module.auto_model)
    if not denses:
        raise ValueError(
            f"no '{INTERMEDIATE_SUFFIX}' nn.Linear in {type(module.auto_model).__name__}: "
            "apply_moe supports BERT/RoBERTa/XLM-R style encoders"
        )
    context = RoutingContext()
    generator = torch.Generator().manual_seed(seed)
    for name, dense in denses:
        module.auto_model.set_submodule(name, MoELinear(dense, config, generator, context))
    # Swapping the class (it adds no state of its own to __init__) makes modules.json reference
    # MoETransformer, whose save/load round-trips the experts.
    module.__class__ = MoETransformer
    module.moe_config = config
    module.moe_context = context


def apply_moe(
    model: SentenceTransformer,
    num_experts: int = 2,
    top_k: int = 1,
    routing: Routing = "paper",
    seed: int = 0,
    balance_coef: float = 0.0,
) -> SentenceTransformer:
    """Replace every layer's intermediate dense by a Mixture of Experts, in place.

    Each expert starts as a copy of the pretrained dense, so the model's embeddings are
    unchanged at step 0; the bias-free gate is initialised from ``seed``.

    Args:
        model: a sentence-transformers model whose first module is a plain ``Transformer``
            wrapping a BERT/RoBERTa/XLM-R style encoder.
        num_experts: E, the experts per layer.
        top_k: experts per token.
        routing: ``"paper"`` (top-k logits, softmax over the kept ones) or ``"learned"``
            (softmax over all, top-k, renormalised); see the module docstring.
        seed: seeds the gate initialisation.
        balance_coef: weight of the Switch load-balancing loss (``learned`` only); collect it
            with :func:`moe_balance_loss`.

    Returns:
        ``model`` itself, now holding :class:`MoELinear` layers.
    """
    config = MoEConfig(num_experts, top_k, routing, float(balance_coef))
    module = transformer_module(model)
    if type(module) is not Transformer:
        raise TypeError(f"apply_moe needs a plain Transformer module, got {type(module).__name__}")
    _install_moe(module, config, seed)
    return model


def moe_balance_loss(model: SentenceTransformer) -> Tensor:
    """Sum and clear the balance losses recorded since the last call (0 when there are none).

    MoE layers record ``balance_coef * loss`` on every forward pass in training mode with
    gradients enabled, so call this once per training step, after the forward passes.
    """
    context = transformer_module(model).moe_context
    losses, context.aux_losses = context.aux_losses, []
    if not losses:
        return torch.zeros((), device=model.device)
    return torch.stack(losses).sum()


@dataclass(frozen=True)
class RoutingStats:
    """Routing of one MoE layer over the recorded (non-padding) tokens.

    Attributes:
        layer: the layer's name inside the Hugging Face model.
        tokens: how many tokens were routed.
        load: fraction of routing slots sent to each expert (sums to 1).
        load_entropy: entropy of ``load`` in bits (log2 E = perfectly balanced, 0 = collapsed).
        token_entropy: mean entropy in bits of each token's softmax over all gate logits
            (0 = confident gate, log2 E = indifferent gate).
    """

    layer: str
    tokens: int
    load: tuple[float, ...]
    load_entropy: float
    token_entropy: float


def routing_stats(model: SentenceTransformer) -> list[RoutingStats]:
    """Per-layer expert load and routing entropy recorded under :func:`record_routing`."""
    stats = []
    for name, layer in moe_layers(model):
        total = float(layer.expert_counts.sum())
        load = tuple((layer.expert_counts / total).tolist()) if total else ()
        load_entropy = float(-sum(x * math.log2(x) for x in load if x > 0))
        token_entropy = float(layer.token_entropy_sum) / layer.tokens if layer.tokens else 0.0
        stats.append(
            RoutingStats(name, layer.tokens, load, load_entropy, token_entropy / math.log(2))
        )
    return stats


def reset_routing_stats(model: SentenceTransformer) -> None:
    """Zero every MoE layer's recorded routing statistics."""
    for _, layer in moe_layers(model):
        layer.reset_routing_stats()


@contextmanager
def record_routing(model: SentenceTransformer, reset: bool = True) -> Iterator[None]:
    """Record routing statistics for the forward passes inside the block (off otherwise).

    Example:
        >>> with record_routing(model):
        ...     model.encode(passages)
        >>> pd.DataFrame(map(asdict, routing_stats(model)))
    """
    context = transformer_module(model).moe_context
    if reset:
        reset_routing_stats(model)
    previous, context.record = context.record, True
    try:
        yield
    finally:
        context.record = previous
