"""Sphinx configuration of the study's book (``make book``; see ``clp_utils/machinery/book.py``).

``clp_utils.machinery.book`` copies this folder next to the pages it generates from the executed
chapters and runs Sphinx there, so every path below is relative to that staged copy.
Nothing here reaches the network: notebooks are never re-executed and MathJax is served
from ``_static/mathjax`` (copied from the ``jupyter-server-mathjax`` package).
"""

project = "CLP study"
author = "the CLP study"
extensions = ["myst_nb"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# Render the executed notebooks as they are: running them is `make study`'s job.
nb_execution_mode = "off"
nb_merge_streams = True  # one output block per cell, not one per flush of stdout
nb_ipywidgets_js = {}  # no widget JavaScript from a CDN (progress widgets are stripped anyway)
nb_code_prompt_show = "Show code"
nb_code_prompt_hide = "Hide code"
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "attrs_block"]
myst_heading_anchors = 3

html_theme = "sphinx_book_theme"
html_title = "CLP study"
html_static_path = ["_static"]
html_css_files = ["book.css"]
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": False,  # it would point at the _sources copies, which are not kept
    "use_fullscreen_button": True,
    "navigation_with_keys": False,
}
# MathJax 2 from _static (offline); MyST marks each page "ignore" and its math "process".
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {"tex2jax": {"processClass": "tex2jax_process|mathjax_process|math|output_area",
                               "ignoreClass": "tex2jax_ignore|mathjax_ignore"},
                   # the package ships the STIX web fonts only (as Jupyter's classic notebook)
                   "HTML-CSS": {"availableFonts": [], "webFont": "STIX-Web", "imageFont": None,
                                "preferredFont": None}}
