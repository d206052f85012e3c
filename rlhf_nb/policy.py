"""The policy: load a causal LM, sample completions, score tokens (log-probs, entropy), a value head, a frozen reference."""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ConfigError
from .decoding import keep_kwarg, next_token_logits

EMBEDDED = "embedded"


def _embedded_dir() -> Path:
    return Path(__file__).parent / "assets" / "tiny-gpt2-reviews"


def resolve_model_path(name: str | None) -> str:
    """'embedded' (or None) -> the kit's own model folder; anything else (a folder or a hub id) is passed through."""
    return str(_embedded_dir()) if name in (None, "", EMBEDDED) else str(name)


def _hub_reachable(timeout: float = 2.0) -> bool:
    """One quick TCP connect instead of huggingface_hub's retries (~50 s) on a machine with no network."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def from_pretrained(cls, name: str | None, **kwargs):
    """cls.from_pretrained for 'embedded', a local folder, or a hub id (cache first); one clear line when it fails."""
    path = resolve_model_path(name)
    local = Path(path).is_dir()
    try:
        if local:
            return cls.from_pretrained(path, **kwargs)
        if os.environ.get("HF_HUB_OFFLINE") == "1":  # said outright: huggingface_hub reads the variable once, at
            return cls.from_pretrained(path, local_files_only=True, **kwargs)  # import, and may have missed it
        try:
            return cls.from_pretrained(path, local_files_only=True, **kwargs)  # a filled cache needs no network
        except OSError:
            if not _hub_reachable():
                raise OSError(f"{path!r} is not a local folder, not in the Hugging Face cache, and no hub is reachable")
            return cls.from_pretrained(path, **kwargs)
    except Exception as e:  # safetensors, torch and transformers each raise their own types for a broken folder
        if local:
            why = _diagnose_model_folder(Path(path)) or _first_line(e)
            raise OSError(f"could not load model {name!r}: {why}") from None
        raise OSError(
            f"could not load model {name!r}: {_first_line(e)}. "
            f"A hub id such as 'gpt2' needs a Hugging Face hub (network or a filled cache); "
            f"with no hub, use the embedded default: --model {EMBEDDED} ({_embedded_dir()})."
        ) from None


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def _diagnose_model_folder(path: Path) -> str | None:
    """Why a local model folder does not load, naming the file: a broken safetensors file, or weights whose shapes
    do not fit config.json (transformers' own message only points at a report it logged)."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    shapes = {}
    for f in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(f), "pt") as st:
                shapes.update({k: (f, tuple(st.get_slice(k).get_shape())) for k in st.keys()})
        except Exception as e:
            return f"{f} is not a valid safetensors file, truncated or corrupted ({_first_line(e)})"
    try:
        with torch.device("meta"):  # the model's shapes from config.json, without allocating weights
            want = {k: tuple(v.shape) for k, v in
                    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path)).state_dict().items()}
    except Exception:
        return None
    for k, (f, shape) in shapes.items():
        if k in want and want[k] != shape:
            return (f"{f}: {k} has shape {shape}, but {path / 'config.json'} describes {want[k]} "
                    f"(its n_embd / n_layer / vocab_size do not match the weights)")
    return None


