"""Trainable-parameter policies: which weights a fine-tuning run may change.

The paper's third lever trains only the FFN intermediate layers (+1.39 nDCG@5), or a Mixture
of Experts in their place (+0.44 more). Four policies, all for BERT/RoBERTa/XLM-R encoders:

- ``full``: every parameter.
- ``intermediate``: the FFN up-projection (``layer.intermediate.dense``, weight and bias) of
  every layer; nothing else.
- ``moe``: replace those denses by :class:`~clp_utils.moe.MoELinear` layers
  (:func:`~clp_utils.moe.apply_moe`, keyword arguments passed on) and train only the experts
  and gates.
- ``lora``: a LoRA baseline via peft on the same up-projections; only the adapters train.
  The base weights stay frozen, and ``lora_B`` starts at zero, so step 0 is the base model.
  :func:`merge_lora` folds the adapters in before saving.

Freezing is done with ``requires_grad``, so an optimizer given all of ``model.parameters()``
still changes only the trainable ones. Every policy but ``moe`` (see :mod:`clp_utils.moe`)
saves as a standard sentence-transformers folder.

Example:
    >>> model = load_model("minilm")
    >>> counts = apply_policy(model, "intermediate")
    >>> print(counts)  # intermediate: 3,548,160 / 22,713,216 trainable (15.62%)
"""

from __future__ import annotations

from dataclasses import dataclass

from sentence_transformers import SentenceTransformer
from torch import nn

from clp_utils.moe import (
    INTERMEDIATE_SUFFIX,
    apply_moe,
    intermediate_denses,
    moe_layers,
    transformer_module,
)

POLICIES: tuple[str, ...] = ("full", "intermediate", "moe", "lora")


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a model under a policy (LoRA adapters and experts count in total)."""

    policy: str
    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        """Trainable share of all parameters."""
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return (
            f"{self.policy}: {self.trainable:,} / {self.total:,} trainable "
            f"({100 * self.fraction:.2f}%)"
        )


def count_parameters(model: nn.Module, policy: str = "") -> ParamCounts:
    """Count the trainable (``requires_grad``) and total parameters of ``model``."""
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return ParamCounts(policy, trainable, sum(p.numel() for p in params))


def _train_only(model: nn.Module, modules: list[nn.Module]) -> None:
    model.requires_grad_(False)
    for module in modules:
        module.requires_grad_(True)


def merge_lora(model: SentenceTransformer) -> SentenceTransformer:
    """Fold the LoRA updates into the base weights and remove the adapters, in place.

    Afterwards the model is a plain one again and saves as a standard, self-contained folder.
    """
    from peft.tuners.lora import LoraLayer

    hf = transformer_module(model).auto_model
    for name, module in list(hf.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            hf.set_submodule(name, module.get_base_layer())
    # transformers saves only the adapter while it believes one is loaded.
    hf._hf_peft_config_loaded = False
    if hasattr(hf, "peft_config"):
        del hf.peft_config
    return model


def apply_policy(model: SentenceTransformer, policy: str, **kwargs) -> ParamCounts:
    """Set which parameters train, modifying the model where the policy needs it.

    Args:
        model: a sentence-transformers model with a BERT/RoBERTa/XLM-R encoder.
        policy: ``"full"``, ``"intermediate"``, ``"moe"`` or ``"lora"``.
        **kwargs: ``moe``: passed to :func:`~clp_utils.moe.apply_moe` (num_experts, top_k,
            routing, seed, balance_coef); ``lora``: the LoRA rank ``r`` (default 8),
            ``lora_alpha`` (16; the update is scaled by ``lora_alpha / r``) and
            ``lora_dropout`` (0.0, on the adapter's input). Other policies take none.

    Returns:
        The trainable and total parameter counts after the change.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if kwargs and policy not in ("moe", "lora"):
        raise TypeError(f"policy {policy!r} takes no options, got {sorted(kwargs)}")
    if policy == "full":
        model.requires_grad_(True)
    elif policy == "intermediate":
        denses = intermediate_denses(model)
        if not denses:
            raise ValueError(f"no '{INTERMEDIATE_SUFFIX}' nn.Linear (MoE already applied?)")
        _train_only(model, [dense for _, dense in denses])
    elif policy == "moe":
        if not moe_layers(model):
            apply_moe(model, **kwargs)
        elif kwargs:
            raise ValueError("the model already has MoE layers; options would be ignored")
        _train_only(model, [layer for _, layer in moe_layers(model)])
    else:
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.lora import LoraLayer

        if not intermediate_denses(model):
            raise ValueError(f"no '{INTERMEDIATE_SUFFIX}' nn.Linear to adapt")
        options = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0}
        if set(kwargs) - set(options):
            raise TypeError(f"policy 'lora' takes {sorted(options)}, got {sorted(kwargs)}")
        # peft matches a module whose name ends with ".intermediate.dense".
        config = LoraConfig(**options | kwargs, target_modules=[INTERMEDIATE_SUFFIX], bias="none")
        # peft directly, not ``model.add_adapter``: transformers 5.24's adapter integration
        # requires peft >= 0.22, and the study pins 0.21.2. Save after :func:`merge_lora`.
        hf = transformer_module(model).auto_model
        inject_adapter_in_model(config, hf, adapter_name="default")
        layers = [m for m in hf.modules() if isinstance(m, LoraLayer)]
        _train_only(model, [adapter for m in layers for adapter in (m.lora_A, m.lora_B)])
    return count_parameters(model, policy)
