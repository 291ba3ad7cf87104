"""Many runs at once on one GPU: ``train_parallel`` (``make study PROFILE=full PARALLEL=4``).

A MiniLM run leaves most of an H100 idle (per-step overhead, not arithmetic, sets its time),
so several processes share the device before the chapters read every run back.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from clp_utils.base.io import slug, write_json
from clp_utils.base.paths import results_dir
from clp_utils.profiles import cells, get_profile
from clp_utils.train_config import TrainConfig


def train_parallel(profile: str, workers: int, rows: Iterable[str] | None = None,
                   log_dir: Path | None = None) -> list[str]:
    """Train every run of ``profile`` (optionally only ``rows``), ``workers`` processes at a
    time: ``python -m clp_utils.training --config <run>.json``, output in ``<run>.log`` under
    ``log_dir`` (a finished run is reused; the shared caches are written by atomic renames).
    Returns the runs' labels; raises naming each failed run and its log."""
    wanted = set(rows) if rows is not None else None
    configs = [c.config for c in cells(get_profile(profile).study)
               if c.config is not None and (wanted is None or c.row in wanted)]
    log_dir = Path(log_dir or results_dir() / "parallel" / profile)
    log_dir.mkdir(parents=True, exist_ok=True)
    ended = itertools.count(1)

    def run(i: int, cfg: TrainConfig) -> tuple[str, Path, int]:
        name = f"{i:03d}-{slug(cfg.label, keep='')}-s{cfg.seed}"
        write_json(log_dir / f"{name}.json", asdict(cfg))
        print(f"[{profile}] started {name}", flush=True)
        with open(log_dir / f"{name}.log", "w") as log:
            code = subprocess.run([sys.executable, "-m", "clp_utils.training", "--config",
                                   str(log_dir / f"{name}.json")],
                                  stdout=log, stderr=subprocess.STDOUT).returncode
        print(f"[{profile}] {'finished' if code == 0 else 'FAILED'} {name} ({next(ended)} of "
              f"{len(configs)} ended)", flush=True)
        return cfg.label, log_dir / f"{name}.log", code

    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(run, range(len(configs)), configs))
    if failed := [(label, path) for label, path, code in outcomes if code]:
        raise RuntimeError("runs failed: "
                           + "; ".join(f"{label} (log: {path})" for label, path in failed))
    return [label for label, _, _ in outcomes]
