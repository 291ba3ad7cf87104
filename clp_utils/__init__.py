"""Shared code of the CLP study: one concept per module.

- ``data``: SQuADShifts (and Hindi/Persian) from the bigbench sdist, BEIR and MIRACL loaders,
  the leakage-proof train/test views.
- ``models``: load a model by name (PyPI-packaged, local folder, hub id).
- ``evaluation``: encoding, exact faiss search, trec_eval-exact metrics, significance tests.
- ``mining``: random and ANCE negatives, false-negative filters, the negatives' own queries.
- ``losses``: InfoNCE and the Contrastive Learning Penalty (CLP).
- ``moe``: trainable-parameter policies and Mixture-of-Experts intermediate layers.
- ``training``: one entry point that trains a configured run.
- ``plots``: the figures the notebooks share.
"""

__version__ = "0.1.0"
