"""InfoNCE and the Contrastive Learning Penalty (CLP) as sentence-transformers losses.

A pure functional core works on embeddings (``info_nce``, ``clp_penalty``, ``clp_loss``), so
the notebooks, the measurements and the tests can call it on tensors; ``InfoNCELoss`` and
``CLPLoss`` wrap it the way sentence-transformers writes its losses, and every study run
trains with them through ``SentenceTransformerTrainer`` (``clp_utils.training``).

CLP (Yu 2024, arXiv 2412.17364) adds to InfoNCE a penalty that pulls each hard negative toward
its own queries; ``CLPLoss`` gives the formula and its two variants: ``"paper"`` (the official
code's mean over the negatives' queries, made correct at any batch size, with or without
in-batch negatives, and on several processes) and ``"sum"`` (the published formula).

Several processes: with ``gather=True`` (``gather_across_devices=True`` on the modules) every
rank gathers positives and hard negatives from all ranks with gradients (sentence-transformers'
``all_gather_with_grad``, as ``MultipleNegativesRankingLoss`` does), and the penalty is
normalised by the global number of valid slots. Each rank's loss is then its share of the
global loss: the mean over ranks, which DDP's gradient averaging optimises, equals the
single-process loss on the global batch, and so do the gradients. Ranks must hold equally
sized batches (``dataloader_drop_last=True``), as for ``MultipleNegativesRankingLoss``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.util import all_gather_with_grad, get_rank, get_world_size
from torch import Tensor, nn

#: The one temperature default of the project (losses and ``TrainConfig``): 0.05, i.e.
#: sentence-transformers' ``MultipleNegativesRankingLoss`` scale 20, as the field trains. The
#: paper's code used 0.02; the paper-recipe rows set it (``profiles.PAPER_RECIPE``).
DEFAULT_TAU = 0.05

Variant = Literal["paper", "sum"]
VARIANTS: tuple[str, ...] = ("paper", "sum")

CLP_CITATION = """
@misc{yu2024clp,
      title={Efficient fine-tuning methodology of text embedding models for information
             retrieval: contrastive learning penalty (clp)},
      author={Jeongsu Yu},
      year={2024},
      eprint={2412.17364},
      archivePrefix={arXiv},
      primaryClass={cs.IR},
      url={https://arxiv.org/abs/2412.17364},
}
"""

INFONCE_CITATION = """
@misc{oord2019representationlearningcontrastivepredictive,
      title={Representation Learning with Contrastive Predictive Coding},
      author={Aaron van den Oord and Yazhe Li and Oriol Vinyals},
      year={2019},
      eprint={1807.03748},
      archivePrefix={arXiv},
      primaryClass={cs.LG},
      url={https://arxiv.org/abs/1807.03748},
}
"""


@dataclass
class CLPOutput:
    """The CLP loss and its two unweighted parts: ``total = (1-lam)*contrastive + lam*penalty``."""

    total: Tensor
    contrastive: Tensor
    penalty: Tensor


# --------------------------------------------------------------------------------------------
# Functional core


def _gathering(gather: bool) -> bool:
    return gather and get_world_size() > 1


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward hands on a contiguous gradient.

    ``torch.distributed.nn.all_gather``'s backward on gloo allocates its receive buffers with
    ``empty_like(grad)`` and scatters into them as if they were contiguous: a strided
    gradient (e.g. after a transpose downstream) comes back scrambled. Found by
    tests/test_losses_distributed.py.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.contiguous()


def _gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all processes along dim 0, gradients flowing back to each."""
    return _ContiguousGrad.apply(all_gather_with_grad(x.contiguous()))


def info_nce(
    query: Tensor,
    pos: Tensor,
    negs: Tensor | None = None,
    tau: float = DEFAULT_TAU,
    in_batch: bool = True,
    gather: bool = False,
) -> Tensor:
    """InfoNCE with cosine similarity, averaged over this process's queries.

    Args:
        query: (B, d) query embeddings (normalised inside).
        pos: (B, d) their positives.
        negs: (B, k, d) hard negatives of each query, or ``None`` / k = 0 for none.
        tau: temperature; logits are cos / tau (``scale = 1 / tau`` in sentence-transformers).
            Default ``DEFAULT_TAU``.
        in_batch: score each query against every positive and every hard negative in the
            (global) batch, as ``MultipleNegativesRankingLoss`` does; ``False`` scores it against
            its own positive and its own k negatives only (the official CLP code's setting).
        gather: gather positives and negatives from all processes (with gradients) first.

    Returns:
        Scalar tensor: mean over local queries of -log softmax(positive).
    """
    q = F.normalize(query, dim=-1)
    p = F.normalize(pos, dim=-1)
    n = F.normalize(negs, dim=-1) if negs is not None and negs.size(1) > 0 else None
    batch = q.size(0)
    if not in_batch:
        # Own candidates only: column 0 is the positive.
        logits = (q * p).sum(-1, keepdim=True)
        if n is not None:
            logits = torch.cat([logits, torch.einsum("bd,bkd->bk", q, n)], dim=1)
        target = torch.zeros(batch, dtype=torch.long, device=q.device)
        return F.cross_entropy(logits / tau, target)
    offset = 0
    if _gathering(gather):
        p = _gather(p)
        n = _gather(n) if n is not None else None
        offset = get_rank() * batch
    # Candidates: all positives, then every query's negatives (the order of the candidates
    # does not change the softmax, only the target index).
    docs = p if n is None else torch.cat([p, n.reshape(-1, n.size(-1))])
    logits = q @ docs.T
    target = torch.arange(offset, offset + batch, device=q.device)
    return F.cross_entropy(logits / tau, target)


def clp_penalty(
    negs: Tensor,
    neg_queries: Tensor,
    mask: Tensor | None = None,
    variant: Variant = "paper",
    gather: bool = False,
) -> Tensor:
    """The CLP penalty: pull each hard negative toward its own queries.

    Args:
        negs: (B, k, d) hard-negative embeddings.
        neg_queries: (B, k, m, d) the negatives' own queries, slot r of negative j at [:, j, r].
        mask: 0/1 validity of the query slots, (B, k*m) (j-major, as the dataset's ``label``
            column) or (B, k, m); ``None`` means all valid. Masked slots contribute nothing.
        variant: ``"paper"`` (mean over valid slots of 1 - cos) or ``"sum"`` (mean over
            negatives with at least one valid slot of 1 - sum of cos over its valid slots).
        gather: normalise by the valid count over all processes, so that the mean of the
            per-process penalties is the global penalty.

    Returns:
        Scalar tensor; 0 when no slot is valid.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    n = F.normalize(negs, dim=-1)
    nq = F.normalize(neg_queries, dim=-1)
    shape = nq.shape[:3]
    if mask is None:
        valid = torch.ones(shape, dtype=torch.bool, device=nq.device)
    elif mask.numel() != shape.numel() or mask.size(0) != shape[0]:
        raise ValueError(
            f"penalty mask has shape {tuple(mask.shape)}; expected (batch, k*m) = "
            f"({shape[0]}, {shape[1] * shape[2]}) or (batch, k, m) = {tuple(shape)}"
        )
    else:
        valid = mask.reshape(shape).to(nq.device) > 0
    cos = torch.einsum("bkd,bkmd->bkm", n, nq)
    # where (not multiply): a masked slot's value never reaches the forward value.
    if variant == "paper":
        terms = torch.where(valid, 1.0 - cos, torch.zeros_like(cos))
        count = valid.sum().to(cos.dtype)
    else:
        has_query = valid.any(-1)
        per_neg = 1.0 - torch.where(valid, cos, torch.zeros_like(cos)).sum(-1)
        terms = torch.where(has_query, per_neg, torch.zeros_like(per_neg))
        count = has_query.sum().to(cos.dtype)
    world = 1
    if _gathering(gather):  # the global number of valid terms (no gradient)
        count = count.detach().clone()
        dist.all_reduce(count, op=dist.ReduceOp.SUM)
        world = get_world_size()
    return terms.sum() * world / count.clamp_min(1.0)


def clp_loss(
    query: Tensor,
    pos: Tensor,
    negs: Tensor,
    neg_queries: Tensor,
    mask: Tensor | None = None,
    lam: float = 0.1,
    tau: float = DEFAULT_TAU,
    variant: Variant = "paper",
    in_batch: bool = True,
    gather: bool = False,
) -> CLPOutput:
    """CLP = (1 - lam) * InfoNCE + lam * penalty, on embeddings.

    Args:
        query, pos: (B, d). negs: (B, k, d). neg_queries: (B, k, m, d).
        mask: (B, k*m) or (B, k, m) 0/1 validity of the negatives' query slots, or ``None``.
        lam: penalty weight lambda in [0, 1] (paper: 0.1).
        tau: InfoNCE temperature (default ``DEFAULT_TAU``; the paper's code: 0.02); the
            penalty is not divided by it.
        variant, in_batch, gather: see ``clp_penalty`` and ``info_nce``.

    Returns:
        ``CLPOutput(total, contrastive, penalty)``; ``contrastive`` and ``penalty`` unweighted.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    contrastive = info_nce(query, pos, negs, tau=tau, in_batch=in_batch, gather=gather)
    penalty = clp_penalty(negs, neg_queries, mask, variant=variant, gather=gather)
    return CLPOutput((1.0 - lam) * contrastive + lam * penalty, contrastive, penalty)


# --------------------------------------------------------------------------------------------
# sentence-transformers losses


class InfoNCELoss(nn.Module):
    citation = INFONCE_CITATION

    def __init__(
        self,
        model: nn.Module,
        temperature: float = DEFAULT_TAU,
        in_batch_negatives: bool = True,
        gather_across_devices: bool = False,
    ) -> None:
        """InfoNCE on (query, positive, negative_1, ..., negative_k) tuples, cosine similarity::

            loss = mean_i -log( exp(s(q_i, p_i)/tau) / sum_{c in C_i} exp(s(q_i, c)/tau) )

        C_i = the positive and hard negatives of every query in the (global) batch when
        ``in_batch_negatives`` (then identical to ``MultipleNegativesRankingLoss`` with
        ``scale = 1/tau``), else query i's own positive and hard negatives only.

        Args:
            model: SentenceTransformer model.
            temperature: tau (default ``DEFAULT_TAU`` = ``MultipleNegativesRankingLoss``'s scale 20;
                the paper's code: 0.02).
            in_batch_negatives: use the other queries' positives and negatives as negatives.
            gather_across_devices: gather candidates across processes (with gradients).

        References:
            - van den Oord et al. 2018, https://arxiv.org/abs/1807.03748

        Inputs:
            +------------------------------------------------+--------+
            | Texts                                          | Labels |
            +================================================+========+
            | (query, pos, neg_0, ..., neg_{k-1}), k >= 0    | none   |
            +------------------------------------------------+--------+

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformerTrainer
                from clp_utils.losses import InfoNCELoss
                from clp_utils.models import load_model

                model = load_model("minilm")
                train = Dataset.from_dict({"query": ["who wrote hamlet"],
                                           "pos": ["Hamlet is a tragedy by Shakespeare."],
                                           "neg_0": ["Macbeth is set in Scotland."]})
                trainer = SentenceTransformerTrainer(model=model, train_dataset=train,
                                                     loss=InfoNCELoss(model))
                trainer.train()
        """
        super().__init__()
        if not temperature > 0:
            raise ValueError("temperature must be positive")
        self.model = model
        self.temperature = temperature
        self.in_batch_negatives = in_batch_negatives
        self.gather_across_devices = gather_across_devices

    @property
    def scale(self) -> float:
        """1 / temperature, sentence-transformers' name for it."""
        return 1.0 / self.temperature

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "in_batch_negatives": self.in_batch_negatives,
                "gather_across_devices": self.gather_across_devices}

    def forward(
        self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None
    ) -> Tensor:
        # The query column in its own forward, the like-width document columns merged.
        embeddings = embed_columns(self.model, sentence_features)
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(
        self, embeddings: list[Tensor], labels: Tensor | None = None
    ) -> Tensor:
        """The loss from per-column embeddings [query, pos, neg_0, ...]; labels are ignored."""
        if len(embeddings) < 2:
            raise ValueError(f"Expected at least 2 columns (query, pos), got {len(embeddings)}")
        query, pos, *negs = embeddings
        stacked = torch.stack(negs, dim=1) if negs else None
        return info_nce(query, pos, stacked, tau=self.temperature,
                        in_batch=self.in_batch_negatives, gather=self.gather_across_devices)


class CLPLoss(InfoNCELoss):
    citation = CLP_CITATION

    def __init__(
        self,
        model: nn.Module,
        num_negatives: int = 4,
        queries_per_negative: int = 1,
        lam: float = 0.1,
        temperature: float = DEFAULT_TAU,
        variant: Variant = "paper",
        in_batch_negatives: bool = True,
        gather_across_devices: bool = False,
        return_components: bool = False,
    ) -> None:
        """Contrastive Learning Penalty (Yu 2024): InfoNCE plus a pull of each hard negative
        toward its own queries, so that pushing it away from query i keeps it retrievable for
        the queries it answers::

            loss = (1 - lam) * InfoNCE_tau + lam * P
            "paper": P = mean_{i, j, r valid} (1 - s(n_ij, q*_ijr))
            "sum":   P = mean_{i, j with a valid r} (1 - sum_{r valid} s(n_ij, q*_ijr))

        s = cosine, n_ij = negative j of query i, q*_ijr = its r-th own query. The penalty is
        not divided by tau. ``"paper"`` is the official code's computation (mean over the
        negatives, one query each) made correct at any batch size; ``"sum"`` is the published
        formula (a sum over several positive queries of a negative: in [1 - m, 1 + m], weighing a
        negative by its number of queries). At m = 1 they coincide.

        Args:
            model: SentenceTransformer model.
            num_negatives: k, hard negatives per query.
            queries_per_negative: m, query slots per negative (1 for the paper's data).
            lam: lambda, the penalty weight (paper: 0.1).
            temperature: tau of InfoNCE (default ``DEFAULT_TAU``; the paper's code: 0.02).
            variant: ``"paper"`` or ``"sum"``.
            in_batch_negatives: InfoNCE against all positives and negatives of the (global)
                batch; ``False`` is the official code's setting (own candidates only).
            gather_across_devices: gather InfoNCE candidates across processes (with
                gradients) and normalise the penalty by the global valid count.
            return_components: return ``{"contrastive_weighted": (1-lam)*InfoNCE,
                "penalty_weighted": lam*P}`` instead of the total. ``SentenceTransformerTrainer``
                sums such a dict into the loss it backpropagates and logs each entry.

        After each forward, ``last_parts`` holds the detached floats ``contrastive``
        (unweighted InfoNCE), ``penalty`` (unweighted P) and ``total``, and ``last_output``
        the same as tensors (``CLPOutput``, with gradients).

        References:
            - Yu 2024, https://arxiv.org/abs/2412.17364

        Inputs:
            +--------------------------------------------------------------+-----------------+
            | Texts                                                        | Labels          |
            +==============================================================+=================+
            | (query, pos, neg_0..neg_{k-1}, neg_q_0_0..neg_q_{k-1}_{m-1}) | none, or a 0/1  |
            | negatives' queries j-major: neg_q_{j}_{r}, slot r of neg j   | (k*m,) mask per |
            |                                                              | row (``label``) |
            +--------------------------------------------------------------+-----------------+

            A negative with fewer than m real queries puts any text in the empty slots and 0
            in their mask entries; masked slots contribute nothing and P averages over valid
            ones.

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformerTrainer
                from clp_utils.losses import CLPLoss
                from clp_utils.models import load_model

                model = load_model("minilm")
                train = Dataset.from_dict({
                    "query": ["who wrote hamlet"],
                    "pos": ["Hamlet is a tragedy by Shakespeare."],
                    "neg_0": ["Macbeth is set in Scotland."],
                    "neg_q_0_0": ["where is macbeth set"],
                })
                loss = CLPLoss(model, num_negatives=1)
                trainer = SentenceTransformerTrainer(model=model, train_dataset=train, loss=loss)
                trainer.train()
        """
        super().__init__(model, temperature, in_batch_negatives, gather_across_devices)
        if num_negatives < 1 or queries_per_negative < 1:
            raise ValueError("CLP needs num_negatives >= 1 and queries_per_negative >= 1")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        self.num_negatives = num_negatives
        self.queries_per_negative = queries_per_negative
        self.lam = lam
        self.variant = variant
        self.return_components = return_components
        self.last_parts: dict[str, float] = {}
        self.last_output: CLPOutput | None = None

    @property
    def num_columns(self) -> int:
        """Text columns expected: query, pos, k negatives, k*m negatives' queries."""
        return 2 + self.num_negatives * (1 + self.queries_per_negative)

    def _check_columns(self, n: int) -> None:
        if n != self.num_columns:
            raise ValueError(
                f"CLPLoss(num_negatives={self.num_negatives}, queries_per_negative="
                f"{self.queries_per_negative}) expects {self.num_columns} text columns, got {n}"
            )

    def forward(
        self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None
    ) -> Tensor | dict[str, Tensor]:
        features = list(sentence_features)
        self._check_columns(len(features))  # before any forward pass
        k = self.num_negatives
        # Two forwards grouped by text width: short queries (the query and the negatives'
        # queries) and long passages, so that no query is padded to passage length.
        queries = embed_columns(self.model, [features[0], *features[2 + k :]], separate_first=False)
        docs = embed_columns(self.model, features[1 : 2 + k], separate_first=False)
        return self.compute_loss_from_embeddings([queries[0], *docs, *queries[1:]], labels)

    def compute_loss_from_embeddings(
        self, embeddings: list[Tensor], labels: Tensor | None = None
    ) -> Tensor | dict[str, Tensor]:
        """The loss from per-column embeddings in dataset column order.

        Args:
            embeddings: [query, pos, neg_0..neg_{k-1}, neg_q_0_0..neg_q_{k-1}_{m-1}], each (B, d).
            labels: (B, k*m) 0/1 penalty mask, or ``None`` for all valid.
        """
        self._check_columns(len(embeddings))
        k, m = self.num_negatives, self.queries_per_negative
        query, pos = embeddings[0], embeddings[1]
        negs = torch.stack(embeddings[2 : 2 + k], dim=1)
        batch, dim = query.shape
        neg_queries = torch.stack(embeddings[2 + k :], dim=1).reshape(batch, k, m, dim)
        out = clp_loss(query, pos, negs, neg_queries, mask=labels, lam=self.lam,
                       tau=self.temperature, variant=self.variant,
                       in_batch=self.in_batch_negatives, gather=self.gather_across_devices)
        self.last_output = out
        self.last_parts = {part: getattr(out, part).detach().item()
                           for part in ("contrastive", "penalty", "total")}
        if self.return_components:
            return {
                "contrastive_weighted": (1.0 - self.lam) * out.contrastive,
                "penalty_weighted": self.lam * out.penalty,
            }
        return out.total

    def get_config_dict(self) -> dict[str, Any]:
        return {"num_negatives": self.num_negatives,
                "queries_per_negative": self.queries_per_negative, "lambda": self.lam,
                "variant": self.variant, **super().get_config_dict()}


def clp_column_names(num_negatives: int, queries_per_negative: int = 1) -> list[str]:
    """The text columns ``CLPLoss`` expects, in order: query, pos, neg_j, neg_q_{j}_{r}."""
    negs = [f"neg_{j}" for j in range(num_negatives)]
    neg_qs = [f"neg_q_{j}_{r}" for j in range(num_negatives) for r in range(queries_per_negative)]
    return ["query", "pos", *negs, *neg_qs]
