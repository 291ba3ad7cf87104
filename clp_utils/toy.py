"""A toy geometry for notebook 02: how InfoNCE and CLP move a hard negative and its own query.

Four embeddings live on the unit circle as free 2-D vectors: a query q, its positive p, a hard
negative n of q, and n's own query q* (a query for which n IS relevant). Everything is computed
with the real loss (``clp_utils.losses.clp_loss`` at batch size 1, one negative, one query per
negative) and torch autograd; a step is projected gradient descent on the circle
(x <- normalize(x - lr * grad)). Nothing here is drawn by hand.

The toy has no shared encoder: each vector moves only by its own gradient, so under InfoNCE
q* never moves (it is not in the loss). In a real model q*, q and n share parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from clp_utils.losses import clp_loss

NAMES = ("query", "pos", "neg", "neg_query")


@dataclass(frozen=True)
class Scene:
    """Angles (degrees) of q, p, n and q* on the unit circle.

    The default is the case CLP is about: n is hard for q (closer to q than p is) and n's own
    query q* resembles q, so pushing n away from q also pushes it away from q*.
    """

    query: float = 0.0
    pos: float = -35.0
    neg: float = 20.0
    neg_query: float = 10.0

    def angles(self) -> dict[str, float]:
        """The four angles by name."""
        return {name: getattr(self, name) for name in NAMES}


def unit(deg: float | Tensor) -> Tensor:
    """The unit vector(s) at ``deg`` degrees, float64, shape (..., 2)."""
    rad = torch.deg2rad(torch.as_tensor(deg, dtype=torch.float64))
    return torch.stack([torch.cos(rad), torch.sin(rad)], dim=-1)


def angle(vec: Tensor) -> Tensor:
    """Angle in degrees of 2-D vector(s) (..., 2)."""
    return torch.rad2deg(torch.atan2(vec[..., 1], vec[..., 0]))


def toy_loss(vecs: dict[str, Tensor], lam: float, tau: float) -> Tensor:
    """CLP total on one (q, p, n, q*) example; ``lam = 0`` is InfoNCE."""
    out = clp_loss(
        vecs["query"][None],
        vecs["pos"][None],
        vecs["neg"][None, None],
        vecs["neg_query"][None, None, None],
        lam=lam,
        tau=tau,
        in_batch=False,
    )
    return out.total


def negative_field(
    scene: Scene, lam: float, tau: float, degrees: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Descent direction on the negative, placed at each of ``degrees``, the others fixed.

    Returns:
        points (N, 2) on the circle, descent vectors -dL/dn (N, 2), and their signed tangential
        component (N,) in the counter-clockwise direction (positive: n turns counter-clockwise).
    """
    points = unit(degrees).requires_grad_()
    fixed = {name: unit(deg) for name, deg in scene.angles().items() if name != "neg"}
    total = sum(toy_loss({**fixed, "neg": points[i]}, lam, tau) for i in range(len(points)))
    (grad,) = torch.autograd.grad(total, points)
    descent = -grad.detach()
    tangent = torch.stack([-points[:, 1], points[:, 0]], dim=1).detach()
    return points.detach(), descent, (descent * tangent).sum(1)


def equilibrium_angle(scene: Scene, lam: float, tau: float, lo: float, hi: float) -> float:
    """Where the negative's tangential force vanishes between ``lo`` and ``hi`` degrees
    (bisection on the autograd force; ``nan`` when it does not change sign there)."""

    def force(deg: float) -> float:
        return negative_field(scene, lam, tau, torch.tensor([deg]))[2].item()

    f_lo, f_hi = force(lo), force(hi)
    if f_lo == 0 or f_lo * f_hi > 0:
        return lo if f_lo == 0 else math.nan
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        f_mid = force(mid)
        if f_lo * f_mid <= 0:
            hi = mid
        else:
            lo, f_lo = mid, f_mid
    return 0.5 * (lo + hi)


@dataclass
class Trajectory:
    """Angles (degrees) of each embedding after each step, and the loss before each step."""

    angles: dict[str, Tensor]  # name -> (steps + 1,)
    loss: Tensor  # (steps,)

    def final_cos(self, a: str, b: str) -> float:
        """Cosine between embeddings ``a`` and ``b`` after the last step."""
        return math.cos(math.radians(self.angles[a][-1].item() - self.angles[b][-1].item()))


