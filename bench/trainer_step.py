"""One cpu-recipe training step: sentence-transformers' trainer against the plain loop it replaced.

Baseline (named ``plain loop``): the study's former training loop, a plain PyTorch step on the
profile's ANCE + CLP row (``step_profile.profile_steps``: tokenise, forward and CLP loss,
backward, fused AdamW, the logged values' host sync), in the precision ``"auto"`` picks here.
Then the same row's groups train through ``SentenceTransformerTrainer`` exactly as
``clp_utils.training.train`` sets it up (dataset columns, collator, ``PassageIdBatchSampler``,
``StudyLog``, ``TrainingArguments``), timed from one step's end to the next (data loading,
collation, forward, backward, optimizer, logging: everything a step costs). Both in this
process, on the same machine; the first step of each is a warm-up.

Prints both medians and, last, ``trainer/loop step ratio=<ratio> target<=1.1``.

    .venv/bin/python bench/trainer_step.py [--profile cpu] [--steps 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from step_profile import profile_steps
from transformers import TrainerCallback

from clp_utils.base.precision import decide, training_attention
from clp_utils.batching import load_training_data, to_examples, training_records
from clp_utils.profiles import CLP
from clp_utils.study import config_of
from clp_utils.training import StudyLog, make_batches, prepare_model, study_loss, study_trainer


class StepClock(TrainerCallback):
    """perf_counter at every step's end."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def trainer_steps(config, examples, steps: int, device: str) -> float:
    """Median seconds between consecutive step ends of the study's trainer (first dropped)."""
    precision = decide(config.bf16, device)
    model, _ = prepare_model(config, device)
    ds, _ = load_training_data(config)
    loss = study_loss(model, config, 1)
    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        log = StudyLog(Path(tmp), model, loss, config, ds, model.max_seq_length, precision)
        trainer = study_trainer(model, config, examples, 1, loss, Path(tmp) / "checkpoints",
                                precision, steps + 2, [log, clock], device=device)
        trainer.args.save_strategy = "no"
        with training_attention(precision):
            trainer.train()
    gaps = [b - a for a, b in zip(clock.ends[:-1], clock.ends[1:], strict=True)]
    return statistics.median(gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = config_of(args.profile, CLP)
    examples, _ = to_examples(training_records(config), config.mining.num_negatives, 1)
    batches = make_batches(examples, config)[: args.steps + 1]
    loop = profile_steps(config, examples, batches, decide(config.bf16, device), device)
    step = trainer_steps(config, examples, args.steps, device)
    print(f"plain loop step {loop * 1000:.1f} ms; trainer step {step * 1000:.1f} ms "
          f"({decide(config.bf16, device).describe()})")
    print(f"trainer/loop step ratio={step / loop:.3f} target<=1.1")


if __name__ == "__main__":
    from clp_utils.base.paths import configure, from_environment

    configure(**from_environment())  # the command line's edge: $CLP_CACHE, $CLP_BF16
    main()
