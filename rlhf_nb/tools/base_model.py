"""The kit's policy: a tiny GPT-2 trained from scratch on the synthetic review corpus, shipped in assets/.

Rebuild it:   python -m rlhf_nb.tools.base_model [--out DIR] [--seed 0] [--steps 3000] ...  (every BaseModelArgs field)
Check it:     python -m rlhf_nb.tools.base_model --report [--n 256]
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from ..cli import cli_from_dataclass
from ..checkpoints import write_folder_atomically
from ..config import ConfigError, Options, check_output_writable, check_overwrite, option
from ..corpus import build_corpus, get_prompts, matches_template

EMBEDDED_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "tiny-gpt2-reviews"
EOS, PAD = "<|endoftext|>", "<|pad|>"


@dataclass
class BaseModelArgs(Options):
    """How the embedded base model is built; the defaults made the committed assets."""

    seed: int = option(0, "seeds the corpus, the init and the batch order (and --report's prompts and samples)",
                       0, 2**32 - 1)
    n_sentences: int = option(40_000, "corpus size (a third each positive / negative / neutral)", 100, 10_000_000)
    vocab_size: int = option(2048, "BPE vocabulary target, special tokens included (the 256 bytes come first)",
                             260, 100_000)
    n_layer: int = option(4, "transformer blocks", 1, 48)
    n_embd: int = option(128, "width (a multiple of --n_head)", 8, 4096)
    n_head: int = option(4, "attention heads", 1, 64)
    n_positions: int = option(64, "context length; prompt + 16 new tokens fits with room to spare", 32, 4096)
    steps: int = option(3000, "optimizer steps", 1, 1_000_000)
    batch_size: int = option(64, "sentences per step", 1, 4096)
    lr: float = option(3e-3, "peak AdamW learning rate (tiny models like it high)", 1e-6, 1.0)
    warmup: int = option(100, "linear warmup steps before the cosine decay (down to 10 percent of --lr)", 0, 1_000_000)
    weight_decay: float = option(0.1, "AdamW weight decay on matrices only", 0.0, 10.0)
    threads: int = option(2, "torch CPU threads", 1, 256)

    def validate(self):
        super().validate()
        if self.n_embd % self.n_head:
            raise ConfigError(f"--n_embd must be a multiple of --n_head ({self.n_head}), got {self.n_embd}")
        return self

    def model_args(self) -> "BaseModelArgs":
        """Just the recipe of the model (a BaseModelOptions without its command-line extras)."""
        return BaseModelArgs(**{f.name: getattr(self, f.name) for f in fields(BaseModelArgs)})


@dataclass
class BaseModelOptions(BaseModelArgs):
    """`python -m rlhf_nb.tools.base_model`: the recipe (BaseModelArgs), where the model goes, and --report."""

    out: str = option(str(EMBEDDED_MODEL_DIR), "the model folder: written by a build (replaced whole), read by --report")
    overwrite: bool = option(False, "replace a model folder that is a committed asset (the default --out): without "
                             "it, building over rlhf_nb/assets is refused before any work")
    report: bool = option(False, "print quality numbers of the model at --out, no training")
    n: int = option(256, "samples for --report", 1, 100_000)


def check_options(o: BaseModelOptions) -> None:
    """Every refusal comes before any work: a typo must never cost minutes, or overwrite the committed model."""
    out = Path(o.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out must be a folder, got the file {out}")
    if o.report:
        if not (out / "config.json").is_file():
            raise ConfigError(f"--report: no model at {out} (no config.json); build one with --out {out}")
    else:
        check_overwrite(out, o.overwrite, "--out")
        check_output_writable(out)


def train_tokenizer(sentences: list[str], vocab_size: int, max_length: int = 64):
    """Byte-level BPE (GPT-2 style, no prefix space, no bos added) wrapped as a GPT2TokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(sentences, trainer=trainer)
    # left padding: generate() appends to the right end of every row, so the prompts must end there
    return GPT2TokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=PAD, padding_side="left",
        model_max_length=max_length,
    )