def load_policy(name: str | None = EMBEDDED, device: str | torch.device = "cpu"):
    """Load (model, tokenizer) with the real from_pretrained path; the tokenizer pads on the left and has a pad token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # save_pretrained's shard bar would clutter notebooks and logs
    tokenizer = from_pretrained(AutoTokenizer, name)
    model = from_pretrained(AutoModelForCausalLM, name)
    for n, p in model.named_parameters():  # NaN weights would load fine and crash the first sample
        if not torch.isfinite(p).all():
            raise OSError(f"could not load model {name!r}: {n} holds {int((~torch.isfinite(p)).sum())} NaN/inf value(s)")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:  # e.g. gpt2 ships without one
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    use_fused_gelu(model)
    model.eval()  # dropout off: log-probs of the same tokens must agree between rollout and update
    return model.to(device), tokenizer


def use_fused_gelu(model: nn.Module) -> None:
    """GPT-2's "gelu_new" is 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) written as six element-wise ops; PyTorch's
    gelu(approximate="tanh") is the same function in one kernel (equal to about 1e-7, a rounding difference). Swap it
    in wherever a module uses the six-op version: about 6 % of a step on this CPU. The config is left as it is, so
    a saved model names the activation it was trained with."""
    from transformers.activations import ACT2FN, NewGELUActivation

    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, NewGELUActivation):
                setattr(module, name, ACT2FN["gelu_pytorch_tanh"])


def model_context_length(name: str | None) -> int:
    """Read the model's maximum sequence length from its config alone (cheap: no weights)."""
    from transformers import AutoConfig

    cfg = from_pretrained(AutoConfig, name)
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, key, None)
        if value:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OSError(f"could not load model {name!r}: its config.json has {key} = {value!r}, not a token count")
            return value
    return 1024


def make_reference(model: nn.Module) -> nn.Module:
    """A frozen copy of the initial policy: the anchor of the KL penalty."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


class ValueHead(nn.Module):
    """V(s_t) = w·h_t + b on the policy's last hidden state (a shared trunk, as TRL's original
    AutoModelForCausalLMWithValueHead): one forward pass gives both logits and values, which halves
    the compute on a CPU; the cost is that value-loss gradients also move the trunk (vf_coef keeps that small)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)  # start at V = 0: no made-up value estimates before training
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden).squeeze(-1)  # (B, T, H) -> (B, T)


class PolicyWithValue(nn.Module):
    """A causal LM plus a value head on its last hidden state."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        self.value_head = ValueHead(lm.config.hidden_size if hasattr(lm.config, "hidden_size") else lm.config.n_embd)

    def forward(self, input_ids, attention_mask, logits_to_keep: int = 0):
        """(logits, values); logits_to_keep > 0: logits of the last that many columns only (values of all)."""
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids_from_mask(attention_mask), output_hidden_states=True,
                      **keep_kwarg(self.lm, logits_to_keep))
        return out.logits, self.value_head(out.hidden_states[-1])


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions count real tokens only, so a left-padded prompt starts at position 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class Rollout:
    """Prompts and sampled completions, as token ids and text."""

    query_responses: torch.Tensor  # (B, P + T) left-padded prompt then completion (padded after EOS)
    attention_mask: torch.Tensor  # (B, P + T) 1 on real prompt and completion tokens
    context_length: int  # P: the completion starts at this column
    completion_mask: torch.Tensor  # (B, T) 1 on completion tokens up to and including the first EOS
    prompts: list[str]
    completions: list[str]
    ended_with_eos: torch.Tensor  # (B,) bool

    @property
    def responses(self) -> torch.Tensor:
        return self.query_responses[:, self.context_length:]


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Mask all but the top-k tokens and/or the smallest set with probability mass >= top_p."""
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))
    return logits


