import contextlib
import json
import os
import platform

import pytest
import torch

from common import Runtime, accumulate_gradients, clip_and_step, configure_optimizer, get_lr, keep_freed_memory, \
    parse_config, setup
from conftest import TINY_MODEL, run
from model import GPT, GPTConfig
from pretrain import Config

TINY = TINY_MODEL + ["--batch_size=4", "--eval_iters=2", "--log_interval=1", "--warmup_iters=2"]


def cpu_runtime():
    import contextlib
    return Runtime("cpu", "cpu", 0, 1, False, True, contextlib.nullcontext())


def test_grad_accumulation_equals_one_big_batch_with_uneven_masks():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=32, n_layer=1, n_head=2, n_embd=16))
    x = torch.randint(0, 32, (4, 16))
    y = torch.randint(0, 32, (4, 16))
    y[0, :14] = -1   # 2 targets
    y[1] = -1        # none at all
    y[3, :4] = -1    # 12 targets; row 2 has 16
    _, loss = model(x, y)
    loss.backward()
    big = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    micro = [(x[i:i + 1], y[i:i + 1]) for i in range(4)]
    acc_loss = accumulate_gradients(model, micro, cpu_runtime())
    assert acc_loss == pytest.approx(loss.item(), rel=1e-5)
    for a, b in zip(big, (p.grad for p in model.parameters())):
        assert torch.allclose(a, b, atol=1e-6)

    # the example discriminates: nanoGPT's per-micro-batch mean (loss / grad_accum) gives another gradient
    model.zero_grad()
    for xi, yi in micro:
        (model(xi, yi)[1] / 4).backward()
    assert not all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(big, model.parameters()))


def test_auto_precision_is_bf16_only_on_a_cpu_that_multiplies_bf16_natively(monkeypatch):
    """Elsewhere bf16 is emulated, slower than fp32: auto keeps fp32 there. No loss scaler for either."""
    for caps, dtype in (({"avx512_bf16": True}, "bfloat16"), ({"amx_bf16": True}, "bfloat16"),
                        ({"avx512_bf16": False, "avx2": True}, "float32"), ({}, "float32")):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda caps=caps: caps)
        rt = setup("cpu", "auto")
        assert rt.dtype == dtype and not rt.scaler.is_enabled(), caps
        assert isinstance(rt.autocast, contextlib.nullcontext) == (dtype == "float32")
    assert setup("cpu", "float32").dtype == "float32"  # an explicit choice stands
    monkeypatch.delattr(torch.cpu, "get_capabilities")  # an older torch cannot tell: fp32, as before
    assert setup("cpu", "auto").dtype == "float32"


def test_on_a_cpu_freed_memory_is_kept_for_the_next_tensor():
    """After setup on a CPU a freed 64 MiB block is reused: glibc would unmap it and fault its 16384 pages in
    again on every allocation (a large batch's attention scores; docs/experiments.md "Freed memory"). Without
    glibc (macOS, Windows, musl's Linux) there is nothing to set, and keep_freed_memory says so."""
    setup("cpu", "float32")
    if platform.libc_ver()[0] != "glibc":
        assert keep_freed_memory() is False
        return
    import resource  # Unix only
    faults = []
    for _ in range(10):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        x = torch.ones(16 << 20)  # 64 MiB, every page written
        del x
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    assert sum(faults[5:]) < 1000, faults  # the first rounds grow the heap to hold it; then no page is new
    assert keep_freed_memory() is True  # glibc took both thresholds


def test_fp16_loss_scaling_unscales_before_the_step_and_skips_an_overflowed_one(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=32, n_layer=1, n_head=2, n_embd=16))
    x, y = torch.randint(0, 32, (4, 16)), torch.randint(0, 32, (4, 16))
    accumulate_gradients(model, [(x, y)], cpu_runtime())
    fp32_norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    model.zero_grad()
    rt = setup("cpu", "float16")
    assert rt.dtype == "float16" and rt.scaler.is_enabled() and not cpu_runtime().scaler.is_enabled()
    opt = configure_optimizer(model, 1e-3, 0.0, (0.9, 0.95), "cpu")
    loss = accumulate_gradients(model, [(x, y)], rt)  # fp16 autocast, backward through the loss times 2^16
    grads = [p.grad for p in model.parameters()]
    assert torch.cat([g.flatten() for g in grads]).norm() > 1000 * fp32_norm  # scaled
    before = [p.detach().clone() for p in model.parameters()]
    clip_and_step(model, opt, rt, 0.0, loss, 0, tmp_path)
    norm = torch.cat([g.flatten() for g in grads]).norm()  # unscaled in place before the step
    assert abs(norm / fp32_norm - 1) < 0.05 and not all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    # an overflowed gradient: the scaler skips the step and halves the scale; the run goes on
    opt.zero_grad()
    loss = accumulate_gradients(model, [(x, y)], rt)
    next(model.parameters()).grad[0, 0] = float("inf")
    scale, before = rt.scaler.get_scale(), [p.detach().clone() for p in model.parameters()]
    clip_and_step(model, opt, rt, 1.0, loss, 1, tmp_path)
    assert rt.scaler.get_scale() == scale / 2 and all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    # in fp32 the same gradient stops the run before the update
    with pytest.raises(SystemExit, match="gradient norm is (inf|nan) at step 1: stopped before the update"):
        clip_and_step(model, opt, cpu_runtime(), 1.0, loss, 1, tmp_path)


