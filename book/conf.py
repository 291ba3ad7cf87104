"""Sphinx configuration of the study's book (``make book``; see ``clp_utils/machinery/book.py``).

``clp_utils.machinery.book`` copies this folder next to the chapters it prepares and runs Sphinx
there, so every path below is relative to that staged copy; it fills in the pages' generated
parts (``{{ ... }}`` in ``index.md``, ``teacher.md``, ``figures.md``) through
``myst_substitutions``. Nothing here reaches the network: notebooks are never re-executed and
MathJax is served from the ``jupyter-server-mathjax`` package, copied into ``_static``.
"""

from importlib import resources

project = "CLP study"
author = "the CLP study"
extensions = ["myst_nb"]
# (also what is not copied from the static folders: MathJax's translations but English)
exclude_patterns = ["_build", "**.ipynb_checkpoints",
                    "localization/[!e]*", "localization/e[!n]*"]

# Render the executed notebooks as they are: running them is `make study`'s job.
nb_execution_mode = "off"
nb_merge_streams = True  # one output block per cell, a \r-redrawn line shown as its last redraw
nb_output_stderr = "remove"  # progress bars, warnings, library logs: the chapters print to stdout
nb_ipywidgets_js = {}  # no widget JavaScript from a CDN (progress widgets are stripped anyway)
nb_code_prompt_show = "Show code"
nb_code_prompt_hide = "Hide code"
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "attrs_block", "substitution"]
myst_substitutions: dict[str, str] = {}  # set by clp_utils.machinery.book
myst_heading_anchors = 3

html_theme = "sphinx_book_theme"
html_title = "CLP study"
html_static_path = ["_static", str(resources.files("jupyter_server_mathjax") / "static")]
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
mathjax_path = "MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {"tex2jax": {"processClass": "tex2jax_process|mathjax_process|math|output_area",
                               "ignoreClass": "tex2jax_ignore|mathjax_ignore"},
                   # the package ships the STIX web fonts only (as Jupyter's classic notebook)
                   "HTML-CSS": {"availableFonts": [], "webFont": "STIX-Web", "imageFont": None,
                                "preferredFont": None}}