def simulate(
    scene: Scene,
    lam: float,
    tau: float = 0.02,
    steps: int = 200,
    lr: float = 0.002,
    movable: tuple[str, ...] = NAMES,
) -> Trajectory:
    """Projected gradient descent on the circle under CLP (``lam = 0``: InfoNCE).

    Only the embeddings named in ``movable`` move; pinning q and p stands for a query and
    positive held in place by the rest of the training data.
    """
    vecs = {name: unit(deg).requires_grad_(name in movable) for name, deg in scene.angles().items()}
    history = {name: [angle(v.detach()).item()] for name, v in vecs.items()}
    losses = []
    for _ in range(steps):
        loss = toy_loss(vecs, lam, tau)
        moving = [name for name in vecs if name in movable]
        grads = torch.autograd.grad(loss, [vecs[name] for name in moving], allow_unused=True)
        losses.append(loss.item())
        with torch.no_grad():
            for name, g in zip(moving, grads, strict=True):
                if g is not None:
                    vecs[name].copy_(torch.nn.functional.normalize(vecs[name] - lr * g, dim=-1))
            for name, v in vecs.items():
                history[name].append(angle(v).item())
    return Trajectory({k: torch.tensor(v) for k, v in history.items()}, torch.tensor(losses))


def lambda_sweep(
    scene: Scene,
    lams: list[float],
    taus: list[float],
    steps: int = 200,
    lr: float = 0.002,
    movable: tuple[str, ...] = NAMES,
) -> list[dict[str, float]]:
    """For each (tau, lambda): where the trajectory ends, as cosines that retrieval cares about.

    ``margin`` = cos(q, p) - cos(q, n) (q's retrieval: higher is better);
    ``neg_to_its_query`` = cos(n, q*) (n stays retrievable for q*: higher is better).
    """
    rows = []
    for tau in taus:
        for lam in lams:
            traj = simulate(scene, lam, tau, steps, lr, movable)
            rows.append(
                {
                    "tau": tau,
                    "lambda": lam,
                    "margin": traj.final_cos("query", "pos") - traj.final_cos("query", "neg"),
                    "neg_to_its_query": traj.final_cos("neg", "neg_query"),
                    "final_loss": traj.loss[-1].item(),
                }
            )
    return rows


def analytic_negative_grad(
    query: Tensor,
    pos: Tensor,
    negs: Tensor,
    neg_queries: Tensor,
    lam: float,
    tau: float,
    in_batch: bool = True,
) -> Tensor:
    """dL/dn of CLP (``"paper"`` variant, every slot valid) from the derived closed form.

    With s = cos, pi = the softmax of a query's logits s/tau, N = B*k*m penalty slots::

        dL/dn = [ (1-lam)/(B*tau) * sum_{i sees n} pi_{i,n} (q_i^ - s_{i,n} n^)
                  - lam/N * sum_r (q*_r^ - cos(n, q*_r) n^) ] / |n|

    (^ = unit vector). The notebook and the tests compare it with autograd.
    """
    f = torch.nn.functional
    b, k, d = negs.shape
    qh, ph, nh = f.normalize(query, dim=-1), f.normalize(pos, dim=-1), f.normalize(negs, dim=-1)
    if in_batch:
        # Every query sees every negative: logits (B, B + B*k), negatives i'-major after positives.
        s = qh @ torch.cat([ph, nh.reshape(b * k, d)]).T
        pi = torch.softmax(s / tau, dim=1)[:, b:].reshape(b, b, k)
        s_n = s[:, b:].reshape(b, b, k)
        push = torch.einsum("ibk,id->bkd", pi, qh) - (pi * s_n).sum(0)[..., None] * nh
    else:
        s_n = torch.einsum("bd,bkd->bk", qh, nh)
        logits = torch.cat([(qh * ph).sum(-1, keepdim=True), s_n], dim=1) / tau
        pi = torch.softmax(logits, dim=1)[:, 1:]
        push = pi[..., None] * (qh[:, None] - s_n[..., None] * nh)
    qs = f.normalize(neg_queries, dim=-1)
    c = torch.einsum("bkd,bkmd->bkm", nh, qs)
    pull = (qs - c[..., None] * nh[:, :, None]).sum(2)
    m = neg_queries.shape[2]
    grad = (1 - lam) / (b * tau) * push - lam / (b * k * m) * pull
    return grad / negs.norm(dim=-1, keepdim=True)
