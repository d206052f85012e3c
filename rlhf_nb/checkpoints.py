"""Checkpoints: safetensors weights + plain-tensor optimizer/RNG state, written atomically, loaded without unpickling code.

Loading checks every file before it touches the model: a truncated, edited or foreign checkpoint is refused with
one line naming the file and what is wrong (CheckpointError), never a raw traceback or a run that crashes later.
A failed write (disk full…) raises CheckpointWriteError with one line; whatever was there before stays."""
from __future__ import annotations

import errno
import json
import os
import pickle
import random
import re
import shutil
import stat
import tempfile
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .config import ConfigError, RunConfig

STATE_FILE = "trainer_state.json"
MODEL_FILE = "model.safetensors"
VALUE_HEAD_FILE = "value_head.safetensors"
TRAINING_STATE_FILE = "training_state.pt"
GENERATORS = ("prompts", "sample", "minibatch")
# the model's shape in config.json: a checkpoint resumes only the architecture it was trained with
ARCH_KEYS = ("model_type", "n_layer", "n_embd", "n_head", "n_positions", "n_inner", "vocab_size", "num_hidden_layers",
             "hidden_size", "num_attention_heads", "max_position_embeddings", "intermediate_size", "tie_word_embeddings")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the file and what is wrong."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, permissions…); nothing that was there before was touched."""


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every random stream a run draws from, as tensors and JSON-able values."""
    np_state = np.random.get_state()
    return {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {k: g.get_state() for k, g in generators.items()},
    }


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for k, g in generators.items():
        g.set_state(state["generators"][k])


# ---------------------------------------------------------------------------------------------------- writing

def save_checkpoint(path: str | Path, policy, tokenizer, optimizer: torch.optim.Optimizer,
                    generators: dict[str, torch.Generator], trainer_state: dict[str, Any]) -> Path:
    """Write to a temp folder beside `path`, then rename it into place: a crash never leaves half a checkpoint."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        mode = stat.S_IMODE(path.parent.stat().st_mode)
        os.chmod(tmp, mode)  # mkdtemp makes 0700: give the checkpoint the run folder's permissions
        policy.lm.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        save_file({k: v.detach().cpu().contiguous() for k, v in policy.value_head.state_dict().items()},
                  str(tmp / VALUE_HEAD_FILE))
        rng = rng_state(generators)
        torch.save({"optimizer": optimizer.state_dict(), "torch_rng": rng.pop("torch"), "cuda_rng": rng.pop("cuda"),
                    "generators": rng.pop("generators")}, tmp / TRAINING_STATE_FILE)
        (tmp / STATE_FILE).write_text(json.dumps({**trainer_state, "rng": rng}, indent=2))
        for f in tmp.iterdir():
            os.chmod(f, mode & 0o666)  # some writers make 0600 files; match the run's own files
            with open(f, "rb") as fh:  # make the bytes durable before the rename publishes them
                os.fsync(fh.fileno())
        publish_folder(tmp, path)
    except Exception as e:
        free = _free_bytes(path.parent)  # measured before the partial folder is removed: what the write ran into
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointWriteError(f"could not write checkpoint {path}: {describe_write_error(e, path.parent, free)}"
                                   ) from e
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def publish_folder(tmp: Path, path: Path) -> None:
    """Rename tmp to path; an existing path is moved aside first, so a loadable copy exists at every moment."""
    old = None
    if path.exists():  # final/ is rewritten by --resume runs into a new run folder only; step_N never repeats
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_folder_atomically(out: str | Path, write) -> None:
    """write(tmp) into a fresh folder next to `out`, then swap it in with publish_folder: `out` is the old folder or
    the new one, never half of each, and nothing half-written is left if `write` fails."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_folder(tmp, out)


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def describe_write_error(e: Exception, folder: Path, free: int | None = None) -> str:
    """One phrase for a failed write. torch's zip writer reports a full disk as "[enforce fail at
    inline_container.cc…] unexpected pos", with no errno, so little free space counts as a full disk too."""
    free = _free_bytes(folder) if free is None else free
    full = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
    text = str(e)
    if ((isinstance(e, OSError) and e.errno in full) or "No space left" in text or "code: 28," in text
            or (free is not None and free < 1 << 20)):
        left = f"{free / 2**20:.1f} MB free" if free is not None else "no space left"
        return f"the disk is full ({left} in {folder})"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror + (f" ({e.filename})" if e.filename else "")
    return _first_line(e)


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def checkpoint_bytes(policy, optimizer: torch.optim.Optimizer) -> int:
    """About what one checkpoint takes on disk: the weights, Adam's two moments per weight, and ~1 MB of the rest."""
    params = {p.data_ptr(): p.numel() * p.element_size() for p in policy.parameters()}  # tied weights once
    moments = 2 if isinstance(optimizer, torch.optim.Adam) else 1
    return (1 + moments) * sum(params.values()) + (1 << 20)


# ---------------------------------------------------------------------------------------------------- reading

