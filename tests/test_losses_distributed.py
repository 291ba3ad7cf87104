"""CLP on 2 gloo CPU processes equals the single-process computation on the global batch.

Each rank holds half of a fixed global batch. Rank losses are shares of the global loss: their
mean is the global loss. DDP averages gradients over ranks, so a rank's gradient on its own
embeddings divided by the world size must equal the global loss's gradient on them, and a
DDP-wrapped encoder's (averaged) parameter gradient must equal the single-process one.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from clp_utils.losses import clp_loss

WORLD = 2
B, K, M, D, D_IN = 6, 2, 2, 5, 7  # global batch B, split 3 + 3
CONFIGS = [("paper", True), ("sum", True), ("paper", False), ("sum", False)]


def _global_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    # Rank 0 holds 5 valid slots of 12, rank 1 holds 9: a local mean would be wrong.
    mask = torch.tensor(
        [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [1, 1, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]]
    )
    return {
        "q": torch.randn(B, D, generator=g, dtype=torch.float64),
        "p": torch.randn(B, D, generator=g, dtype=torch.float64),
        "n": torch.randn(B, K, D, generator=g, dtype=torch.float64),
        "nq": torch.randn(B, K, M, D, generator=g, dtype=torch.float64),
        "mask": mask,
        # Raw inputs of a tiny linear encoder, one per text, for the DDP check.
        "x": torch.randn(B * (2 + K + K * M), D_IN, generator=g, dtype=torch.float64),
    }


def _encoder() -> nn.Module:
    torch.manual_seed(1)
    return nn.Linear(D_IN, D, dtype=torch.float64)


def _encode(model: nn.Module, x: torch.Tensor, b: int) -> tuple[torch.Tensor, ...]:
    e = model(x).reshape(2 + K + K * M, b, D)
    return e[0], e[1], e[2 : 2 + K].transpose(0, 1), e[2 + K :].transpose(0, 1).reshape(b, K, M, D)


def _rank_results(rank: int) -> dict:
    """This rank's losses and gradients (shares scaled as DDP would see them)."""
    full = _global_batch()
    part = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
    results = {}
    for variant, in_batch in CONFIGS:
        leaves = [full[key][part].clone().requires_grad_() for key in ("q", "p", "n", "nq")]
        out = clp_loss(
            *leaves, mask=full["mask"][part], variant=variant, in_batch=in_batch, gather=True
        )
        out.total.backward()
        parts = torch.stack([out.total, out.contrastive, out.penalty]).detach()
        dist.all_reduce(parts)
        results[(variant, in_batch)] = (parts / WORLD, [t.grad / WORLD for t in leaves])
    # A DDP-wrapped encoder: parameters' gradients averaged by DDP itself.
    model = nn.parallel.DistributedDataParallel(_encoder())
    x = full["x"].reshape(2 + K + K * M, B, D_IN)[:, part].reshape(-1, D_IN)
    q, p, n, nq = _encode(model, x, B // WORLD)
    clp_loss(q, p, n, nq, mask=full["mask"][part], variant="sum", gather=True).total.backward()
    results["ddp"] = [prm.grad.clone() for prm in model.parameters()]
    return results


def _worker(rank: int, port: int, out_dir: str) -> None:
    # A stuck collective must fail the test, not hang it: dump the stacks and exit.
    faulthandler.dump_traceback_later(120, exit=True)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=100))
    try:
        # Computed in a function so that the DDP module and the autograd graphs are freed
        # before the process group is destroyed: freeing them afterwards sometimes hung
        # the process at exit (2 runs in 12 here).
        results = _rank_results(rank)
        gc.collect()
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
    faulthandler.cancel_dump_traceback_later()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("gloo")
    mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize(("variant", "in_batch"), CONFIGS)
def test_loss_and_embedding_gradients_match_single_process(rank_results, variant, in_batch) -> None:
    full = _global_batch()
    leaves = [full[key].clone().requires_grad_() for key in ("q", "p", "n", "nq")]
    out = clp_loss(*leaves, mask=full["mask"], variant=variant, in_batch=in_batch)
    out.total.backward()
    expected = torch.stack([out.total, out.contrastive, out.penalty]).detach()
    for rank, results in enumerate(rank_results):
        parts, grads = results[(variant, in_batch)]
        assert torch.allclose(parts, expected, atol=1e-12), (rank, parts, expected)
        part = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
        for grad, leaf in zip(grads, leaves, strict=True):
            assert torch.allclose(grad, leaf.grad[part], atol=1e-12)


def test_ddp_parameter_gradients_match_single_process(rank_results) -> None:
    full = _global_batch()
    model = _encoder()
    q, p, n, nq = _encode(model, full["x"], B)
    clp_loss(q, p, n, nq, mask=full["mask"], variant="sum").total.backward()
    for results in rank_results:
        for got, prm in zip(results["ddp"], model.parameters(), strict=True):
            assert torch.allclose(got, prm.grad, atol=1e-12)


def test_in_batch_negatives_cross_ranks(rank_results) -> None:
    """Guard against a vacuous pass: the global in-batch loss differs from per-rank batches."""
    full = _global_batch()
    local = [
        clp_loss(*(full[key][s] for key in ("q", "p", "n", "nq")), mask=full["mask"][s]).total
        for s in (slice(0, B // 2), slice(B // 2, B))
    ]
    gathered = rank_results[0][("paper", True)][0][0]
    assert abs(torch.stack(local).mean().item() - gathered.item()) > 1e-3
