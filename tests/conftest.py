from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def policy_and_tokenizer():
    from rlhf_nb.policy import load_policy

    return load_policy()


@pytest.fixture(scope="session")
def model_dir() -> str:
    """The folder of the embedded model, for code that takes a path (TRL loads its reference from one)."""
    from rlhf_nb.policy import resolve_model_path

    return resolve_model_path("embedded")