def read_trainer_state(path: str | Path, config_cls: type = RunConfig, objects: tuple[str, ...] = ("kl_ctl",)
                       ) -> dict[str, Any]:
    """trainer_state.json of a checkpoint folder, checked: a whole step >= 0, a complete valid config (of
    `config_cls`: RunConfig, or DPOConfig for rlhf_nb.dpo), RNG state and the trainer's own `objects` (PPO: kl_ctl).

    Cheap (JSON only), so the CLI calls it before loading any model."""
    path = Path(path)
    f = path / STATE_FILE
    if path.is_dir() and os.path.lexists(f):
        _require_file(f)
    if not (path.is_dir() and f.is_file()):
        raise CheckpointError(f"--resume must be a checkpoint folder (…/checkpoints/step_N or …/final, with "
                              f"{STATE_FILE}), got {str(path)!r}")
    try:
        state = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{f} is not readable JSON ({_first_line(e)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{f} must hold a JSON object, got {type(state).__name__}")
    other = _other_trainer(state, config_cls)
    if other:
        who, module = other
        raise CheckpointError(f"--resume {str(path)!r} is a checkpoint of {who} ({module}); resume it with that "
                              f"trainer (`python -m {module} --resume …`)")
    for key, typ in (("step", int), ("config", dict), *((k, dict) for k in objects), ("rng", dict)):
        if key not in state:
            raise CheckpointError(f"{f} has no '{key}' entry")
        if not isinstance(state[key], typ) or isinstance(state[key], bool):
            raise CheckpointError(f"{f}: '{key}' must be {'a whole number' if typ is int else 'an object'}, "
                                  f"got {state[key]!r}")
    if state["step"] < 0:
        raise CheckpointError(f"{f}: 'step' must be >= 0, got {state['step']}")
    missing = [fl.name for fl in fields(config_cls) if fl.name not in state["config"]]
    if missing:
        raise CheckpointError(f"{f}: the config lacks {', '.join('--' + m for m in missing)} (written by another "
                              f"version of rlhf_nb, or edited)")
    try:
        config_cls.from_dict(state["config"])
    except ConfigError as e:
        raise CheckpointError(f"{f}: config: {e}") from None
    return state


# a field each trainer's config has and the other's has not: how a checkpoint tells which trainer wrote it
_TRAINER_MARKS = {"advantage": ("the PPO trainer", "rlhf_nb.train"), "pairs": ("the DPO trainer", "rlhf_nb.dpo")}


def _other_trainer(state: dict, config_cls: type) -> tuple[str, str] | None:
    """(name, module) of the other trainer when the checkpoint's config is clearly its (PPO's has --advantage, DPO's --pairs)
    and `config_cls` is not; None otherwise (then the usual field-by-field checks speak)."""
    cfg = state.get("config")
    if not isinstance(cfg, dict):
        return None
    ours = {f.name for f in fields(config_cls)}
    for mark, who in _TRAINER_MARKS.items():
        if mark in cfg and mark not in ours:
            return who
    return None


def _require_file(f: Path, what: str = "") -> None:
    """f is a regular file (or a link to one): else a CheckpointError that says what it is instead. Never opens it,
    so a FIFO cannot block the check."""
    suffix = f" ({what})" if what else ""
    if not os.path.lexists(f):
        raise CheckpointError(f"{f} is missing{suffix}")
    try:
        st = os.stat(f)
    except OSError as e:
        kind = "a symlink loop" if e.errno == errno.ELOOP else f"a broken link ({e.strerror})"
        raise CheckpointError(f"{f} is {kind}, not a file{suffix}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device")
        raise CheckpointError(f"{f} is {kind}, not a file{suffix}")


def load_checkpoint(path: str | Path, policy, optimizer: torch.optim.Optimizer | None,
                    generators: dict[str, torch.Generator], device: torch.device, config_cls: type = RunConfig,
                    objects: tuple[str, ...] = ("kl_ctl",)) -> dict[str, Any]:
    """Restore weights, optimizer and RNG streams; `torch.load(weights_only=True)` never executes code from the file.

    Every file is read and checked first (shapes, finite values, the model's config); only then is anything loaded."""
    path = Path(path)
    state = read_trainer_state(path, config_cls, objects)
    _check_model_config(path / "config.json", policy.lm.config)
    lm_sd = _read_tensors(path / MODEL_FILE, device, policy.lm)
    vh_sd = _read_tensors(path / VALUE_HEAD_FILE, device, policy.value_head)
    blob = _read_training_state(path / TRAINING_STATE_FILE, optimizer, generators)
    policy.lm.load_state_dict(lm_sd, strict=False)  # strict would ask for tied copies (lm_head = wte) too
    policy.value_head.load_state_dict(vh_sd)
    if optimizer is not None:
        optimizer.load_state_dict(blob["optimizer"])
    rng = {**state["rng"], "torch": blob["torch_rng"], "cuda": blob["cuda_rng"], "generators": blob["generators"]}
    try:
        set_rng_state(rng, generators)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path / STATE_FILE}: the random-number state is malformed ({_first_line(e)})") from None
    return state


def _check_model_config(f: Path, live) -> None:
    _require_file(f, "the checkpoint's model config")
    try:
        saved = json.loads(f.read_text())
        assert isinstance(saved, dict)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AssertionError) as e:
        raise CheckpointError(f"{f} is not a readable JSON object ({_first_line(e)})") from None
    live = live.to_dict()
    for k in ARCH_KEYS:
        if k in saved and k in live and saved[k] != live[k]:
            raise CheckpointError(f"{f}: {k} is {saved[k]!r}, but the model this run loads (--model) has {live[k]!r}; "
                                  f"a checkpoint resumes only the model it was trained from")


