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
