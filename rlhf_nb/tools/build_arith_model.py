"""Lesson 12's policy: a tiny GPT-2 that has only half learned to add two numbers below 100, shipped in assets/.

It is trained BRIEFLY on the train split's sums (rlhf_nb.tasks.arith_split; the held-out prompts are never seen), so
its pass@1 is middling and its pass@k much higher: RL from the checker has room. Byte-level tokenizer with no merges:
every character is one token. Deterministic on CPU for a given --seed.

    python -m rlhf_nb.tools.build_arith_model [--out DIR] [--steps N] ...   (make arith-model; about a CPU minute)
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..checkpoints import write_folder_atomically
from ..cli import cli_from_dataclass
from ..config import ConfigError, Options, check_output_writable, check_overwrite, option
from ..tasks import ARITH_MODEL_DIR, answer_of, arith_split
from .base_model import BaseModelArgs, make_model, train_tokenizer


@dataclass
class ArithModelOptions(Options):
    """How the arithmetic model is built; the defaults made the committed asset."""

    seed: int = option(0, "seeds the init and the batches", 0, 2**32 - 1)
    n_layer: int = option(2, "transformer blocks", 1, 48)
    n_embd: int = option(64, "width (a multiple of --n_head)", 8, 4096)
    n_head: int = option(4, "attention heads", 1, 64)
    steps: int = option(530, "optimizer steps: few on purpose, so the model is half-trained", 1, 1_000_000)
    batch_size: int = option(64, "sums per step", 1, 4096)
    lr: float = option(3e-3, "AdamW learning rate (cosine to 10 percent after 30 warm-up steps)", 1e-6, 1.0)
    threads: int = option(1, "torch CPU threads", 1, 256)
    out: str = option(str(ARITH_MODEL_DIR), "the model folder (replaced whole)")
    overwrite: bool = option(False, "replace the committed asset (the default --out); without it the build is refused "
                             "before any work")

    def validate(self):
        super().validate()
        if self.n_embd % self.n_head:
            raise ConfigError(f"--n_embd must be a multiple of --n_head ({self.n_head}), got {self.n_embd}")
        return self


def check_options(o: ArithModelOptions) -> None:
    out = Path(o.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out must be a folder, got the file {out}")
    check_overwrite(out, o.overwrite, "--out")
    check_output_writable(out)


def build(o: ArithModelOptions) -> dict:
    """Tokenizer (bytes only), model, SFT on prompt -> answer + EOS (loss on the answer and EOS), saved to o.out."""
    from transformers import GenerationConfig
    from transformers.utils import logging

    logging.set_verbosity_error()
    t0 = time.time()
    torch.manual_seed(o.seed)
    torch.set_num_threads(o.threads)
    train, _ = arith_split()
    tokenizer = train_tokenizer(["0123456789+="], vocab_size=258, max_length=32)  # 256 bytes + EOS + PAD: no merges
    args = BaseModelArgs(n_layer=o.n_layer, n_embd=o.n_embd, n_head=o.n_head, n_positions=32)  # vocab: len(tokenizer)
    model = make_model(args, tokenizer)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=(0.9, 0.95), weight_decay=0.0)
    g = torch.Generator().manual_seed(o.seed)
    model.train()
    for step in range(o.steps):
        idx = torch.randint(len(train), (o.batch_size,), generator=g).tolist()
        rows = []
        for i in idx:
            p = tokenizer(train[i])["input_ids"]
            a = tokenizer(answer_of(train[i]))["input_ids"] + [eos]
            rows.append((p + a, len(p)))
        T = max(len(r) for r, _ in rows)
        x = torch.full((len(rows), T), pad)
        labels = torch.full((len(rows), T), -100)
        for j, (r, n_prompt) in enumerate(rows):  # right-padded; only the answer and EOS are labels
            x[j, : len(r)] = torch.tensor(r)
            labels[j, n_prompt : len(r)] = torch.tensor(r[n_prompt:])
        loss = model(input_ids=x, attention_mask=(x != pad).long(), labels=labels).loss
        frac = max(0.0, step - 30) / max(1, o.steps - 30)
        for group in opt.param_groups:
            group["lr"] = o.lr * min(1.0, (step + 1) / 30) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == o.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.time() - t0:6.1f}s", flush=True)
    model.eval()
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=pad, do_sample=True,
                                               top_k=0, temperature=1.0, max_new_tokens=6)
    write_folder_atomically(o.out, lambda d: (model.save_pretrained(d), tokenizer.save_pretrained(d)))
    summary = {"params": sum(p.numel() for p in model.parameters()), "final_loss": round(loss.item(), 4),
               "wall_s": round(time.time() - t0, 1)}
    print(summary | {"args": asdict(o)})
    return summary


def main(argv: list[str] | None = None) -> dict:
    o = cli_from_dataclass(ArithModelOptions, argv, prog="python -m rlhf_nb.tools.build_arith_model",
                           description=__doc__.split("\n\n")[0], check=check_options)
    return build(o)


if __name__ == "__main__":
    main()
