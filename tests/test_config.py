"""RunConfig: one source of names, defaults and ranges; bad values fail up front naming the flag."""
from __future__ import annotations

import pytest

from rlhf_nb.cli import config_from_args
from rlhf_nb.config import ConfigError, RunConfig, build_parser


def test_defaults_are_valid():
    cfg = RunConfig()
    assert cfg.total_steps == cfg.epochs * cfg.steps_per_epoch


@pytest.mark.parametrize("changes, flag", [
    ({"batch_size": 0}, "--batch_size"),
    ({"kl_coef": -1.0}, "--kl_coef"),
    ({"device": "tpu"}, "--device"),
    ({"reward": "vibes"}, "--reward"),
    ({"max_new_tokens": 0}, "--max_new_tokens"),
    ({"learning_rate": float("nan")}, "--learning_rate"),
    ({"batch_size": 2.5}, "--batch_size"),
    ({"adaptive_kl": "yes"}, "--adaptive_kl"),
    ({"advantage": "grpo", "num_generations": 1}, "--num_generations"),
    ({"num_minibatches": 64, "batch_size": 8}, "--num_minibatches"),
])
def test_bad_values_name_the_flag_and_range(changes, flag):
    with pytest.raises(ConfigError) as e:
        RunConfig(**changes)
    msg = str(e.value)
    assert msg.startswith(flag) and "\n" not in msg


def test_range_is_stated():
    with pytest.raises(ConfigError, match=r"--batch_size must be in \[1, 4096\], got 0"):
        RunConfig(batch_size=0)


def test_cli_is_derived_from_the_dataclass():
    p = build_parser()
    flags = {a.dest for a in p._actions}
    for name in ("seed", "device", "epochs", "steps_per_epoch", "batch_size", "max_new_tokens", "learning_rate",
                 "kl_coef", "reward", "model", "adaptive_kl", "target_kl", "max_minutes", "out", "resume"):
        assert name in flags
    cfg = config_from_args(["--batch_size", "8", "--adaptive_kl", "--kl_coef", "0.2"])
    assert (cfg.batch_size, cfg.adaptive_kl, cfg.kl_coef) == (8, True, 0.2)


def test_cli_bad_value_exits_with_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        config_from_args(["--kl_coef", "-1"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --kl_coef must be in [0, 10], got -1.0"


def test_unknown_keys_are_refused():
    with pytest.raises(ConfigError, match="unknown config key"):
        RunConfig.from_dict({"batchsize": 3})


def test_round_trip_through_dict():
    cfg = RunConfig(seed=3, kl_coef=0.2)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_flags_must_be_spelled_in_full(capsys):
    for argv in (["--batch", "8"], ["--epoch", "3"], ["--resu", "x"]):
        with pytest.raises(SystemExit) as e:
            config_from_args(argv)
        assert e.value.code == 2 and f"unrecognized arguments: {argv[0]}" in capsys.readouterr().err


def test_only_given_reads_the_flags_from_the_parser_not_the_text():
    given = vars(build_parser(only_given=True).parse_args(["--batch_size=8", "--no_progress", "--seed", "3"]))
    assert given == {"batch_size": 8, "progress": False, "seed": 3}


@pytest.mark.parametrize("changes, flag", [
    ({"out": ""}, "--out"),
    ({"run_name": "a/b"}, "--run_name"),
    ({"run_name": "../x"}, "--run_name"),
    ({"run_name": "/tmp/x"}, "--run_name"),
    ({"run_name": "."}, "--run_name"),
    ({"run_name": ".."}, "--run_name"),
    ({"run_name": ""}, "--run_name"),
    ({"run_name": "é" * 101}, "--run_name"),  # 202 bytes
])
def test_output_names_that_would_leave_out_are_refused(changes, flag):
    with pytest.raises(ConfigError) as e:
        RunConfig(**changes)
    assert str(e.value).startswith(flag)


def test_a_plain_run_name_is_fine():
    assert RunConfig(run_name="my_run-2.b").run_name == "my_run-2.b"


def test_output_folder_probe(tmp_path):
    from rlhf_nb.config import check_output_writable

    check_output_writable(tmp_path / "new" / "deeper")  # creatable: fine, and nothing is left behind
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("x")
    for out, says in ((tmp_path / "f", "is a file"), (tmp_path / "f" / "x", "which is a file")):
        with pytest.raises(ConfigError, match=says):
            check_output_writable(out)


@pytest.mark.parametrize("kw, flag", [({"top_k": 5}, "--top_k 5"), ({"top_p": 0.9}, "--top_p 0.9")])
def test_truncated_sampling_is_refused_for_training(kw, flag):
    """Sampling from top-k/top-p but scoring log-probs on the full distribution biases the KL and the ratio."""
    with pytest.raises(ConfigError, match=f"^{flag}: training must sample from the full distribution"):
        RunConfig(**kw)


def test_task_defaults_to_the_reviews_and_refuses_unknown_names():
    """--task (lesson 12): the default leaves every earlier run as it was; a bad name is a ConfigError naming it."""
    assert RunConfig().task == "reviews"
    with pytest.raises(ConfigError, match="^--task must be one of reviews, arithmetic, arithmetic_format"):
        RunConfig(task="chess")

