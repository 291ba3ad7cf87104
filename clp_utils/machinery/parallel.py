"""Many runs at once on one GPU: ``train_parallel`` (``make study PROFILE=full PARALLEL=4``).

A MiniLM run leaves most of an H100 idle (per-step overhead, not arithmetic, sets its time),
so several processes share the device. The pipeline calls this before the chapters, which
then read every run back from the run store.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from clp_utils.base.io import slug, write_json
from clp_utils.base.paths import results_dir
from clp_utils.profiles import cells, get_profile


def train_parallel(profile: str, workers: int, rows: Iterable[str] | None = None,
                   log_dir: Path | None = None, poll_seconds: float = 2.0) -> list[str]:
    """Train every run of ``profile`` with ``workers`` processes at a time (one per run).

    Meant for a GPU: a MiniLM run leaves most of an H100 idle (per-step overhead, not
    arithmetic, sets its time), so several processes share the device. Each process is
    ``python -m clp_utils.training --config <run>.json``; a finished run is reused, so the
    notebooks that follow read every run back. The caches the runs share (mined negatives,
    passage embeddings, the precision decision) are written with atomic renames: two
    processes computing the same entry write the same bytes, and a reader never sees half a
    file. Returns the labels of the runs; raises naming each failed run and its log.
    """
    wanted = set(rows) if rows is not None else None
    configs = [c.config for c in cells(get_profile(profile).study)
               if c.config is not None and (wanted is None or c.row in wanted)]
    log_dir = Path(log_dir or results_dir() / "parallel" / profile)
    log_dir.mkdir(parents=True, exist_ok=True)
    queue = list(enumerate(configs))
    running: dict[int, tuple[subprocess.Popen, Path, object]] = {}
    failed, done = [], []
    while queue or running:
        while queue and len(running) < workers:
            i, cfg = queue.pop(0)
            name = f"{i:03d}-{slug(cfg.label, keep='')}-s{cfg.seed}"
            write_json(log_dir / f"{name}.json", asdict(cfg))
            log = open(log_dir / f"{name}.log", "w")  # noqa: SIM115 (closed when the run ends)
            proc = subprocess.Popen([sys.executable, "-m", "clp_utils.training", "--config",
                                     str(log_dir / f"{name}.json")],
                                    stdout=log, stderr=subprocess.STDOUT)
            running[i] = (proc, log_dir / f"{name}.log", log)
            print(f"[{profile}] started {name}", flush=True)
        time.sleep(poll_seconds)
        for i, (proc, path, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[i]
            (done if proc.returncode == 0 else failed).append((configs[i].label, path))
            print(f"[{profile}] {'finished' if proc.returncode == 0 else 'FAILED'} {path.stem} "
                  f"({len(done)} done, {len(failed)} failed, {len(queue) + len(running)} to go)",
                  flush=True)
    if failed:
        raise RuntimeError("runs failed: "
                           + "; ".join(f"{label} (log: {path})" for label, path in failed))
    return [label for label, _ in done]
