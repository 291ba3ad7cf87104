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
from dataclasses import dataclass, replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy import optimize
from torch import Tensor

from clp_utils.losses import clp_loss

NAMES = ("query", "pos", "neg", "neg_query")
COLOURS = {"query": "tab:blue", "pos": "tab:green", "neg": "tab:red", "neg_query": "tab:purple"}
MARKS = {"q": "query", "p": "pos", "q*": "neg_query"}  # the fixed points a field figure marks


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
    #: Further negatives of q, pinned, each with an own query 5 degrees from it: with k
    #: negatives the penalty's mean over k slots gives each one a pull of lambda / k.
    others: tuple[float, ...] = ()

    def angles(self) -> dict[str, float]:
        """The four angles by name."""
        return {name: getattr(self, name) for name in NAMES}

    def with_negatives(self, k: int) -> Scene:
        """This scene with ``k`` negatives in all (the hard one and ``k - 1`` easier ones,
        spread over the far side of the circle)."""
        spread = tuple(float(a) for a in np.linspace(70.0, 290.0, max(k - 1, 0)))
        return replace(self, others=spread)


def unit(deg: float | Tensor) -> Tensor:
    """The unit vector(s) at ``deg`` degrees, float64, shape (..., 2)."""
    rad = torch.deg2rad(torch.as_tensor(deg, dtype=torch.float64))
    return torch.stack([torch.cos(rad), torch.sin(rad)], dim=-1)


def angle(vec: Tensor) -> Tensor:
    """Angle in degrees of 2-D vector(s) (..., 2)."""
    return torch.rad2deg(torch.atan2(vec[..., 1], vec[..., 0]))


def toy_loss(vecs: dict[str, Tensor], lam: float, tau: float,
             others: tuple[float, ...] = ()) -> Tensor:
    """CLP total on one (q, p, n, q*) example; ``lam = 0`` is InfoNCE. ``others``: the
    angles of further pinned negatives, each with its own query 5 degrees away."""
    negs = torch.stack([vecs["neg"], *(unit(a) for a in others)])[None]
    own = torch.stack([vecs["neg_query"], *(unit(a + 5.0) for a in others)])[None, :, None]
    return clp_loss(vecs["query"][None], vecs["pos"][None], negs, own, lam=lam, tau=tau,
                    in_batch=False).total


