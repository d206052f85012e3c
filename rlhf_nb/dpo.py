"""Direct Preference Optimization (Rafailov et al. 2023): learn from preference pairs with no reward model, no sampler.

    h = [log π(y_w|x) − log ρ(y_w|x)] − [log π(y_l|x) − log ρ(y_l|x)]      (sums over completion tokens only)
    DPO ("sigmoid"):  L = −log σ(β·h)        IPO (Azar et al. 2023):  L = (h − 1/(2τ))², τ = β
    SFT baseline ("sft"):  L = −token mean of log π(y_w)            implicit reward  r̂(x, y) = β·log(π(y|x)/ρ(y|x))

    python -m rlhf_nb.dpo --pairs proxy-rm-1000 --beta 0.1 --loss sigmoid
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

if __name__ == "__main__":  # `python -m rlhf_nb.dpo`: a Ctrl-C while torch imports ends in one line too
    from .startup import catch_ctrl_c_while_importing

    catch_ctrl_c_while_importing()

import torch  # noqa: E402 (the guard above must run first)
import torch.nn.functional as F

from .cli import cli_from_dataclass
from .config import ConfigError, RunOptions, option
from .masking import masked_mean, masked_sum
from .policy import check_fits_context, forward_tokens
from .run import RunResult, Trainer, run
from .run import main as run_main

LOSS_CHOICES = ("sigmoid", "ipo", "sft")
PAIR_KEYS = ("prompt", "chosen", "rejected")
ASSETS = Path(__file__).resolve().parent / "assets"


# ---------------------------------------------------------------- 1. pairs as tokens

def resolve_pairs(name: str, split: str = "train") -> Path:
    """A JSONL file as given, or a folder under rlhf_nb/assets holding `{split}_pairs.jsonl` (e.g. proxy-rm-1000)."""
    p = Path(name)
    if p.is_file():
        return p
    for folder in (p, ASSETS / name):
        if (folder / f"{split}_pairs.jsonl").is_file():
            return folder / f"{split}_pairs.jsonl"
    return p


MAX_PAIRS_FILE_BYTES = 1 << 30  # 1 GiB: a bigger file is almost surely not meant (lesson 08's 4,000 pairs: 0.6 MB)


def load_pairs(path: str | Path, flag: str = "--pairs", split: str = "train") -> list[dict]:
    """Preference records {prompt, chosen, rejected, …} from a JSONL file; anything wrong is one ValueError naming the
    flag, the file and the line: not UTF-8, not JSON, not an object, a field missing or not a string, an empty prompt,
    an empty chosen and rejected, a lone surrogate (\\ud800) no tokenizer can read, or a file over 1 GiB.

    Duplicate records and ties (chosen == rejected) are kept: sampled preference data has them (proxy-rm-4000's
    4,000 training pairs hold 10 duplicates and 15 ties), and a tie has no DPO gradient (its margin is 0 for any π)."""
    path = resolve_pairs(str(path), split)
    if not path.is_file():
        raise ValueError(f"{flag} must be a JSONL file of {{prompt, chosen, rejected}} records or a folder under "
                         f"rlhf_nb/assets with {split}_pairs.jsonl, got {str(path)!r}")
    size = path.stat().st_size
    if size > MAX_PAIRS_FILE_BYTES:
        raise ValueError(f"{flag} {path} is {size / 2**30:.1f} GiB; the limit is 1 GiB (split it, or pass a sample)")
    pairs = []
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{flag} {path}: line {i} is not UTF-8 (byte {raw[e.start]:#04x} at column "
                                 f"{e.start + 1}); save the file as UTF-8") from None
            if not line.strip():
                continue
            pairs.append(_pair_record(line, f"{flag} {path}: line {i}"))
    if not pairs:
        raise ValueError(f"{flag} {path} holds no preference records")
    return pairs


def _pair_record(line: str, where: str) -> dict:
    """One JSONL line as a checked record; `where` starts each error message."""
    try:
        r = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where} is not JSON ({e.msg})") from None
    if not isinstance(r, dict):
        raise ValueError(f"{where} must be a JSON object with string fields {', '.join(PAIR_KEYS)}, got "
                         f"{type(r).__name__}")
    for k in PAIR_KEYS:
        if not isinstance(r.get(k), str):
            got = "missing" if k not in r else f"{type(r[k]).__name__} {r[k]!r}"[:60]
            raise ValueError(f"{where}: '{k}' must be a string, got {got}")
        try:
            r[k].encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{where}: '{k}' holds invalid Unicode (a lone surrogate such as \\ud800)") from None
    if not r["prompt"].strip():
        raise ValueError(f"{where}: 'prompt' is empty; every pair needs a prompt to condition on")
    if not r["chosen"] and not r["rejected"]:
        raise ValueError(f"{where}: 'chosen' and 'rejected' are both empty; there is nothing to prefer")
    return r


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


Encoded = tuple[list[int], list[int], list[int]]  # prompt ids, chosen ids + EOS, rejected ids + EOS


def tokenize_pairs(tokenizer, pairs: Sequence[dict], progress: bool = False) -> list[Encoded]:
    """(prompt ids, chosen ids + EOS, rejected ids + EOS) per pair, split where TRL's DPOTrainer splits them.

    prompt + completion is tokenized as one text (BPE may merge across the seam); the completion starts where that
    and the tokenized prompt diverge. EOS closes each completion: the model learns where a preferred answer ends."""
    eos = tokenizer.eos_token_id
    out = []
    for r in _bar(pairs, progress, "tokenizing pairs"):
        p = tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
        c = tokenizer(r["prompt"] + r["chosen"], add_special_tokens=False)["input_ids"]
        j = tokenizer(r["prompt"] + r["rejected"], add_special_tokens=False)["input_ids"]
        k = min(_common_prefix(p, c), _common_prefix(p, j))
        out.append((p[:k], c[k:] + [eos], j[k:] + [eos]))
    return out


def _bar(items, on: bool, desc: str):
    """items, with a progress bar on stderr when on (set-up over a large pairs file takes minutes)."""
    if not on:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="pair" if desc.startswith("tok") else "batch", leave=False)


@dataclass
class PairBatch:
    """B pairs as 2B rows, chosen first then rejected (TRL's order): left-padded prompt, then right-padded completion."""

    ids: torch.Tensor  # (2B, P + T)
    attention_mask: torch.Tensor  # (2B, P + T) 1 on real prompt and completion tokens
    context_length: int  # P: completions start at this column
    mask: torch.Tensor  # (2B, T) 1 on completion tokens, EOS included

    @property
    def n_pairs(self) -> int:
        return self.ids.size(0) // 2


def collate(encoded: Sequence[Encoded], pad_id: int) -> PairBatch:
    """Stack tokenized pairs into the layout of `policy.Rollout`, so `forward_tokens` reads it as it reads a rollout."""
    rows = [(e[0], e[i]) for i in (1, 2) for e in encoded]
    P, T = max(len(p) for p, _ in rows), max(len(c) for _, c in rows)
    ids = torch.full((len(rows), P + T), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for r, (p, c) in enumerate(rows):
        ids[r, P - len(p):P + len(c)] = torch.tensor(p + c, dtype=torch.long)
        attn[r, P - len(p):P + len(c)] = 1
    return PairBatch(ids, attn, P, attn[:, P:].float())


# ---------------------------------------------------------------- 2. sequence log-probs

def sequence_logps(model, batch: PairBatch, entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(y|x) = Σ_t log π(y_t|x, y_<t) over each row's completion tokens: (2B,); and the token-mean entropy."""
    logp, ent, _ = forward_tokens(model, batch.ids, batch.attention_mask, batch.context_length, entropy=entropy)
    return masked_sum(logp, batch.mask, dim=1), masked_mean(ent.detach(), batch.mask) if entropy else None


@torch.no_grad()
def reference_logps(ref, encoded: Sequence[Encoded], pad_id: int, batch_size: int = 64,
                    progress: bool = False) -> torch.Tensor:
    """(N, 2) log ρ(y_w|x), log ρ(y_l|x) of every pair, computed once: the reference never changes."""
    out = []
    for i in _bar(range(0, len(encoded), batch_size), progress, "scoring pairs under the reference"):
        logps, _ = sequence_logps(ref, collate(encoded[i:i + batch_size], pad_id), entropy=False)
        out.append(torch.stack(logps.chunk(2), dim=1))
    return torch.cat(out)


# ---------------------------------------------------------------- 3. losses, implicit reward, statistics

def preference_logits(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                      ref_rejected: torch.Tensor) -> torch.Tensor:
    """h = (log π − log ρ)(y_w) − (log π − log ρ)(y_l): (B,)."""
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, loss_type: str = "sigmoid") -> torch.Tensor:
    """Mean over pairs of −log σ(β·h) ("sigmoid", DPO) or (h − 1/(2β))² ("ipo", β as τ); inputs (B,) sequence log-probs."""
    if loss_type not in ("sigmoid", "ipo"):
        raise ValueError(f"loss_type must be sigmoid or ipo; got {loss_type!r}")
    h = preference_logits(policy_chosen, policy_rejected, ref_chosen, ref_rejected)  # (B,)
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * h).mean()  # logsigmoid, not log(sigmoid): finite for any margin
    return ((h - 1.0 / (2.0 * beta)) ** 2).mean()


def sft_loss(policy_chosen: torch.Tensor, chosen_tokens: torch.Tensor) -> torch.Tensor:
    """−Σ log π(y_w|x) / Σ T_w: the token-mean negative log-likelihood of the chosen completions (TRL's "sft")."""
    return -policy_chosen.sum() / chosen_tokens.sum()


def implicit_reward(policy_logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """r̂(x, y) = β·log(π(y|x)/ρ(y|x)): the reward DPO's policy is optimal for, up to a per-prompt β·log Z(x)."""
    return beta * (policy_logp - ref_logp)


def preference_stats(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                     ref_rejected: torch.Tensor, beta: float) -> dict[str, float]:
    """What people read during DPO, under TRL's names: implicit rewards, their accuracy and margin, the log-probs."""
    rc = implicit_reward(policy_chosen.detach(), ref_chosen, beta)  # (B,)
    rr = implicit_reward(policy_rejected.detach(), ref_rejected, beta)
    return {
        "rewards/chosen": float(rc.mean()),
        "rewards/rejected": float(rr.mean()),
        "rewards/accuracies": float((rc > rr).float().mean()),
        "rewards/margins": float((rc - rr).mean()),
        "logps/chosen": float(policy_chosen.detach().mean()),
        "logps/rejected": float(policy_rejected.detach().mean()),
    }


# ---------------------------------------------------------------- 4. measuring a policy: held-out pairs, KL and gold

@torch.no_grad()
def heldout_accuracy(policy, ref, tokenizer, pairs: Sequence[dict], beta: float = 1.0,
                     batch_size: int = 64) -> dict[str, float]:
    """Implicit-reward accuracy on pairs, as `reward_model.evaluate` scores a reward model.

    accuracy: share of pairs with gold_chosen ≠ gold_rejected where r̂ orders the two like the gold (nan if the
    records carry no gold); label_accuracy: share where r̂(chosen) > r̂(rejected), i.e. agreement with the labels;
    chosen_logratio / rejected_logratio: mean log π − log ρ of the chosen / rejected completions (nats)."""
    enc = tokenize_pairs(tokenizer, pairs)
    pad = tokenizer.pad_token_id
    logps = torch.cat([torch.stack(sequence_logps(policy, collate(enc[i:i + batch_size], pad), False)[0].chunk(2), 1)
                       for i in range(0, len(enc), batch_size)])  # (N, 2)
    logratio = logps - reference_logps(ref, enc, pad, batch_size)  # (N, 2) log π − log ρ
    reward = beta * logratio  # r̂ = β·(log π − log ρ), as implicit_reward
    ds = (reward[:, 0] - reward[:, 1]).double()  # r̂(y_w) − r̂(y_l): the per-prompt β·log Z(x) cancels
    out = {"label_accuracy": float((ds > 0).double().mean()), "accuracy": math.nan, "n_untied": 0,
           "chosen_logratio": float(logratio[:, 0].mean()), "rejected_logratio": float(logratio[:, 1].mean())}
    if all("gold_chosen" in r and "gold_rejected" in r for r in pairs):
        dg = torch.tensor([r["gold_chosen"] - r["gold_rejected"] for r in pairs], dtype=torch.float64)
        untied = dg != 0
        out["n_untied"] = int(untied.sum())
        if untied.any():
            out["accuracy"] = float(((ds * dg) > 0)[untied].double().mean())
    return out


def eval_prompts(n: int) -> list[str]:
    """n prompts for measuring a policy: each training prompt in turn, repeated n/32 times in a row (as lesson 08)."""
    from .corpus import PROMPTS

    per = max(1, math.ceil(n / len(PROMPTS)))
    return [p for p in PROMPTS for _ in range(per)][:n]


@torch.no_grad()
def measure_policy(policy, ref, tokenizer, prompts: Sequence[str], seed: int, max_new_tokens: int = 12,
                   gold: Callable[[list[str], list[str]], torch.Tensor] | None = None) -> dict[str, float]:
    """Sample one completion per prompt from π (own generator) and measure what training never does for DPO.

    kl: mean over samples of Σ_t (log π − log ρ), k1 on π's own samples (unbiased for KL(π‖ρ)); gold: mean gold
    score (rlhf_nb.gold: VADER on reviews the corpus grammar accepts, −1 otherwise); well_formed: share accepted."""
    from .gold import GoldReward
    from .policy import sample_with_kl

    device = next(policy.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    ro, kl = sample_with_kl(policy, ref, tokenizer, list(prompts), max_new_tokens, generator=g)  # kl: (B,)
    scores = (gold or GoldReward())(ro.prompts, ro.completions).double()  # (B,)
    return {"kl": float(kl.mean()), "gold": float(scores.mean()), "well_formed": float((scores > -1).double().mean()),
            "completions": ro.completions, "scores": scores.tolist()}


# ---------------------------------------------------------------- 5. the config

@dataclass
class DPOConfig(RunOptions):
    """Everything a DPO run needs; defaults suit the embedded tiny GPT-2 and lesson 08's 1,000 gold-labelled pairs."""

    # flags that may change on --resume (how long and where to run, what to measure); the rest must match the checkpoint
    RESUME_OVERRIDABLE: ClassVar[tuple[str, ...]] = (*RunOptions.RESUME_OVERRIDABLE, "eval_samples", "eval_pairs")

    # --- run (the rest: RunOptions) ---
    seed: int = option(0, "one seed fixes the order of the pairs and the measurement samples", 0, 2**32 - 1)
    threads: int = option(1, "CPU threads for torch; fixed so that printed numbers reproduce", 1, 256)
    epochs: int = option(3, "passes over the pairs; steps = epochs * ceil(pairs / batch_size)", 1, 10_000)
    model: str = option("embedded", "policy and reference: 'embedded' (the kit's tiny GPT-2), a local HF folder, or "
                        "a hub id")

    # --- data ---
    pairs: str = option("proxy-rm-1000", "training pairs: a JSONL file of {prompt, chosen, rejected}, or a folder "
                        "under rlhf_nb/assets with train_pairs.jsonl (lesson 08's proxy-rm-1000: 1,000 gold-labelled "
                        "pairs)")
    eval_pairs: str | None = option("proxy-rm-1000", "held-out pairs scored at each epoch's end (a JSONL file, or an "
                                    "assets folder with eval_pairs.jsonl); none: off", nullable=True)

    # --- objective ---
    loss: str = option("sigmoid", "sigmoid: DPO, -log sigmoid(beta*h); ipo: (h - 1/(2*beta))^2; sft: NLL of the "
                       "chosen", choices=LOSS_CHOICES)
    beta: float = option(0.1, "beta: how hard the policy is held to the reference (IPO's tau)", 0.001, 100.0)

    # --- update ---
    batch_size: int = option(32, "preference pairs per step", 1, 4096)
    learning_rate: float = option(3e-4, "Adam learning rate", 1e-8, 1.0)
    adam_eps: float = option(1e-5, "Adam epsilon", 1e-12, 1e-2)
    max_grad_norm: float = option(1.0, "gradient-norm clip", 0.001, 1000.0)

    # --- measurement (never used for training) ---
    eval_samples: int = option(256, "completions sampled from the policy at each epoch's end to measure KL(pi||ref) "
                               "and the gold score; 0: off", 0, 100_000)
    max_new_tokens: int = option(12, "tokens per measurement sample (lesson 08's pairs and PPO runs use 12)", 1, 4096)

    def __post_init__(self) -> None:
        if isinstance(self.eval_pairs, str) and self.eval_pairs.lower() == "none":
            self.eval_pairs = None  # the CLI's way to say "off"
        super().__post_init__()


def config_from_args(argv: Sequence[str]) -> DPOConfig:
    """Flags -> a validated DPOConfig; with --resume, the checkpoint's config plus the flags that may change.
    A bad flag, value or checkpoint exits with one line naming it (status 2)."""
    return cli_from_dataclass(DPOConfig, argv, DPO.prog, DPO.description)


# ---------------------------------------------------------------- 6. the trainer

@dataclass
class DPOState:
    """Everything a DPO run holds; a checkpoint restores the weights, the optimizer and the step."""

    cfg: DPOConfig
    policy: Any  # PolicyWithValue: its value head is never used; it keeps one checkpoint format for PPO and DPO
    ref: torch.nn.Module
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    encoded: list[Encoded]  # the training pairs as token ids
    ref_logps: torch.Tensor  # (N, 2) log ρ of chosen and rejected, computed once
    eval_pairs: list[dict] | None
    device: torch.device
    step: int = 0

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.encoded) / self.cfg.batch_size)

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * self.steps_per_epoch


def setup(cfg: DPOConfig) -> DPOState:
    """Validate, read and check the pairs, seed, load policy + frozen reference, score the pairs under the reference."""
    from .policy import PolicyWithValue, load_policy, make_reference, model_context_length, pick_device
    from .seeding import seed_everything

    cfg.validate()
    device = pick_device(cfg.device)
    pairs = load_pairs(cfg.pairs, "--pairs", "train")
    eval_pairs = load_pairs(cfg.eval_pairs, "--eval_pairs", "eval") if cfg.eval_pairs else None
    check_fits_context(cfg.model, cfg.max_new_tokens)
    ctx = model_context_length(cfg.model)
    seed_everything(cfg.seed, threads=cfg.threads)
    lm, tokenizer = load_policy(cfg.model, device)
    encoded = tokenize_pairs(tokenizer, pairs, cfg.progress)
    lengths = [len(p) + max(len(c), len(r)) for p, c, r in encoded]
    if max(lengths) > ctx:
        i = lengths.index(max(lengths))
        raise ValueError(f"--pairs: pair {i + 1} is {lengths[i]} tokens long, more than model {cfg.model!r}'s context of {ctx}")
    ref = make_reference(lm)
    policy = PolicyWithValue(lm).to(device).eval()  # dropout off: the same text must get the same log-prob
    optimizer = torch.optim.Adam(policy.lm.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps)
    ref_logps = reference_logps(ref, encoded, tokenizer.pad_token_id, progress=cfg.progress)
    return DPOState(cfg, policy, ref, tokenizer, optimizer, encoded, ref_logps, eval_pairs, device)


def batch_indices(s: DPOState, step: int) -> torch.Tensor:
    """The pairs of 0-based `step`: a fresh permutation per epoch seeded by (seed, epoch), so resuming needs no RNG state."""
    epoch, k = divmod(step, s.steps_per_epoch)
    g = torch.Generator().manual_seed(s.cfg.seed * 100_003 + epoch)
    return torch.randperm(len(s.encoded), generator=g)[k * s.cfg.batch_size:(k + 1) * s.cfg.batch_size]


def dpo_step(s: DPOState) -> dict[str, float]:
    """One gradient step on a minibatch of pairs. Returns the metrics of docs/metrics.md (DPO section)."""
    cfg, t0 = s.cfg, time.perf_counter()
    # 1. the minibatch: B pairs as 2B rows (chosen, then rejected)
    idx = batch_indices(s, s.step)
    batch = collate([s.encoded[i] for i in idx.tolist()], s.tokenizer.pad_token_id)
    B = batch.n_pairs
    # 2. sequence log-probs under the policy; the reference's were computed once, at setup
    logps, entropy = sequence_logps(s.policy, batch)  # (2B,)
    pc, pr = logps[:B], logps[B:]
    rc, rr = s.ref_logps[idx, 0], s.ref_logps[idx, 1]  # (B,)
    # 3. the loss: DPO / IPO on the margin h, or SFT on the chosen tokens alone
    loss = sft_loss(pc, batch.mask[:B].sum()) if cfg.loss == "sft" else dpo_loss(pc, pr, rc, rr, cfg.beta, cfg.loss)
    # 4. one Adam step with the gradient norm clipped
    s.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(s.policy.lm.parameters(), cfg.max_grad_norm)
    s.optimizer.step()
    s.step += 1
    dt = time.perf_counter() - t0
    return {"loss/dpo": float(loss.detach()), **preference_stats(pc, pr, rc, rr, cfg.beta),
            "policy/entropy": float(entropy), "policy/grad_norm": float(grad_norm),
            "time/step_s": dt, "time/tokens_per_s": float(batch.attention_mask.sum()) / max(dt, 1e-9)}


def measurement_seed(seed: int) -> int:
    """The generator seed of every measurement of a run: the same samples' randomness at each epoch and for every
    method run with this seed (lesson 09 measures DPO, SFT and PPO with it), so differences are the policies'."""
    return 10_000 + seed


def epoch_eval(s: DPOState) -> tuple[dict[str, float], dict[str, list]]:
    """End-of-epoch measurements: implicit-reward accuracy on held-out pairs; KL(π‖ρ) and gold on fresh samples."""
    cfg, out, samples = s.cfg, {}, {}
    if s.eval_pairs:
        acc = heldout_accuracy(s.policy, s.ref, s.tokenizer, s.eval_pairs, cfg.beta)
        out.update({"eval/accuracy": acc["accuracy"], "eval/label_accuracy": acc["label_accuracy"]})
    if cfg.eval_samples:
        prompts = eval_prompts(cfg.eval_samples)
        m = measure_policy(s.policy, s.ref, s.tokenizer, prompts, measurement_seed(cfg.seed), cfg.max_new_tokens)
        out.update({"eval/kl": m["kl"], "eval/gold_scores": m["gold"], "eval/well_formed": m["well_formed"]})
        k = len(prompts) // 4  # one sample from each of four prompts
        samples = {key: vals[::k][:4] for key, vals in (("prompts", prompts), ("completions", m["completions"]),
                                                       ("scores", m["scores"]))}
    return out, samples


def resume(s: DPOState, path: str | Path) -> dict[str, Any]:
    """Load weights and optimizer with rlhf_nb.checkpoints' checks (every file read and checked before use)."""
    from .checkpoints import load_checkpoint

    saved = load_checkpoint(path, s.policy, s.optimizer, {}, s.device, DPOConfig, objects=())
    s.step = saved["step"]
    if s.step >= s.total_steps:
        raise ConfigError(f"--epochs: the checkpoint is at step {s.step} and the run has {s.total_steps} steps; "
                          f"nothing is left to train (pass a larger --epochs to continue)")
    return saved


def train_step(s: DPOState) -> tuple[dict[str, float], dict[str, list] | None]:
    """dpo_step, and at each epoch's end the measurements DPO's loss never sees (epoch_eval) with their samples."""
    metrics, samples = dpo_step(s), None
    if s.step % s.steps_per_epoch == 0:
        ev, samples = epoch_eval(s)
        metrics.update(ev)
    return metrics, samples


def save(s: DPOState, path: Path) -> Path:
    """A checkpoint of the weights, the optimizer and the step (rlhf_nb.checkpoints' format, as PPO's)."""
    from .checkpoints import save_checkpoint

    return save_checkpoint(path, s.policy, s.tokenizer, s.optimizer, {}, {"step": s.step, "config": s.cfg.to_dict()})


DPO = Trainer(prog="python -m rlhf_nb.dpo", config=DPOConfig, setup=setup, step=train_step, save=save, resume=resume,
              description="Train a policy on preference pairs with DPO or IPO (or SFT on the chosen completions): no "
                          "reward model, no sampler.",
              shown=(("loss", "loss/dpo"), ("margin", "rewards/margins"), ("acc", "rewards/accuracies")), label="dpo")


def train(cfg: DPOConfig, callback: Callable[[int, dict, dict | None], None] | None = None, write_run: bool = True,
          state: DPOState | None = None) -> RunResult:
    """Run cfg.epochs passes over the pairs (or until --max_minutes or a signal), measuring at each epoch's end, with
    rlhf_nb.run (the run folder, signals, write failures and resume, as for every trainer); callback(step, metrics,
    samples) after each step."""
    return run(DPO, cfg, callback, write_run, state)


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; exit status as every trainer: 0 done, 2 bad input, 74 a write failed, 75 --max_minutes, 128 + N."""
    return run_main(DPO, argv)


if __name__ == "__main__":
    sys.exit(main())
