"""KL to the reference: per-token estimators (Schulman, "Approximating KL Divergence") and the β controllers.

Tokens y are sampled from the policy π; log r = log ρ(y) − log π(y) with ρ the frozen reference.
  k1 = −log r              unbiased, high variance, can be negative per token   (TRL's per-token reward KL)
  k2 = ½ (log r)²          biased, low variance, ≥ 0
  k3 = (r − 1) − log r     unbiased, low variance, ≥ 0
All return (B, T) tensors; mask them before summing (see `masking.py`).
"""
from __future__ import annotations

import torch

ESTIMATORS = ("k1", "k2", "k3")


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = log π − log ρ per token."""
    return logp - ref_logp  # (B, T)


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k2 = ½ (log π − log ρ)² per token."""
    return 0.5 * (logp - ref_logp) ** 2  # (B, T)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = (r − 1) − log r with log r = log ρ − log π, per token."""
    log_r = ref_logp - logp
    return torch.expm1(log_r) - log_r  # expm1 keeps precision when r ≈ 1


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL(π‖ρ) estimate by name: "k1", "k2" or "k3"."""
    fns = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}
    if estimator not in fns:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    return fns[estimator](logp, ref_logp)


def _check_number(name: str, value: float, lo: float, inclusive: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    ok = ok and (value >= lo if inclusive else value > lo) and value != float("inf")
    if not ok:
        rng = f"[{lo}, inf)" if inclusive else f"({lo}, inf)"
        raise ValueError(f"{name} must be a finite number in {rng}, got {value!r}")
    return float(value)


class FixedKLController:
    """β stays at `kl_coef` forever."""

    def __init__(self, kl_coef: float):
        self.value = _check_number("kl_coef", kl_coef, 0.0, inclusive=True)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to do: β is fixed."""

    def state_dict(self) -> dict[str, float]:
        """Plain floats, for checkpoints."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore from `state_dict()`."""
        self.value = _check_number("kl_coef", state["value"], 0.0, inclusive=True)


class AdaptiveKLController:
    """Ziegler et al. 2019: e = clip(KL/target − 1, −0.2, 0.2); β ← β·(1 + e·n_steps/horizon)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        self.value = _check_number("init_kl_coef", init_kl_coef, 0.0, inclusive=True)
        self.target = _check_number("target", target, 0.0, inclusive=False)
        self.horizon = _check_number("horizon", horizon, 0.0, inclusive=False)

    def update(self, current_kl: float, n_steps: int) -> None:
        """One proportional step toward `target`; `n_steps` = sequences (episodes) seen since the last update."""
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)  # clipped proportional error
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        """Plain floats, for checkpoints."""
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore from `state_dict()`."""
        self.value = _check_number("init_kl_coef", state["value"], 0.0, inclusive=True)
        self.target = _check_number("target", state["target"], 0.0, inclusive=False)
        self.horizon = _check_number("horizon", state["horizon"], 0.0, inclusive=False)