def negative_field(scene: Scene, lam: float, tau: float,
                   degrees: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Descent direction on the negative, placed at each of ``degrees``, the others fixed:
    points (N, 2) on the circle, descent vectors -dL/dn (N, 2) and their signed tangential
    component (N,) (positive: n turns counter-clockwise)."""
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

    if force(lo) * force(hi) > 0:  # the same sign at both ends (a bad lambda still raises)
        return math.nan
    return optimize.bisect(force, lo, hi, xtol=1e-12)


@dataclass
class Trajectory:
    """Angles (degrees) of each embedding after each step, and the loss before each step."""

    angles: dict[str, Tensor]  # name -> (steps + 1,)
    loss: Tensor  # (steps,)

    def final_cos(self, a: str, b: str) -> float:
        """Cosine between embeddings ``a`` and ``b`` after the last step."""
        return math.cos(math.radians(self.angles[a][-1].item() - self.angles[b][-1].item()))


def simulate(scene: Scene, lam: float, tau: float = 0.02, steps: int = 200, lr: float = 0.002,
             movable: tuple[str, ...] = NAMES) -> Trajectory:
    """Projected gradient descent on the circle under CLP (``lam = 0``: InfoNCE).

    Only the embeddings named in ``movable`` move; pinning q and p stands for a query and
    positive held in place by the rest of the training data.
    """
    vecs = {name: unit(deg).requires_grad_(name in movable) for name, deg in scene.angles().items()}
    history = {name: [angle(v.detach()).item()] for name, v in vecs.items()}
    losses = []
    for _ in range(steps):
        loss = toy_loss(vecs, lam, tau, scene.others)
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


def lambda_sweep(scene: Scene, lams: list[float], taus: list[float], steps: int = 200,
                 lr: float = 0.002, movable: tuple[str, ...] = NAMES) -> list[dict[str, float]]:
    """For each (tau, lambda): where the trajectory ends, as cosines that retrieval cares about.

    ``margin`` = cos(q, p) - cos(q, n) (q's retrieval: higher is better);
    ``neg_to_its_query`` = cos(n, q*) (n stays retrievable for q*: higher is better).
    """
    rows = []
    for tau in taus:
        for lam in lams:
            traj = simulate(scene, lam, tau, steps, lr, movable)
            rows.append({"tau": tau, "lambda": lam,
                         "margin": traj.final_cos("query", "pos") - traj.final_cos("query", "neg"),
                         "neg_to_its_query": traj.final_cos("neg", "neg_query"),
                         "final_loss": traj.loss[-1].item()})
    return rows


def analytic_negative_grad(query: Tensor, pos: Tensor, negs: Tensor, neg_queries: Tensor,
                           lam: float, tau: float, in_batch: bool = True) -> Tensor:
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


# --------------------------------------------------------------------------- the explorer


def _angle_lines(ax, trajectories: dict[str, Trajectory], labels: dict[str, str]) -> None:
    """Each embedding's angle over the steps, InfoNCE dashed, CLP solid."""
    for name, traj in trajectories.items():
        for emb, label in labels.items():
            ax.plot(traj.angles[emb], "--" if name == "InfoNCE" else "-", color=COLOURS[emb],
                    label=f"{label} · {name}")


def trajectory_figure(lam: float = 0.1, tau: float = 0.02, negatives: int = 1,
                      steps: int = 400, lr: float = 0.002, scene: Scene = Scene()) -> Figure:
    """How the hard negative n and its own query q* move (q and p pinned), under InfoNCE
    (dashed) and CLP (solid) at ``lam``, ``tau`` and ``negatives`` negatives per query."""
    scene = scene.with_negatives(negatives)
    fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
    _angle_lines(ax, {name: simulate(scene, weight, tau, steps, lr, movable=("neg", "neg_query"))
                      for name, weight in (("InfoNCE", 0.0), (f"CLP λ={lam:.3g}", lam))},
                 {"neg": "n", "neg_query": "q*"})
    ax.axhline(scene.query, color=COLOURS["query"], lw=0.8, ls=":", label="q (pinned)")
    ax.set(xlabel="step", ylabel="angle (degrees)",
           title=f"n and its own query q* (τ={tau:.3g}, {negatives} negative(s) per query)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def trajectory_explorer(steps: int = 400, lam: float = 0.1, tau: float = 0.02,
                        negatives: int = 1):
    """Sliders for lambda, tau and the number of negatives that redraw
    ``trajectory_figure`` below them (ipywidgets; a live JupyterLab kernel only: the figure
    at the starting values is the chapter's own, drawn above the sliders). Returns
    ``(widget, draw)``: ``draw(lam, tau, negatives)`` is what a slider's change calls,
    returned so a test can drive it."""
    import ipywidgets as widgets  # only where a live kernel wants sliders
    from IPython.display import display

    out = widgets.Output()
    sliders = dict(
        lam=widgets.FloatSlider(value=lam, min=0.0, max=0.9, step=0.05, description="λ"),
        tau=widgets.FloatSlider(value=tau, min=0.01, max=0.2, step=0.01, description="τ"),
        negatives=widgets.IntSlider(value=negatives, min=1, max=8, description="negatives"))

    def draw(lam: float, tau: float, negatives: int) -> Figure:
        fig = trajectory_figure(lam, tau, negatives, steps)
        with out:
            out.clear_output(wait=True)
            display(fig)
        plt.close(fig)
        box.figure = fig  # the last figure drawn (what the output area shows)
        return fig

    for slider in sliders.values():
        slider.observe(lambda _: draw(**{n: s.value for n, s in sliders.items()}), names="value")
    note = widgets.HTML("<i>Move a slider: the figure below redraws with the new values.</i>")
    box = widgets.VBox([note, *sliders.values(), out])
    return box, draw


# --------------------------------------------------------------------------- the figures


def field_figure(scene: Scene, lam: float, tau: float, points: int = 120) -> Figure:
    """Where gradient descent sends the negative from every point of the circle (q, p, q*
    held), under InfoNCE and under CLP: two circles of arrows, and the signed speed along
    the circle on a log-like axis."""
    degrees = torch.linspace(-180, 180, points + 1)[:-1]
    arrow_degrees = torch.arange(-180, 180, 10.0)
    shown = {"InfoNCE": 0.0, f"CLP λ={lam:g}": lam}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.8), gridspec_kw={"width_ratios": [1, 1, 1.4]},
                             layout="constrained")
    for ax, (name, weight) in zip(axes[:2], shown.items(), strict=True):
        pts, desc, _ = negative_field(scene, weight, tau, arrow_degrees)
        speed = desc.norm(dim=1)
        moving = speed > 1e-3  # below this a step of lr 0.002 moves n by less than 1e-5 rad
        arrows = desc / speed.clamp_min(1e-12)[:, None]
        ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="0.7"))
        ax.plot(pts[~moving, 0], pts[~moving, 1], ".", color="0.6", ms=4)
        qv = ax.quiver(pts[moving, 0], pts[moving, 1], arrows[moving, 0], arrows[moving, 1],
                       np.log10(speed[moving].numpy()), cmap="viridis", clim=(-3, 1.5),
                       scale=10, width=0.01, pivot="tail")
        for label, attr in MARKS.items():
            x, y = unit(getattr(scene, attr)).tolist()
            ax.plot(x, y, "o", color=COLOURS[attr], ms=10)
            ax.annotate(label, (0.8 * x, 0.8 * y), color=COLOURS[attr], ha="center",
                        va="center", fontsize=13)
        ax.set(aspect="equal", xlim=(-1.45, 1.45), ylim=(-1.45, 1.45), xticks=[], yticks=[],
               title=f"{name}: where n would move")
    fig.colorbar(qv, ax=axes[:2], orientation="horizontal", shrink=0.6, aspect=30, pad=0.02,
                 label="speed of n, log10 (grey dots: too slow to matter, < 0.001)")
    for name, weight in shown.items():
        axes[2].plot(degrees, negative_field(scene, weight, tau, degrees)[2], label=name)
    axes[2].set_yscale("symlog", linthresh=1e-3)
    axes[2].axhline(0, color="0.5", lw=0.8)
    for label, attr in MARKS.items():
        axes[2].axvline(getattr(scene, attr), color=COLOURS[attr], ls=":", label=f"{label}")
    axes[2].set(xlabel="angle of the negative n (degrees)",
                ylabel="speed along the circle (+: counter-clockwise)",
                title=f"Speed of n along the circle (τ={tau:g})\nlinear near 0, log beyond")
    axes[2].legend(loc="lower left")
    return fig


