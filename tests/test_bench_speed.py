"""bench_speed's measurements: FLOPs per stage add up and match the model's arithmetic, the peak and fits behave."""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from rlhf_nb.policy import PolicyWithValue, forward_tokens, sample
from rlhf_nb.tools.bench_speed import STAGES, efficiency, linear_fit, matmul_peak, measure_step


def _forward_flops(B: int, L: int, T: int, cfg, value_head: bool) -> int:
    """Matmul FLOPs of one GPT-2 forward over (B, L) tokens whose LM head and value head run on the T columns that
    predict the completion tokens only."""
    H, V, n = cfg.n_embd, cfg.vocab_size, cfg.n_layer
    per_layer = 2 * B * L * H * (3 * H + H + 4 * H + 4 * H)  # qkv, attention out, MLP up, MLP down
    return n * per_layer + 2 * B * T * H * V + (2 * B * T * H if value_head else 0)


@pytest.mark.parametrize("value_head", [False, True])
def test_counted_flops_of_a_no_grad_forward_match_the_model_arithmetic(policy_and_tokenizer, value_head):
    lm, tok = policy_and_tokenizer
    model = PolicyWithValue(lm) if value_head else lm
    ro = sample(lm, tok, ["The movie was", "I think this film"], 6, generator=torch.Generator().manual_seed(0))
    B, L = ro.query_responses.shape
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        forward_tokens(model, ro.query_responses, ro.attention_mask, ro.context_length, entropy=False)
    # FlopCounterMode counts matmuls; attention on CPU runs a kernel it has no formula for, and is tiny here
    assert fc.get_total_flops() == _forward_flops(B, L, L - ro.context_length, lm.config, value_head)


def test_stage_flops_and_times_add_up_to_the_step():
    r = measure_step(dict(batch_size=4, max_new_tokens=4, ppo_epochs=1, num_minibatches=2), steps=2, warmup=0)
    g, s = r["gflop"], r["seconds"]
    assert g["update"] > g["forward"] > g["rollout"] > 0 and g["score"] == 0
    assert math.isclose(sum(g[k] for k in STAGES) + g["other"], g["step"], rel_tol=1e-9)
    assert all(s[k] > 0 for k in ("rollout", "forward", "update"))
    assert sum(s[k] for k in STAGES) <= s["step"] + 1e-9
    e = efficiency(r, peak_gflops=100.0)
    assert math.isclose(e["step"]["x_limit"], s["step"] / (g["step"] / 100.0))
    assert r["matmul_shapes"] and r["tokens_per_step"] > 0


def test_matmul_peak_is_the_best_of_the_shapes():
    r = matmul_peak([(64, 32, 48), (128, 128, 128)], min_s=0.005)
    assert set(r["gflops"]) == {"64x32 @ 32x48", "128x128 @ 128x128"}
    assert r["peak"] == max(r["gflops"].values()) > 0.1


def test_linear_fit_recovers_a_line_and_flags_a_curve():
    xs = [1.0, 2.0, 4.0, 8.0]
    line = linear_fit(xs, [2 + 3 * x for x in xs])
    assert math.isclose(line["a"], 2) and math.isclose(line["b"], 3) and math.isclose(line["r2"], 1)
    assert line["max_rel_residual"] < 1e-12
    curve = linear_fit(xs, [x * x for x in xs])
    assert curve["r2"] < 0.99 and curve["max_rel_residual"] > 0.1
