"""Project hygiene: parameters cells, environment parity, JupyterLab finds the chapters."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest
import yaml

from clp_utils.base.paths import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def requirement_names(lines):
    return {re.split(r"[=<>~!]", line.strip())[0].lower().replace("_", "-")
            for line in lines if line.strip() and not line.strip().startswith(("#", "-"))}


def test_notebooks_have_one_parameters_cell():
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata["kernelspec"]["name"] == "python3", path.name
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "profile" in tagged[0].source, f"{path.name}: parameters cell"


def test_environment_yml_matches_requirements():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    reqs = [line.strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert sorted(p for p in pip_section if not p.startswith("-")) == sorted(reqs)
    assert "torch==2.13.0" in reqs  # an unpinned torch pulls a multi-GB CUDA build


def test_requirements_are_the_installed_versions():
    from importlib.metadata import version

    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, pinned = line.split("==")
            assert version(name).split("+")[0] == pinned.strip(), name


def test_ruff_is_configured_and_enforces_the_line_length():
    import tomllib

    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert config["line-length"] == 100
    lint = config["lint"]
    assert "E" in lint["select"] and "E501" not in lint.get("ignore", [])
    assert not any("E501" in rules for rules in lint.get("per-file-ignores", {}).values())
    assert "ruff" in requirement_names((REPO_ROOT / "requirements.txt").read_text().splitlines())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyter_lab_serves_the_notebooks(tmp_path):
    port, token = free_port(), "clp-test-token"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO_ROOT / 'notebooks'}",
           "--ServerApp.open_browser=False", "--allow-root"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=tmp_path,
                            env={**__import__("os").environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)})
    try:
        url = f"http://127.0.0.1:{port}/api/contents?token={token}"
        deadline, listing = time.time() + 90, None
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    listing = json.loads(resp.read())
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(proc.stdout.read().decode()[-2000:])
                time.sleep(1)
        assert listing is not None, "jupyter lab did not answer"
        names = {item["name"] for item in listing["content"]}
        assert {p.name for p in NOTEBOOKS} <= names
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}",
                                    timeout=10) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_nothing_a_clone_reopens_is_ignored_by_git():
    # figures/results/ is what a clone reads instead of training (runstore.committed_run);
    # an ignore pattern such as "results/" once matched it too, so it never reached a clone.
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    git = ["git", "-C", str(REPO_ROOT)]
    ignored = subprocess.run(git + ["ls-files", "--others", "--ignored", "--exclude-standard",
                                    "--directory", "figures", "notebooks"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert [p for p in ignored if not p.startswith(("figures/smoke/", "figures/quick/"))
            and not (p.startswith("notebooks/") and p.endswith(".png"))
            and ".ipynb_checkpoints" not in p] == []
    tracked = subprocess.run(git + ["ls-files", "figures/results/runs"],
                             capture_output=True, text=True, check=True).stdout.split()
    runs = {p.split("/")[3] for p in tracked}
    assert runs and runs == {d.name for d in (REPO_ROOT / "figures/results/runs").iterdir()}