def test_lr_schedule_warms_up_then_decays_to_min():
    lrs = [get_lr(s, 1.0, 0.1, 10, 100) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[100] == lrs[119] == 0.1 and lrs[55] == pytest.approx(0.55)


def test_unknown_config_field_lists_the_valid_ones():
    with pytest.raises(SystemExit, match="unknown option.*--learnig_rate.*valid options: --data_dir"):
        parse_config(Config, ["--learnig_rate=1"])
    assert parse_config(Config, ["--compile=true", "--max_iters", "7"]).max_iters == 7


def test_a_config_file_sets_fields_and_flags_still_override(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"max_iters": 9, "block_size": 64}))
    cfg = parse_config(Config, [f"--config={tmp_path / 'r.json'}", "--max_iters=3", "--resume"])
    assert (cfg.max_iters, cfg.block_size, cfg.resume) == (3, 64, True)
    (tmp_path / "bad.json").write_text(json.dumps({"max_iter": 9}))
    with pytest.raises(SystemExit, match="unknown field.*max_iter.*valid fields"):
        parse_config(Config, [f"--config={tmp_path / 'bad.json'}"])


def weights(path):
    return torch.load(os.path.join(path, "ckpt.pt"), weights_only=False)["model"]


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(pycode, tmp_path):
    common = ["pretrain.py", f"--data_dir={pycode}", *TINY, "--lr_decay_iters=6", "--eval_interval=3",
              "--dropout=0.1"]  # dropout on, so the RNG state must be restored too
    run(*common, "--max_iters=6", f"--out_dir={tmp_path / 'straight'}")
    run(*common, "--max_iters=3", f"--out_dir={tmp_path / 'resumed'}")
    assert torch.load(tmp_path / "resumed" / "ckpt.pt", weights_only=False)["step"] == 3
    run(*common, "--max_iters=6", "--resume", f"--out_dir={tmp_path / 'resumed'}")
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in open(tmp_path / "resumed" / "log.jsonl")]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(pycode, tmp_path):
    out = tmp_path / "run"
    common = ["pretrain.py", f"--data_dir={pycode}", *TINY, f"--out_dir={out}", "--eval_interval=2"]
    run(*common, "--max_iters=2")
    before = (out / "ckpt.pt").read_bytes()
    # a learning rate of 1e30 makes the weights blow up in the first update after resuming (step 2 -> 3)
    proc = run(*common, "--max_iters=8", "--resume", "--learning_rate=1e30", "--min_lr=1e30", "--grad_clip=0",
               check=False)
    assert proc.returncode != 0
    assert "loss is nan at step 3" in proc.stderr and "last good weights" in proc.stderr
    assert (out / "ckpt.pt").read_bytes() == before  # the step-2 checkpoint, untouched


def test_missing_data_says_which_prepare_to_run(tmp_path):
    proc = run("pretrain.py", f"--data_dir={tmp_path}/nowhere", check=False)
    assert proc.returncode != 0 and "train.bin not found" in proc.stderr and "prepare.py" in proc.stderr


def test_unknown_preset_lists_the_valid_ones(pycode, tmp_path):
    proc = run("pretrain.py", f"--data_dir={pycode}", "--preset=gpt9", f"--out_dir={tmp_path}", check=False)
    assert proc.returncode != 0 and "valid presets: gpt2" in proc.stderr
    assert not os.path.exists(tmp_path / "ckpt.pt")


def test_end_to_end_prepare_pretrain_sample(pycode, tmp_path):
    meta = json.load(open(os.path.join(pycode, "meta.json")))
    assert meta["tokenizer"] == "bytes" and meta["train"]["files"] > 0 and meta["val"]["files"] > 0
    out = tmp_path / "pt"
    proc = run("pretrain.py", f"--data_dir={pycode}", *TINY, "--max_iters=30", "--eval_interval=30",
               "--learning_rate=1e-2", f"--out_dir={out}")
    log = [json.loads(line) for line in open(out / "log.jsonl")]
    vals = [r["val_loss"] for r in log if "val_loss" in r]
    assert vals[-1] < vals[0] - 1.0, vals  # it learns: from ~ln(320) = 5.8 down by more than a nat
    assert "eta" in proc.stdout and "tok_per_s" in proc.stdout

    proc = run("sample.py", f"--ckpt={out}", "--prompt=def ", "--max_new_tokens=20", "--num_samples=2")
    assert proc.stdout.startswith("def ") and proc.stdout.count("-" * 80) == 1

    long_prompt = "x = 1\n" * 20  # 120 bytes > context 32 - 20 new tokens
    proc = run("sample.py", f"--ckpt={out}", f"--prompt={long_prompt}", "--max_new_tokens=20")
    assert "keeping the last 16" in proc.stderr

    proc = run("sample.py", f"--ckpt={out}", "--chat", "--system=Be brief.", "--max_new_tokens=8",
               stdin="hello\nwhat now?\n" + "a much longer question that cannot possibly fit\n")
    assert proc.stdout.count("assistant> ") == 3 and "user> what now?" in proc.stdout


def test_sample_refuses_a_checkpoint_that_is_not_a_language_model(tmp_path):
    torch.save({"stage": "reward", "model": {}, "tokenizer": "bytes"}, tmp_path / "ckpt.pt")
    proc = run("sample.py", f"--ckpt={tmp_path}", check=False)
    assert proc.returncode != 0 and "is a 'reward' checkpoint" in proc.stderr
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    proc = run("sample.py", f"--ckpt={tmp_path / 'junk.pt'}", check=False)
    assert proc.returncode != 0 and "not a readable checkpoint" in proc.stderr