def draw(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of probs (B, V) by inverse CDF: the first index whose cumulative probability exceeds u·total,
    u ~ U[0, 1). One uniform number per row, where torch.multinomial draws one exponential per vocabulary entry (about
    20 times slower at this vocabulary, and a third of the rollout). The CDF is summed in float64, so rounding moves
    a token's probability by about 1e-16, not float32's 1e-7; zero-probability tokens (top_k, top_p) are never drawn."""
    cdf = probs.double().cumsum(-1)  # (B, V)
    u = torch.rand(probs.size(0), 1, generator=generator, dtype=torch.float64, device=probs.device)
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1).clamp_(max=probs.size(-1) - 1)


@torch.no_grad()
def sample(model: nn.Module, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float = 1.0,
           top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None) -> Rollout:
    """Sample completions token by token with a KV cache; stop each row at its first EOS."""
    if not prompts:
        raise ValueError("prompts must be a non-empty list of strings")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    lm = model.lm if isinstance(model, PolicyWithValue) else model
    device = next(lm.parameters()).device
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)  # (B, P)
    B, P = ids.shape
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    done = torch.zeros(B, dtype=torch.bool, device=device)
    out_tokens = []
    step_ids, step_mask = ids, mask
    step = next_token_logits(lm, B, P + max_new_tokens)  # one call per new token, KV cache inside
    for _ in range(max_new_tokens):
        logits = _scaled(step(step_ids, step_mask).float(), temperature)  # (B, V): only the last column is sampled
        logits = filter_logits(logits, top_k, top_p)
        tok = draw(logits.softmax(-1), generator)  # (B,)
        tok = torch.where(done, torch.full_like(tok, pad), tok)
        out_tokens.append(tok)
        step_mask = torch.cat([step_mask, (~done).long()[:, None]], dim=1)
        done = done | (tok == eos)
        step_ids = tok[:, None]
        if done.all():
            break
    responses = torch.stack(out_tokens, dim=1)  # (B, T)
    completion_mask = step_mask[:, P:].clone()
    query_responses = torch.cat([ids, responses], dim=1)
    texts = tokenizer.batch_decode(responses.masked_fill(responses == eos, pad), skip_special_tokens=True)
    return Rollout(query_responses, step_mask, P, completion_mask, list(prompts), texts, done.clone())


def forward_tokens(model: nn.Module, rollout_ids: torch.Tensor, attention_mask: torch.Tensor, context_length: int,
                   temperature: float = 1.0, entropy: bool = True, entropy_grad: bool = True,
                   position_ids: bool = True):
    """Per completion token: log π(y_t | x, y_<t), entropy (None if entropy=False), and the value (None without a
    value head).

    Logits are divided by the sampling temperature, the same one used to sample (a classic bug is forgetting it).
    Only the columns that predict a completion token go through the LM head: the prompt's columns predict nothing
    that is scored. entropy=False skips the entropy where nobody reads it (the reference); entropy_grad=False computes
    it without a gradient (it is only logged, no entropy bonus reads it). position_ids=False gives the model none, so
    it reads a left-padded prompt at shifted positions (a classic bug: lesson 10's `no_position_ids` fault)."""
    T = rollout_ids.size(1) - context_length
    lm = model.lm if isinstance(model, PolicyWithValue) else model
    # the token at column t is predicted by the column before it: columns P-1 … P+T-2
    hidden, logits = scored_columns(lm, rollout_ids, attention_mask, T, position_ids)  # (B, T, H), (B, T, V)
    logits = _scaled(logits.float(), temperature)
    targets = rollout_ids[:, context_length:]  # (B, T)
    logp_all = F.log_softmax(logits, dim=-1)  # (B, T, V)
    logprobs = torch.gather(logp_all, -1, targets[..., None]).squeeze(-1)  # (B, T)
    ent = entropy_from_logprobs(logp_all, grad=entropy_grad) if entropy else None  # (B, T)
    values = model.value_head(hidden) if isinstance(model, PolicyWithValue) else None  # V(s_t): where token t is chosen
    return logprobs, ent, values


# models whose logits are lm_head(base model's last hidden state), nothing else (no soft-capping, no scaling)
PLAIN_HEAD_MODELS = ("gpt2", "gpt_neox", "llama", "mistral", "qwen2", "qwen3")


def scored_columns(lm: nn.Module, ids: torch.Tensor, attention_mask: torch.Tensor, T: int, position_ids: bool = True):
    """(hidden, logits) of the T columns before the last, the ones that predict the T completion tokens.

    For the models of PLAIN_HEAD_MODELS the trunk runs once and the LM head reads those T columns only (a contiguous
    (B·T, H) matrix: one plain matrix multiply). Any other model runs its own forward with its hidden states, so a
    model that post-processes its logits (soft-capping, scaling) keeps doing so."""
    # without position ids a model counts 0, 1, 2, … from the first column, padding included
    pos = position_ids_from_mask(attention_mask) if position_ids else torch.arange(ids.size(1), device=ids.device).expand_as(ids)
    if getattr(lm.config, "model_type", None) in PLAIN_HEAD_MODELS:
        hidden = lm.base_model(input_ids=ids, attention_mask=attention_mask, position_ids=pos).last_hidden_state
        hidden = hidden[:, -(T + 1):-1].contiguous()  # (B, T, H)
        return hidden, lm.get_output_embeddings()(hidden)
    out = lm(input_ids=ids, attention_mask=attention_mask, position_ids=pos, output_hidden_states=True)
    return out.hidden_states[-1][:, -(T + 1):-1], out.logits[:, -(T + 1):-1]


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / T; at T = 1 the logits themselves (the same numbers, without a copy and its backward)."""
    return logits if temperature == 1.0 else logits / temperature


@torch.no_grad()
def sample_batched(model: nn.Module, tokenizer, prompts: list[str], max_new_tokens: int, generator: torch.Generator,
                   batch_size: int, temperature: float = 1.0) -> list[str]:
    """One completion per prompt, sampled `batch_size` prompts at a time from one generator (the draws depend on the
    batch size, so a caller that stores numbers keeps its own)."""
    completions: list[str] = []
    for i in range(0, len(prompts), batch_size):
        completions += sample(model, tokenizer, prompts[i:i + batch_size], max_new_tokens, temperature,
                              generator=generator).completions
    return completions


@torch.no_grad()
def sample_with_kl(policy: nn.Module, ref: nn.Module, tokenizer, prompts: list[str], max_new_tokens: int,
                   temperature: float = 1.0, generator: torch.Generator | None = None) -> tuple[Rollout, torch.Tensor]:
    """Sample one completion per prompt from the policy and measure how far it is from the reference:
    (rollout, (B,) Σ_t log π(y_t) − log ρ(y_t)) — k1 on π's own samples, so its mean is unbiased for KL(π‖ρ).
    A measurement: no gradient flows."""
    ro = sample(policy, tokenizer, list(prompts), max_new_tokens, temperature, generator=generator)
    args = (ro.query_responses, ro.attention_mask, ro.context_length, temperature)
    logp, ref_logp = forward_tokens(policy, *args, entropy=False)[0], forward_tokens(ref, *args, entropy=False)[0]
    return ro, ((logp - ref_logp) * ro.completion_mask.float()).sum(1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = logsumexp(z) − Σ softmax(z)·z per position: (B, T, V) -> (B, T)."""
    p = torch.softmax(logits, dim=-1)  # (B, T, V)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(dim=-1)  # (B, T)


def entropy_from_logprobs(logp: torch.Tensor, grad: bool = True) -> torch.Tensor:
    """H = −Σ p·log p from log-probabilities that forward_tokens already has: (B, T, V) -> (B, T).

    grad=False: no gradient through H (when it is only logged, that skips a backward pass through a (B, T, V) term)."""
    with torch.set_grad_enabled(torch.is_grad_enabled() and grad):
        return -(logp.exp() * logp).sum(dim=-1)


LONGEST_PROMPT = 16  # tokens: the kit's prompts are a few words; hub tokenizers may split them into more pieces


def check_fits_context(model: str, max_new_tokens: int) -> None:
    """A prompt and max_new_tokens new tokens must fit the model's context: ConfigError naming --max_new_tokens (or
    --model) otherwise. Reads the model's config only, no weights, so it runs before anything loads."""
    ctx = model_context_length(model)
    if ctx <= LONGEST_PROMPT:
        raise ConfigError(f"--model {model!r} has a context of {ctx} tokens; the kit needs at least "
                          f"{LONGEST_PROMPT + 1} ({LONGEST_PROMPT} for the prompt + 1 new token)")
    if max_new_tokens > ctx - LONGEST_PROMPT:
        raise ConfigError(f"--max_new_tokens must be in [1, {ctx - LONGEST_PROMPT}] for model {model!r} "
                          f"(context {ctx} tokens minus room for the prompt), got {max_new_tokens}")


def pick_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is an error, not a silent fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be one of auto, cpu, cuda; got {device!r}")
    return torch.device(device)
