"""One contract for every command of the kit: the trainers (`python -m rlhf_nb.train`, `python -m rlhf_nb.dpo`), each
`python -m rlhf_nb.tools.<tool>` and `scripts/train_trl.py`. An unknown flag or a bad value is one line on stderr and
exit 2, before any work (no traceback, nothing written); --help lists the flags and exits 0. Each parses its flags from
its config dataclass (rlhf_nb.cli.cli_from_dataclass, or build_parser underneath), spelled --field_name."""
from __future__ import annotations

import functools
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS_DIR = ROOT / "rlhf_nb" / "tools"
TOOLS = sorted(p.stem for p in TOOLS_DIR.glob("*.py") if p.stem != "__init__")
# each command as `python -m <module>` (or `python <script>`) runs it
TRAINERS = {"rlhf_nb.train": "rlhf_nb.train", "rlhf_nb.dpo": "rlhf_nb.dpo",
            "scripts/train_trl.py": str(ROOT / "scripts" / "train_trl.py")}
COMMANDS = {**TRAINERS, "rlhf_nb.evaluate": "rlhf_nb.evaluate", **{f"tools.{t}": f"rlhf_nb.tools.{t}" for t in TOOLS}}
# one bad value per command, with the flag its one line must name
BAD_VALUES = {
    "rlhf_nb.train": (["--batch_size", "0"], "--batch_size"),
    "rlhf_nb.dpo": (["--beta", "nan"], "--beta"),
    "scripts/train_trl.py": (["--advantage", "gae"], "--advantage"),
    "rlhf_nb.evaluate": (["--run", "runs", "--samples_per_prompt", "0"], "--samples_per_prompt"),
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


@functools.lru_cache(maxsize=None)
def outcomes(command: str) -> dict[str, SimpleNamespace]:
    """Every case of the contract for one command, run in one fresh Python process (tests/run_cli_cases.py: each case
    is the command line executed as __main__, so start-up is paid once per command, not once per case): name ->
    (returncode, stdout, stderr), plus the trainers' --out folder and whether rlhf_nb/assets changed."""
    out = Path(tempfile.mkdtemp()) / "runs"
    args, _ = BAD_VALUES[command]
    cases = {"unknown": ["--no_such_flag", "1"], "help": ["--help"],
             "bad": [*args, *(["--out", str(out)] if command in TRAINERS else [])]}
    tool = command.removeprefix("tools.")
    if tool in BUILDERS:
        cases["defaults"] = []  # a builder's defaults: the committed asset
    before = _assets_state()
    p = subprocess.run([sys.executable, str(ROOT / "tests" / "run_cli_cases.py"), COMMANDS[command],
                        json.dumps(list(cases.values()))], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    results = {name: SimpleNamespace(**r) for name, r in zip(cases, json.loads(p.stdout))}
    return {**results, "out": out, "assets_touched": _assets_state() != before}


def test_every_command_has_a_bad_value_case():
    assert sorted(BAD_VALUES) == sorted(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_unknown_flag_is_one_line_and_exit_2(command):
    p = outcomes(command)["unknown"]
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "--no_such_flag" in lines[0], p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bad_value_is_one_line_naming_the_flag_and_exit_2(command):
    named = BAD_VALUES[command][1]
    p = outcomes(command)["bad"]
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and named in lines[0], (p.returncode, p.stderr)
    assert not outcomes(command)["out"].exists()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_the_flags_and_exits_0(command):
    p = outcomes(command)["help"]
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
    p = outcomes(f"tools.{tool}")["defaults"]  # its defaults: the committed asset
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, (p.returncode, p.stderr)
    assert BUILDERS[tool] in lines[0] and "committed asset" in lines[0] and "--overwrite" in lines[0], lines[0]
    assert not outcomes(f"tools.{tool}")["assets_touched"]  # nothing touched by any case of the tool


def test_make_passes_overwrite_to_every_builder():
    makefile = (TOOLS_DIR.parents[1] / "Makefile").read_text()
    for tool in BUILDERS:
        calls = [line for line in makefile.splitlines() if f"rlhf_nb.tools.{tool}" in line]
        assert calls and all("--overwrite" in line for line in calls), (tool, calls)


@pytest.mark.parametrize("tool", ["capstone_sweep", "grpo_sweep", "verifiable_sweep"])
@pytest.mark.parametrize("argv, msg", [(["--jobs", "0"], "--jobs must be in"),
                                       (["--out", "/no/such/folder/x.json"], "to write it in"),
                                       (["--out", "{tmp}"], "is a folder; give a file name")])
def test_a_sweep_refuses_a_bad_jobs_or_out_before_any_run(tool, argv, msg, capsys, tmp_path):
    """The three sweep tools share --jobs and --out (config.check_output_file): each refuses a bad one in one line."""
    import importlib

    with pytest.raises(SystemExit) as e:
        importlib.import_module(f"rlhf_nb.tools.{tool}").parse_args([a.format(tmp=tmp_path) for a in argv])
    assert e.value.code == 2 and msg in capsys.readouterr().err
