"""Every `python -m rlhf_nb.tools.<tool>` keeps the trainer's contract on bad input: an unknown flag or a bad value
is one line on stderr and exit 2, before any work (no traceback, nothing written). Each parses its flags from its
config dataclass (rlhf_nb.cli.cli_from_dataclass), spelled --field_name."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOOLS_DIR = Path(__file__).resolve().parents[1] / "rlhf_nb" / "tools"
TOOLS = sorted(p.stem for p in TOOLS_DIR.glob("*.py") if p.stem != "__init__")
# one bad value per tool, with the flag its one line must name
BAD_VALUES = {
    "base_model": (["--steps", "-5"], "--steps"),
    "bench": (["--budget_s", "-1"], "--budget_s"),
    "bench_dpo": (["--steps", "0"], "--steps"),
    "bench_report": (["--json", "/nonexistent/benchmarks.json"], "--json"),
    "bench_speed": (["--json_out", "/nonexistent/speed.json"], "--json_out"),
    "bench_trl": (["--batch_size", "0"], "--batch_size"),
    "build_proxies": (["--out_root", "/etc/hostname"], "--out_root"),
    "build_reward_model": (["--temperature", "nan"], "--temperature"),
    "capstone_sweep": (["--jobs", "0"], "--jobs"),
    "check_install": (["extra"], "unrecognized"),
    "dpo_vs_ppo": (["--out", "/nonexistent/x.json"], "--out"),
    "notebooks": (["99_nope"], "99_nope"),
    "overopt_sweep": (["--steps", "-1"], "--steps"),
    "smoke": (["--out", "/etc/hostname"], "--out"),
}


def _run(tool: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"rlhf_nb.tools.{tool}", *args], capture_output=True, text=True,
                          timeout=120, cwd=TOOLS_DIR.parents[1])


def test_every_tool_has_a_bad_value_case():
    assert sorted(BAD_VALUES) == TOOLS


@pytest.mark.parametrize("tool", TOOLS)
def test_an_unknown_flag_is_one_line_and_exit_2(tool):
    p = _run(tool, ["--no_such_flag", "1"])
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "--no_such_flag" in lines[0], p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("tool", TOOLS)
def test_a_bad_value_is_one_line_naming_the_flag_and_exit_2(tool):
    args, named = BAD_VALUES[tool]
    p = _run(tool, args)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and named in lines[0], (p.returncode, p.stderr)


@pytest.mark.parametrize("tool", TOOLS)
def test_help_lists_the_flags_and_exits_0(tool):
    p = _run(tool, ["--help"])
    assert p.returncode == 0 and p.stdout.startswith("usage: ") and p.stderr == "", p.stderr
    assert "Traceback" not in p.stdout


def test_no_tool_builds_its_parser_by_hand_or_spells_a_flag_with_a_hyphen():
    import re

    for path in TOOLS_DIR.glob("*.py"):
        text = path.read_text()
        assert "add_argument" not in text and "OneLineParser(" not in text, path.name
        assert not re.findall(r"[\"'\s]--[a-z]+-[a-z]", text.replace("--no-print-directory", "")), path.name


BUILDERS = {  # the tools whose default output is a committed asset under rlhf_nb/assets, and the flag naming it
    "base_model": "--out", "build_reward_model": "--out_dir", "build_proxies": "--out_root",
    "overopt_sweep": "--out", "capstone_sweep": "--out", "dpo_vs_ppo": "--out",
}


def _assets_state() -> dict[str, int]:
    assets = TOOLS_DIR.parent / "assets"
    return {str(p.relative_to(assets)): p.stat().st_mtime_ns for p in assets.rglob("*")}


@pytest.mark.parametrize("tool", sorted(BUILDERS))
def test_a_builder_never_writes_over_a_committed_asset_without_overwrite(tool):
    before = _assets_state()
    p = _run(tool, [])  # its defaults: the committed asset
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, (p.returncode, p.stderr)
    assert BUILDERS[tool] in lines[0] and "committed asset" in lines[0] and "--overwrite" in lines[0], lines[0]
    assert _assets_state() == before  # nothing touched


def test_make_passes_overwrite_to_every_builder():
    makefile = (TOOLS_DIR.parents[1] / "Makefile").read_text()
    for tool in BUILDERS:
        calls = [line for line in makefile.splitlines() if f"rlhf_nb.tools.{tool}" in line]
        assert calls and all("--overwrite" in line for line in calls), (tool, calls)