def make_model(args: BaseModelArgs, tokenizer):
    """A fresh GPT2LMHeadModel whose special ids match `tokenizer`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=args.n_positions, n_embd=args.n_embd, n_layer=args.n_layer,
        n_head=args.n_head, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # no dropout: PPO compares logprobs of the same tokens across passes, and dropout would make them differ
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def build_base_model(args: BaseModelArgs, out: str | Path) -> dict:
    """Build corpus, tokenizer and model, train, save in Hugging Face layout to `out`; returns a summary dict."""
    from transformers import GenerationConfig
    from transformers.utils import logging

    logging.set_verbosity_error()  # a fresh GPT2Config would warn about its unset loss_type
    t0 = time.time()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    sentences = build_corpus(args.n_sentences, args.seed)
    tokenizer = train_tokenizer(sentences, args.vocab_size, args.n_positions)
    ids = [tokenizer(s)["input_ids"][: args.n_positions - 1] + [tokenizer.eos_token_id] for s in sentences]
    model = make_model(args, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"corpus {len(sentences)} sentences, vocab {len(tokenizer)}, params {n_params:,}")

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95),
    )  # fmt: skip

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))  # cosine down to 10%

    g = torch.Generator().manual_seed(args.seed)
    order, pos = torch.randperm(len(ids), generator=g), 0
    model.train()
    for step in range(args.steps):
        # 1. next batch of whole sentences, right-padded; pads get label -100 so they carry no loss
        if pos + args.batch_size > len(ids):
            order, pos = torch.randperm(len(ids), generator=g), 0
        batch = [ids[i] for i in order[pos : pos + args.batch_size].tolist()]
        pos += args.batch_size
        T = max(len(b) for b in batch)
        x = torch.full((len(batch), T), tokenizer.pad_token_id)  # (B, T)
        for i, b in enumerate(batch):
            x[i, : len(b)] = torch.tensor(b)
        mask = (x != tokenizer.pad_token_id).long()
        labels = x.masked_fill(mask == 0, -100)
        # 2. next-token loss (the model shifts labels itself); eos is a label, so the model learns to stop
        loss = model(input_ids=x, attention_mask=mask, labels=labels).loss
        # 3. step
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  lr {lr_at(step):.2e}  {time.time() - t0:6.1f}s", flush=True)

    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        do_sample=True, top_k=0, temperature=1.0, max_new_tokens=16,
    )  # fmt: skip
    write_folder_atomically(out, lambda d: (model.save_pretrained(d), tokenizer.save_pretrained(d)))
    summary = {"params": n_params, "vocab": len(tokenizer), "final_loss": loss.item(), "wall_s": time.time() - t0}
    print(summary | {"args": asdict(args.model_args())})
    return summary


def load_base_model(path: str | Path = EMBEDDED_MODEL_DIR):
    """(model, tokenizer) from `path`, model in eval mode, quiet transformers: `policy.load_policy` on a folder."""
    from ..policy import load_policy

    return load_policy(str(path))


@torch.no_grad()
def sample(model, tokenizer, prompts: list[str], max_new_tokens: int = 16, seed: int = 0) -> list[str]:
    """Pure-sampling continuations (temperature 1, top_k 0) of `prompts`, eos and pads stripped."""
    torch.manual_seed(seed)
    enc = tokenizer(prompts, return_tensors="pt", padding=True)  # left-padded
    out = model.generate(**enc, do_sample=True, top_k=0, temperature=1.0, max_new_tokens=max_new_tokens)
    return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def quality_report(n: int = 256, seed: int = 0, path: str | Path = EMBEDDED_MODEL_DIR) -> dict:
    """Print and return load time, VADER compound of prompt+completion over `n` samples, and 20 samples."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    load_base_model(path)  # warm the import and file caches so the timing below is the load itself
    t0 = time.time()
    model, tokenizer = load_base_model(path)
    load_s = time.time() - t0
    prompts = get_prompts(n, seed)
    t0 = time.time()
    completions = sample(model, tokenizer, prompts, seed=seed)
    gen_s = time.time() - t0
    sia = SentimentIntensityAnalyzer()
    full = [sia.polarity_scores(p + c)["compound"] for p, c in zip(prompts, completions)]
    comp = [sia.polarity_scores(c)["compound"] for c in completions]
    stops = sum(c.rstrip().endswith((".", "!")) for c in completions)
    # strict grammar proxy: the whole text is a sentence some corpus template could produce
    parsed = sum(matches_template((p + c).strip()) for p, c in zip(prompts, completions))
    r = {
        "n": n, "load_s": round(load_s, 3), "generate_s": round(gen_s, 2),
        "compound_mean": round(statistics.mean(full), 4), "compound_std": round(statistics.pstdev(full), 4),
        "completion_only_mean": round(statistics.mean(comp), 4), "completion_only_std": round(statistics.pstdev(comp), 4),
        "frac_pos": round(sum(c >= 0.05 for c in full) / n, 3), "frac_neg": round(sum(c <= -0.05 for c in full) / n, 3),
        "frac_finished": round(stops / n, 3), "frac_template": round(parsed / n, 3),
    }  # fmt: skip
    for k, v in r.items():
        print(f"{k:22s} {v}")
    for p, c, s in list(zip(prompts, completions, full))[:20]:
        print(f"{s:+.3f}  {p}|{c}")
    return r


def main(argv: list[str] | None = None) -> None:
    o = cli_from_dataclass(BaseModelOptions, argv, prog="python -m rlhf_nb.tools.base_model", description=__doc__,
                           check=check_options)
    if o.report:
        quality_report(o.n, o.seed, o.out)
    else:
        build_base_model(o.model_args(), o.out)


if __name__ == "__main__":
    main()
