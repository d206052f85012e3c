"""The install is pinned in one place and mirrored in environment.yml; the repo layout promises hold."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(text: str) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2) for m in re.finditer(r"^[\s-]*([A-Za-z0-9_.\-]+)==([^\s;#]+)", text, re.M)}


def test_environment_yml_agrees_with_constraints():
    env = _pins((ROOT / "environment.yml").read_text())
    cons = _pins((ROOT / "constraints.txt").read_text())
    assert env, "environment.yml pins nothing"
    for name, ver in env.items():
        assert cons.get(name) == ver, f"{name}: environment.yml has {ver}, constraints.txt has {cons.get(name)}"


def test_torch_pinned_to_the_local_cpu_wheel():
    assert _pins((ROOT / "constraints.txt").read_text())["torch"] == "2.13.0"


def test_pyproject_keeps_a_torch_range_for_users_elsewhere():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"torch>=[\d.]+,<\d+"', text)


def test_runs_folder_kept_but_ignored():
    assert (ROOT / "runs" / ".gitkeep").exists()
    assert "runs/*" in (ROOT / ".gitignore").read_text()


def test_ci_runs_the_readme_test_command():
    assert re.search(r"^make test\b", (ROOT / ".ci" / "run").read_text(), re.M)
    readme = (ROOT / "README.md").read_text()
    assert "make smoke" in readme and "make test" in readme


def test_the_readme_package_map_names_every_module_and_tool():
    """The README's map of rlhf_nb/ is the table of contents: a new module or tool that it does not name fails here."""
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("rlhf_nb/ "):]
    block = block[: block.index("```")]
    pkg = ROOT / "rlhf_nb"
    names = [p.stem for p in pkg.glob("*.py") if p.stem != "__init__"]
    names += [p.stem for p in (pkg / "tools").glob("*.py") if p.stem != "__init__"]
    names += [p.stem for p in (pkg / "course").glob("*.py") if p.stem != "__init__"]
    missing = [n for n in names if not re.search(rf"\b{re.escape(n)}\b", block)]
    assert not missing, f"the README's package map does not name: {missing}"
