"""Checkpoints: safetensors weights + plain-tensor optimizer/RNG state, written atomically, loaded without unpickling code."""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "trainer_state.json"


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


def save_checkpoint(path: str | Path, policy, tokenizer, optimizer: torch.optim.Optimizer,
                    generators: dict[str, torch.Generator], trainer_state: dict[str, Any]) -> Path:
    """Write to a temp folder beside `path`, then rename it into place: a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        policy.lm.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        save_file({k: v.detach().cpu().contiguous() for k, v in policy.value_head.state_dict().items()},
                  str(tmp / "value_head.safetensors"))
        rng = rng_state(generators)
        torch.save({"optimizer": optimizer.state_dict(), "torch_rng": rng.pop("torch"), "cuda_rng": rng.pop("cuda"),
                    "generators": rng.pop("generators")}, tmp / "training_state.pt")
        (tmp / STATE_FILE).write_text(json.dumps({**trainer_state, "rng": rng}, indent=2))
        for f in tmp.iterdir():  # make the bytes durable before the rename publishes them
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if path.exists():  # final/ is rewritten by --resume runs into a new run folder only; step_N never repeats
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_checkpoint(path: str | Path, policy, optimizer: torch.optim.Optimizer | None,
                    generators: dict[str, torch.Generator], device: torch.device) -> dict[str, Any]:
    """Restore weights, optimizer and RNG streams; `torch.load(weights_only=True)` never executes code from the file."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"--resume: {path} is not a checkpoint folder (no {STATE_FILE}); "
                                f"pass …/checkpoints/step_N or …/final")
    lm = AutoModelForCausalLM.from_pretrained(path).to(device)
    policy.lm.load_state_dict(lm.state_dict())
    policy.value_head.load_state_dict(load_file(str(path / "value_head.safetensors"), device=str(device)))
    blob = torch.load(path / "training_state.pt", map_location="cpu", weights_only=True)
    if optimizer is not None:
        optimizer.load_state_dict(blob["optimizer"])
    state = json.loads((path / STATE_FILE).read_text())
    rng = {**state.pop("rng"), "torch": blob["torch_rng"], "cuda": blob["cuda_rng"], "generators": blob["generators"]}
    set_rng_state(rng, generators)
    return state
