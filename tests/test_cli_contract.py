"""One contract for every command of the kit: the trainers (`python -m rlhf_nb.train`, `python -m rlhf_nb.dpo`), each
`python -m rlhf_nb.tools.<tool>` and `scripts/train_trl.py`. An unknown flag or a bad value is one line on stderr and
exit 2, before any work (no traceback, nothing written); --help lists the flags and exits 0. Each parses its flags from
its config dataclass (rlhf_nb.cli.cli_from_dataclass, or build_parser underneath), spelled --field_name."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS_DIR = ROOT / "rlhf_nb" / "tools"
TOOLS = sorted(p.stem for p in TOOLS_DIR.glob("*.py") if p.stem != "__init__")
TRAINERS = {"rlhf_nb.train": [sys.executable, "-m", "rlhf_nb.train"],
            "rlhf_nb.dpo": [sys.executable, "-m", "rlhf_nb.dpo"],
            "scripts/train_trl.py": [sys.executable, str(ROOT / "scripts" / "train_trl.py")]}
COMMANDS = {**TRAINERS, **{f"tools.{t}": [sys.executable, "-m", f"rlhf_nb.tools.{t}"] for t in TOOLS}}
# one bad value per command, with the flag its one line must name
BAD_VALUES = {
    "rlhf_nb.train": (["--batch_size", "0"], "--batch_size"),
    "rlhf_nb.dpo": (["--beta", "nan"], "--beta"),
    "scripts/train_trl.py": (["--advantage", "gae"], "--advantage"),
    "tools.base_model": (["--steps", "-5"], "--steps"),
    "tools.bench": (["--budget_s", "-1"], "--budget_s"),
    "tools.bench_dpo": (["--steps", "0"], "--steps"),
    "tools.bench_report": (["--json", "/nonexistent/benchmarks.json"], "--json"),
    "tools.bench_speed": (["--json_out", "/nonexistent/speed.json"], "--json_out"),
    "tools.bench_trl": (["--batch_size", "0"], "--batch_size"),
    "tools.build_proxies": (["--out_root", "/etc/hostname"], "--out_root"),
    "tools.build_reward_model": (["--temperature", "nan"], "--temperature"),
    "tools.capstone_sweep": (["--jobs", "0"], "--jobs"),
    "tools.check_install": (["extra"], "unrecognized"),
    "tools.dpo_vs_ppo": (["--out", "/nonexistent/x.json"], "--out"),
    "tools.grpo_sweep": (["--jobs", "0"], "--jobs"),
    "tools.notebooks": (["99_nope"], "99_nope"),
    "tools.overopt_sweep": (["--steps", "-1"], "--steps"),
    "tools.smoke": (["--out", "/etc/hostname"], "--out"),
    "tools.smoke_seeds": (["--seeds", "-1"], "--seeds"),
    "tools.build_arith_model": (["--steps", "0"], "--steps"),
    "tools.verifiable_sweep": (["--jobs", "0"], "--jobs"),
}


def _run(command: str, args: list[str]) -> subprocess.CompletedProcess:
    argv = COMMANDS[command] if command in COMMANDS else [sys.executable, "-m", f"rlhf_nb.tools.{command}"]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_every_command_has_a_bad_value_case():
    assert sorted(BAD_VALUES) == sorted(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_unknown_flag_is_one_line_and_exit_2(command):
    p = _run(command, ["--no_such_flag", "1"])
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "--no_such_flag" in lines[0], p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bad_value_is_one_line_naming_the_flag_and_exit_2(command, tmp_path):
    args, named = BAD_VALUES[command]
    p = _run(command, [*args, *(["--out", str(tmp_path / "runs")] if command in TRAINERS else [])])
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and named in lines[0], (p.returncode, p.stderr)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_the_flags_and_exits_0(command):
    p = _run(command, ["--help"])
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
    "overopt_sweep": "--out", "capstone_sweep": "--out", "dpo_vs_ppo": "--out", "smoke_seeds": "--out",
    "build_arith_model": "--out", "verifiable_sweep": "--out",
    "grpo_sweep": "--out",
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