def _read_tensors(f: Path, device: torch.device, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A safetensors file whose tensors match `module` name for name, shape for shape, all finite."""
    _require_file(f)
    try:
        sd = load_file(str(f), device=str(device))
    except Exception as e:  # safetensors raises its own error type for a short, empty or edited header
        raise CheckpointError(f"{f} is not a valid safetensors file, truncated or corrupted ({_first_line(e)})"
                              ) from None
    want = module.state_dict()
    extra = sorted(set(sd) - set(want))
    if extra:
        raise CheckpointError(f"{f} holds {len(extra)} tensor(s) the model does not have (e.g. {extra[0]}): "
                              f"it is from another model")
    loaded = {want[k].data_ptr() for k in sd}
    missing = [k for k in want if k not in sd and want[k].data_ptr() not in loaded]  # tied copies are not saved
    if missing:
        raise CheckpointError(f"{f} lacks {len(missing)} tensor(s) the model needs (e.g. {missing[0]})")
    for k, v in sd.items():
        if v.shape != want[k].shape or v.dtype != want[k].dtype:
            raise CheckpointError(f"{f}: {k} is {v.dtype} {tuple(v.shape)}, the model needs "
                                  f"{want[k].dtype} {tuple(want[k].shape)}")
    _check_finite(f, sd.items())
    return sd


def _check_finite(f: Path, named: Any) -> None:
    for k, v in named:
        if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all():
            n = int((~torch.isfinite(v)).sum())
            raise CheckpointError(f"{f}: {k} holds {n} NaN/inf value(s); training from it would fail at its first step")


def _read_training_state(f: Path, optimizer: torch.optim.Optimizer | None,
                         generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Optimizer and RNG tensors, read with weights_only=True and checked against this run's optimizer."""
    _require_file(f)
    try:
        with warnings.catch_warnings():  # torch warns about an old pickle protocol before refusing it: one line only
            warnings.simplefilter("ignore")
            blob = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's own message goes on to suggest weights_only=False, i.e. running the file's code: not repeated here
        what = re.search(r"GLOBAL ([\w.]+)", str(e))
        raise CheckpointError(f"{f} is not a plain tensor checkpoint: it would unpickle "
                              f"{what.group(1) if what else 'a Python object'}, which could run code; refused"
                              ) from None
    except Exception as e:
        raise CheckpointError(f"{f} is truncated or not a torch checkpoint ({_first_line(e)})") from None
    if not (isinstance(blob, dict) and {"optimizer", "torch_rng", "cuda_rng", "generators"} <= set(blob)):
        raise CheckpointError(f"{f} lacks optimizer/torch_rng/cuda_rng/generators entries")
    gens = blob["generators"]
    for name, t in [("torch_rng", blob["torch_rng"])] + [(f"generators[{g!r}]", gens.get(g) if isinstance(gens, dict)
                                                          else None) for g in generators]:
        if not (torch.is_tensor(t) and t.dtype == torch.uint8):
            raise CheckpointError(f"{f}: {name} must be a uint8 tensor (an RNG state), got {type(t).__name__}")
    if optimizer is not None:
        _check_optimizer_state(f, blob["optimizer"], optimizer)
    return blob


def _check_optimizer_state(f: Path, saved: Any, optimizer: torch.optim.Optimizer) -> None:
    """Same parameter groups, moment tensors shaped like their parameters, all finite."""
    try:
        groups, params = saved["param_groups"], [p for g in optimizer.param_groups for p in g["params"]]
        sizes = [len(g["params"]) for g in groups]
        assert isinstance(saved["state"], dict)
    except (KeyError, TypeError, AssertionError):
        raise CheckpointError(f"{f}: the optimizer state is malformed (needs 'state' and 'param_groups')") from None
    if sizes != [len(g["params"]) for g in optimizer.param_groups]:
        raise CheckpointError(f"{f}: the optimizer state has parameter groups of sizes {sizes}, this model needs "
                              f"{[len(g['params']) for g in optimizer.param_groups]}")
    ids = [i for g in groups for i in g["params"]]
    for i, st in saved["state"].items():
        p = params[ids.index(i)] if i in ids else None
        for name, t in (st.items() if isinstance(st, dict) else []):
            if p is not None and torch.is_tensor(t) and t.dim() > 0 and t.shape != p.shape:
                raise CheckpointError(f"{f}: optimizer {name} of parameter {i} is {tuple(t.shape)}, the parameter "
                                      f"is {tuple(p.shape)}")
        _check_finite(f, ((f"optimizer state {name} of parameter {i}", t)
                          for name, t in (st.items() if isinstance(st, dict) else [])))