def trajectories_figure(runs: dict[tuple[str, str], Trajectory], lam: float,
                        tau: float) -> Figure:
    """Angles of q, p, n and q* over the steps, InfoNCE (dashed) and CLP (solid), with q and
    p pinned (left) and everything free (right). ``runs``: (setting, loss) -> trajectory."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5), sharey=True, layout="constrained")
    settings = list(dict.fromkeys(s for s, _ in runs))
    for ax, setting in zip(axes, settings, strict=True):
        _angle_lines(ax, {n: t for (s, n), t in runs.items() if s == setting},
                     {emb: emb for emb in COLOURS})
        ax.set(title=f"{setting} (τ={tau:g}, λ={lam:g})", xlabel="step",
               ylabel="angle (degrees)")
    axes[1].legend(fontsize="x-small", ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def tradeoff_figure(sweep, steps: int) -> Figure:
    """The lambda trade-off of ``lambda_sweep``: margin and cos(n, q*) against lambda (left)
    and against each other (right), one colour per temperature."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for (t, part), colour in zip(sweep.groupby("tau"), ("tab:blue", "tab:orange"), strict=True):
        axes[0].plot(part["lambda"], part["margin"], "o-", color=colour,
                     label=f"margin cos(q,p)-cos(q,n), τ={t}")
        axes[0].plot(part["lambda"], part["neg_to_its_query"], "s--", color=colour,
                     label=f"cos(n,q*), τ={t}")
        axes[1].plot(part["margin"], part["neg_to_its_query"], "o-", color=colour, label=f"τ={t}")
        for weight, x, y in zip(part["lambda"], part["margin"], part["neg_to_its_query"],
                                strict=True):
            axes[1].annotate(f"{weight:g}", (x, y), fontsize=8, xytext=(3, 3),
                             textcoords="offset points")
    axes[0].set(xlabel="λ", ylabel="cosine", title=f"After {steps} steps (q, p pinned)")
    axes[0].legend(fontsize="small")
    axes[1].set(xlabel="margin for q (higher: q retrieves p over n)",
                ylabel="cos(n, q*) (higher: n stays near its query)",
                title="The trade-off curve (labels: λ)")
    axes[1].legend()
    return fig


def trajectory_summary(runs: dict[tuple[str, str], Trajectory]) -> pd.DataFrame:
    """Where each trajectory ends: the cosines retrieval cares about and the final angles."""
    return pd.DataFrame([
        {"setting": s, "loss": n, "cos(q,p)": t.final_cos("query", "pos"),
         "cos(q,n)": t.final_cos("query", "neg"), "cos(n,q*)": t.final_cos("neg", "neg_query"),
         "angle n": t.angles["neg"][-1].item(), "angle q*": t.angles["neg_query"][-1].item()}
        for (s, n), t in runs.items()]).set_index(["setting", "loss"])
