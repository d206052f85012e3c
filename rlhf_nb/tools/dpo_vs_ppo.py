"""`make dpo_compare`: DPO, SFT on the chosen completions, and reward model + PPO, all from the same 1,000 preference
pairs (lesson 08's proxy-rm-1000), each measured by the gold at the KL it reached. Writes rlhf_nb/assets/dpo-vs-ppo.json,
which lesson 09 plots.

Every policy is measured the same way (`rlhf_nb.dpo.measure_policy`): 256 completions sampled from it (each training
prompt 8 times, 12 tokens, T = 1), KL(π‖ρ) by k1 on those samples, and their mean gold score; the sampling generator
is seeded by `measurement_seed(seed)`, the same for every method at a seed. DPO and SFT are measured at each epoch's
end; PPO at the steps of `ppo_eval_at`. Three seeds per setting.

    python -m rlhf_nb.tools.dpo_vs_ppo            # about 17 CPU minutes on one thread
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields

from ..cli import cli_from_dataclass
from ..config import ConfigError, Options, check_fields, check_output_file, option
from ..dpo import ASSETS, DPOConfig, eval_prompts, load_pairs, measure_policy, measurement_seed
from ..runlog import write_json_atomically

OUT = ASSETS / "dpo-vs-ppo.json"


@dataclass
class CompareConfig(Options):
    """The grid of `make dpo_compare` (stored as the JSON's "config"); lesson 09's live run is one of its DPO settings
    (beta 0.1, seed 0)."""

    pairs: str = option("proxy-rm-1000", "training and held-out pairs (a folder under rlhf_nb/assets with "
                        "train_pairs.jsonl and eval_pairs.jsonl) and, for PPO, the reward model trained on them")
    seeds: tuple[int, ...] = option((0, 1, 2), "seeds; every setting runs at each", 0, 2**32 - 1)
    dpo_betas: tuple[float, ...] = option((0.03, 0.1, 0.3, 1.0, 3.0), "DPO's beta values", 0.001, 100.0)
    epochs: int = option(6, "DPO and SFT: passes over the pairs, measured after each", 1, 10_000)
    learning_rate: float = option(3e-4, "DPO and SFT: Adam learning rate (DPOConfig's default)", 1e-8, 1.0)
    ppo_betas: tuple[float, ...] = option((0.02, 0.05, 0.1, 0.2, 0.5), "PPO's KL coefficients", 0.0, 10.0)
    ppo_steps: int = option(60, "PPO steps of each run (PPO_RUN's settings)", 1, 100_000)
    # dense early: PPO's KL climbs by about 2 nats in its first 10 steps, the range where DPO and SFT end
    ppo_eval_at: tuple[int, ...] = option((2, 4, 6, 8, 10, 15, 20, 30, 40, 50, 60), "PPO steps after which the "
                                          "policy is measured (dense early, where DPO and SFT end)", 1, 100_000)
    eval_samples: int = option(256, "completions sampled per measurement (each training prompt in turn)", 1, 100_000)
    max_new_tokens: int = option(12, "tokens per completion: as the pairs were sampled, and as RunConfig's default "
                                 "rollouts", 1, 4096)

    def validate(self):
        super().validate()
        late = [k for k in self.ppo_eval_at if k > self.ppo_steps]
        if late:
            raise ConfigError(f"--ppo_eval_at {late[0]} is after the last PPO step (--ppo_steps {self.ppo_steps})")
        return self


# --quick: one seed, two settings each, 2 epochs / 20 steps (a check of the tool, not for the record)
QUICK = dict(seeds=(0,), dpo_betas=(0.1, 1.0), ppo_betas=(0.05,), epochs=2, ppo_steps=20, ppo_eval_at=(5, 10, 20))


@dataclass
class CompareOptions(CompareConfig):
    """`python -m rlhf_nb.tools.dpo_vs_ppo`: the grid (CompareConfig), where the JSON goes, and --quick."""

    out: str = option(str(OUT), "the JSON to write (replaced atomically at the end)")
    overwrite: bool = option(False, "replace a JSON that is a committed asset (the default --out): without it, "
                             "writing over rlhf_nb/assets is refused before any work")
    quick: bool = option(False, "a check of the tool: one seed, two settings each, 2 epochs / 20 steps (replaces "
                         "--seeds, --dpo_betas, --ppo_betas, --epochs, --ppo_steps, --ppo_eval_at where left at "
                         "their defaults)")

    def validate(self):
        check_fields(self)
        self.grid()  # the grid that runs, with its own rules
        return self

    def grid(self) -> CompareConfig:
        """The CompareConfig that runs: these flags, with --quick's values for those left at their defaults."""
        values = {f.name: getattr(self, f.name) for f in fields(CompareConfig)}
        if self.quick:
            defaults = {f.name: f.default for f in fields(CompareConfig)}
            values.update({k: v for k, v in QUICK.items() if values[k] == defaults[k]})
        return CompareConfig(**values)


def check_options(o: CompareOptions) -> None:
    """Before about 17 CPU minutes of runs: the pairs and their reward model load, the JSON can be written."""
    from ..rewards import reward_model_dir

    try:
        load_pairs(o.pairs)
        load_pairs(o.pairs, "--pairs", "eval")
        reward_model_dir(o.pairs)
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(str(e).replace("--reward_model", "--pairs", 1)) from None
    check_output_file(o.out, o.overwrite)


# PPO's settings in the comparison as stored (RunConfig's defaults until 2026-12-05): 32 prompts a step, four passes
# of two minibatches at a constant 3e-4
PPO_RUN = dict(batch_size=32, learning_rate=3e-4, lr_decay="constant", ppo_epochs=4, num_minibatches=2, vf_coef=0.1)


def _dpo_cfg(c: CompareConfig, loss: str, beta: float, seed: int) -> DPOConfig:
    return DPOConfig(pairs=c.pairs, eval_pairs=c.pairs, loss=loss, beta=beta, seed=seed, epochs=c.epochs,
                     learning_rate=c.learning_rate, eval_samples=c.eval_samples, max_new_tokens=c.max_new_tokens,
                     progress=False, device="cpu")


def run_dpo(c: CompareConfig, loss: str, beta: float, seed: int) -> list[dict]:
    """One DPO (or SFT) run: a row per epoch with step, kl, gold, well_formed and held-out implicit-reward accuracy."""
    from ..dpo import train

    hist = train(_dpo_cfg(c, loss, beta, seed), write_run=False).history
    return [{"step": h["step"], "kl": h["eval/kl"], "gold": h["eval/gold_scores"], "well_formed": h["eval/well_formed"],
             "accuracy": h["eval/accuracy"], "logps_chosen": h["logps/chosen"], "logps_rejected": h["logps/rejected"]}
            for h in hist if "eval/kl" in h]


def run_ppo(c: CompareConfig, beta: float, seed: int) -> list[dict]:
    """PPO on the reward model trained on the same pairs; a row at each step of ppo_eval_at (proxy: its mean score)."""
    from ..config import RunConfig
    from ..train import ppo_step, setup

    cfg = RunConfig(reward="learned", reward_model=c.pairs, gold="none", kl_coef=beta, seed=seed,
                    steps_per_epoch=c.ppo_steps, max_new_tokens=c.max_new_tokens, progress=False, device="cpu", **PPO_RUN)
    s, rows, prompts = setup(cfg), [], eval_prompts(c.eval_samples)
    while s.step < cfg.total_steps:
        m, _ = ppo_step(s)
        if s.step in c.ppo_eval_at:
            r = measure_policy(s.policy, s.ref, s.tokenizer, prompts, measurement_seed(seed), c.max_new_tokens)
            rows.append({"step": s.step, "kl": r["kl"], "gold": r["gold"], "well_formed": r["well_formed"],
                         "proxy": m["objective/scores"]})
    return rows


def base_row(c: CompareConfig, seed: int) -> dict:
    """The starting point every method shares: the base policy measured with this seed's samples (KL 0)."""
    from ..policy import load_policy, make_reference

    lm, tok = load_policy()
    r = measure_policy(lm, make_reference(lm), tok, eval_prompts(c.eval_samples), measurement_seed(seed),
                       c.max_new_tokens)
    return {"step": 0, "kl": r["kl"], "gold": r["gold"], "well_formed": r["well_formed"]}


def reward_model_accuracy(pairs: str) -> dict:
    """The reward model's held-out accuracy on the same held-out pairs the DPO runs are scored on."""
    from ..rewards import reward_model_dir
    from ..reward_model import evaluate, load_reward_model

    model, tok = load_reward_model(reward_model_dir(pairs))
    return evaluate(model, tok, load_pairs(pairs, "--eval_pairs", "eval"))


def main(argv: list[str] | None = None) -> dict:
    from ..seeding import seed_everything

    args = cli_from_dataclass(CompareOptions, argv, prog="python -m rlhf_nb.tools.dpo_vs_ppo",
                              description=__doc__.split("\n\n")[0], check=check_options)
    c = args.grid()
    seed_everything(0)
    t0 = time.process_time()
    runs = []
    for seed in c.seeds:
        base = base_row(c, seed)
        settings = ([("dpo", b) for b in c.dpo_betas] + [("sft", 0.1)] + [("ppo", b) for b in c.ppo_betas])
        for method, beta in settings:
            t = time.process_time()
            rows = run_ppo(c, beta, seed) if method == "ppo" else run_dpo(c, "sft" if method == "sft" else "sigmoid",
                                                                            beta, seed)
            runs.append({"method": method, "beta": beta, "seed": seed, "rows": [base] + rows})
            last = rows[-1]
            print(f"seed {seed} {method:4s} beta {beta:<5g} kl {last['kl']:7.3f} gold {last['gold']:+.3f} "
                  f"({time.process_time() - t:.0f} CPU s)", flush=True)
    result = {"config": asdict(c), "reward_model": reward_model_accuracy(c.pairs), "runs": runs,
              "cpu_seconds": round(time.process_time() - t0, 1),
              "command": "python -m rlhf_nb.tools.dpo_vs_ppo  (make dpo_compare)"}
    write_json_atomically(args.out, result, indent=1)
    print(f"wrote {args.out} ({result['cpu_seconds']} CPU s)")
    return result


if __name__ == "__main__":
    main()
