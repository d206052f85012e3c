"""The embedded tiny GPT-2: loads fast with the documented ids, round-trips text, samples reproducibly."""
from __future__ import annotations

import json
import time

import pytest
import torch

from rlhf_nb.tools.base_model import EMBEDDED_MODEL_DIR, EOS, PAD, load_base_model, sample
from rlhf_nb.corpus import PROMPTS, build_corpus

MAX_PARAMS = 5_000_000


@pytest.fixture(scope="module")
def loaded():
    return load_base_model()


def test_assets_are_in_hugging_face_layout_and_small():
    names = {p.name for p in EMBEDDED_MODEL_DIR.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert sum(p.stat().st_size for p in EMBEDDED_MODEL_DIR.iterdir()) < 20 * 2**20


def test_special_ids_agree_everywhere(loaded):
    model, tok = loaded
    eos, pad = tok.convert_tokens_to_ids(EOS), tok.convert_tokens_to_ids(PAD)
    assert (tok.eos_token, tok.bos_token, tok.pad_token) == (EOS, EOS, PAD) and eos != pad
    assert (tok.eos_token_id, tok.bos_token_id, tok.pad_token_id) == (eos, eos, pad)
    assert tok.padding_side == "left"
    for cfg in (json.loads((EMBEDDED_MODEL_DIR / f).read_text()) for f in ("config.json", "generation_config.json")):
        assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (eos, eos, pad)
    assert (model.config.eos_token_id, model.config.pad_token_id) == (eos, pad)


def test_architecture_and_size(loaded):
    model, tok = loaded
    c = model.config
    assert (c.model_type, c.n_layer, c.n_embd, c.n_head, c.n_positions) == ("gpt2", 4, 128, 4, 64)
    assert c.vocab_size == len(tok)
    assert (c.resid_pdrop, c.embd_pdrop, c.attn_pdrop) == (0.0, 0.0, 0.0)  # PPO needs repeatable logprobs
    assert sum(p.numel() for p in model.parameters()) < MAX_PARAMS
    assert not model.training


def test_tokenizer_round_trip_without_bos(loaded):
    _, tok = loaded
    for s in build_corpus(60, seed=7) + PROMPTS + ["Ünïcode, émoji 🎬 and 123 digits!"]:
        ids = tok(s)["input_ids"]
        assert ids[0] != tok.eos_token_id  # GPT-2 style: nothing prepended
        assert tok.decode(ids) == s


def test_loads_in_under_two_seconds():
    load_base_model()  # imports and file cache warm
    t0 = time.time()
    load_base_model()
    assert time.time() - t0 < 2.0


def test_sampling_is_reproducible_under_a_seed(loaded):
    model, tok = loaded
    prompts = PROMPTS[:6]
    a, b = sample(model, tok, prompts, seed=123), sample(model, tok, prompts, seed=123)
    assert a == b and len(a) == 6 and all(isinstance(x, str) for x in a)
    torch.manual_seed(9)
    enc = tok(prompts, return_tensors="pt", padding=True)
    x = model.generate(**enc, do_sample=True, max_new_tokens=8)
    torch.manual_seed(9)
    assert torch.equal(x, model.generate(**enc, do_sample=True, max_new_tokens=8))


def test_left_padding_does_not_change_greedy_continuations(loaded):
    model, tok = loaded
    prompts = ["The acting was", "I have to say the", "This film"]
    batch = tok(prompts, return_tensors="pt", padding=True)
    together = model.generate(**batch, do_sample=False, max_new_tokens=10)[:, batch["input_ids"].shape[1] :]
    for p, row in zip(prompts, tok.batch_decode(together, skip_special_tokens=True)):
        alone = model.generate(**tok(p, return_tensors="pt"), do_sample=False, max_new_tokens=10)
        assert row == tok.decode(alone[0, len(tok(p)["input_ids"]) :], skip_special_tokens=True)


def test_greedy_continuation_is_a_finished_sentence(loaded):
    model, tok = loaded
    enc = tok("The acting was", return_tensors="pt")
    out = model.generate(**enc, do_sample=False, max_new_tokens=16)[0, enc["input_ids"].shape[1] :]
    assert tok.eos_token_id in out.tolist()  # it learned to stop
    assert tok.decode(out, skip_special_tokens=True).rstrip().endswith((".", "!"))


@pytest.mark.parametrize("argv, msg", [(["--steps", "0"], "--steps must be in [1, 1e+06], got 0"),
                                       (["--steps", "-5"], "--steps must be in"),
                                       (["--out", "{file}"], "--out must be a folder"),
                                       (["--report", "--out", "{tmp}"], "--report: no model at"),
                                       (["--report", "--n", "0"], "--n must be in [1, 100000], got 0"),
                                       (["--n_head", "3"], "--n_embd must be a multiple of --n_head"),
                                       (["--vocab_size", "10"], "--vocab_size must be in")])
def test_bad_flags_are_refused_before_any_work_and_write_nothing(argv, msg, tmp_path, capsys):
    from rlhf_nb.tools import base_model
    (tmp_path / "f.txt").write_text("x")
    committed = {p.name: p.stat().st_mtime_ns for p in base_model.EMBEDDED_MODEL_DIR.iterdir()}
    with pytest.raises(SystemExit) as e:
        base_model.main([a.format(file=tmp_path / "f.txt", tmp=tmp_path) for a in argv])
    assert e.value.code == 2 and msg in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in base_model.EMBEDDED_MODEL_DIR.iterdir()} == committed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_a_saved_folder_is_swapped_in_whole(tmp_path):
    from rlhf_nb.checkpoints import write_folder_atomically
    out = tmp_path / "model"
    write_folder_atomically(out, lambda d: (d / "a").write_text("1"))
    write_folder_atomically(out, lambda d: (d / "b").write_text("2"))
    assert sorted(p.name for p in out.iterdir()) == ["b"] and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with pytest.raises(RuntimeError):  # a write that fails leaves the old folder as it was
        write_folder_atomically(out, lambda d: (_ for _ in ()).throw(RuntimeError("disk full")))
    assert sorted(p.name for p in out.iterdir()) == ["b"] and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
