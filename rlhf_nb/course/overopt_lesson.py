"""Lesson 08's per-seed view of the committed over-optimisation sweep (`make overopt`): what each PPO run did, one row
per seed, so that the lesson's sentences about single seeds quote printed numbers. Nothing here trains."""
from __future__ import annotations

from typing import Any, Sequence


def seed_summary(runs: Sequence[Sequence[dict]], seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """One row per seed of RL runs (`overopt.sweep_runs(sweep, "rl", …)`: rows of step, kl, d, gold_gain,
    well_formed, proxy_gain_sd, pref_accuracy, disagreement; the first row is step 0, the base policy).

    peak: the measurement with the highest gold gain (step 0, gain 0, when the gold never rose above the base
    policy's); lowest: the one with the lowest; start / end: the first and the last measurement; "below half
    well-formed from step": the first step whose samples are less than half well-formed (None: never)."""
    out = []
    for i, rows in enumerate(runs):
        start, end = rows[0], rows[-1]
        peak = max(rows, key=lambda r: r["gold_gain"])  # the first of equal maxima: step 0 if the gold never rose
        low = min(rows, key=lambda r: r["gold_gain"])
        out.append({"seed": seeds[i] if seeds is not None else i,
                    "peak gold gain": peak["gold_gain"], "peak step": peak["step"], "peak KL": peak["kl"],
                    "peak d": peak["d"], "lowest gold gain": low["gold_gain"], "lowest at d": low["d"],
                    "end KL": end["kl"], "end d": end["d"], "end gold gain": end["gold_gain"],
                    "start well-formed": start["well_formed"], "end well-formed": end["well_formed"],
                    "below half well-formed from step": next((r["step"] for r in rows if r["well_formed"] < 0.5), None),
                    "end proxy gain (sd)": end["proxy_gain_sd"],
                    "pref_accuracy start": start["pref_accuracy"], "pref_accuracy end": end["pref_accuracy"],
                    "disagreement start": start.get("disagreement"), "disagreement end": end.get("disagreement")})
    return out
