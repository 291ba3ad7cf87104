"""The machinery that runs the study, apart from the study's ideas (nothing in the ideas
imports it).

A student reads the ideas in ``clp_utils/``; this subpackage is what makes them run on a
given machine and land as figures and a book: the cpu profile's design on validation
queries (``design``), a chapter's first cell (``chapter``), the chapters headless and the
README's results (``pipeline``, ``parallel``), the reproduction report (``report``), the
executed chapters and small results committed for a clone (``publish``) and the HTML book
(``book``). The plumbing under both is ``clp_utils.base``.
"""
