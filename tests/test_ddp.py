"""torchrun: two processes (gloo on the CPU) reach the weights one process reaches with the same global batch, and
PPO runs end to end on two ranks; a rank ends in common.cleanup, before the interpreter's teardown. Also: a compiled
model's checkpoint loads into a plain one. In float32 where a test compares weights exactly: with bf16 (auto's choice
on CPUs with bf16 units) a sum depends on the shape of the batch it is computed in."""
import os
import subprocess
import sys

import torch

from conftest import ROOT, TINY_MODEL, lines_that_fit, read, run
from test_ppo import tiny_checkpoints
from test_reward import synthetic_comparisons


def torchrun(*args, env=None):
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})})
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def weights(path):
    return torch.load(os.path.join(path, "ckpt.pt"), weights_only=False)["model"]


def assert_same(a, b):
    """The same weights, but for the key third of each c_attn.bias: its true gradient is 0 (q . b_k is the same for
    every key of a query, and softmax cancels it), so it gets rounding alone, which Adam's normalisation turns into
    steps of up to lr, different for every summation order (the ranks run one thread, this process two)."""
    no_key_bias = lambda v: torch.cat([v[:len(v) // 3], v[2 * len(v) // 3:]])
    for k in a:
        x, y = (no_key_bias(a[k]), no_key_bias(b[k])) if k.endswith("c_attn.bias") else (a[k], b[k])
        assert torch.allclose(x, y, atol=1e-5), (k, (x - y).abs().max())


def test_pretrain_two_ranks_equal_one_process_with_the_same_global_batch(pycode, tmp_path):
    common = ["pretrain.py", f"--data_dir={pycode}", *TINY_MODEL, "--max_iters=4", "--eval_interval=4",
              "--eval_iters=1", "--warmup_iters=1", "--batch_size=4"]
    torchrun(*common, f"--out_dir={tmp_path / 'ddp'}")
    run(*common, "--grad_accum=2", f"--out_dir={tmp_path / 'one'}")
    assert_same(weights(tmp_path / "ddp"), weights(tmp_path / "one"))


def test_sft_two_ranks_equal_one_process_with_the_same_global_batch(world, tiny_pt, tmp_path):
    pt = tiny_pt
    # dropout 0: two ranks draw their dropout masks from other streams than one process does
    common = ["sft.py", f"--data_dir={world}", f"--init_from={pt}", "--epochs=1", "--batch_size=8", "--grad_accum=1",
              "--dropout=0", "--eval_interval=1000", "--learning_rate=3e-3", "--dtype=float32", "--tail_average=0.5"]
    sft_data = tmp_path / "small"  # the first 64 demonstrations that fit tiny_pt's context of 160: 4 steps of 16
    sft_data.mkdir()
    for name in ("sft_train.jsonl", "sft_val.jsonl"):
        (sft_data / name).write_text(lines_that_fit(world / name, 64))
    (sft_data / "meta.json").write_text(open(world / "meta.json").read())
    common[1] = f"--data_dir={sft_data}"
    torchrun(*common, f"--out_dir={tmp_path / 'ddp'}")
    run(*common, "--grad_accum=2", f"--out_dir={tmp_path / 'one'}")
    assert_same(weights(tmp_path / "ddp"), weights(tmp_path / "one"))  # the mean of the last 2 steps (sft.py 9)
    ddp, one = (torch.load(tmp_path / d / "ckpt.pt", weights_only=False) for d in ("ddp", "one"))
    assert ddp["step"] == one["step"] == 4 and ddp["n_averaged"] == one["n_averaged"] == 2
    assert_same(ddp["trained_model"], one["trained_model"])


def test_reward_two_ranks_equal_one_process_with_the_same_global_batch(world, tiny_pt, tmp_path):
    """Each rank forwards its prompts' answers in two halves before one backward (reward.batch_scores)."""
    data = tmp_path / "data"
    synthetic_comparisons(world, data)
    for name in ("prefs_train.jsonl", "prefs_val.jsonl"):  # 4 steps of 4 prompts, 8 to validate on
        (data / name).write_text("".join(open(data / name).readlines()[:16 if "train" in name else 8]))
    common = ["reward.py", f"--data_dir={data}", f"--init_from={tiny_pt}", "--epochs=1", "--learning_rate=3e-3",
              "--warmup_iters=1", "--norm_prompts=4", "--norm_max_new_tokens=6", "--dtype=float32"]
    torchrun(*common, "--batch_prompts=2", f"--out_dir={tmp_path / 'ddp'}")
    run(*common, "--batch_prompts=4", f"--out_dir={tmp_path / 'one'}")
    ddp, one = weights(tmp_path / "ddp"), weights(tmp_path / "one")
    # the loss sees only differences of scores, so the two parameters that add a constant to every score (ln_f's
    # and the head's bias) have a true gradient of 0 too: left out, as assert_same leaves out the key bias
    shift = ("gpt.transformer.ln_f.bias", "head.bias")
    assert_same({k: v for k, v in ddp.items() if k not in shift}, one)


def test_ppo_runs_on_two_ranks(world, tmp_path):
    sft, rm = tiny_checkpoints(tmp_path, dropout=0.0)
    out = tmp_path / "ppo"
    torchrun("ppo.py", f"--data_dir={world}", f"--init_from={sft}", f"--reward={rm}", f"--out_dir={out}",
             "--max_iters=2", "--batch_size=4", "--minibatch_size=4", "--max_new_tokens=6", "--vf_warmup=1")
    warm, log = read(out / "log.jsonl")[:1], read(out / "log.jsonl")[1:]  # (20) one iteration of the value model
    assert [l["step"] for l in warm + log] == [0, 1, 2] and "pg_loss" not in warm[0] and warm[0]["vf_loss"] > 0
    assert log[0]["kl"] == 0.0 and abs(log[0]["ratio_first"] - 1) < 1e-5
    ckpt = torch.load(out / "ckpt.pt", weights_only=False)
    assert ckpt["stage"] == "ppo" and ckpt["step"] == 2


def test_a_rank_ends_in_cleanup_without_the_interpreter_teardown(tmp_path):
    """The teardown is where ranks aborted ("terminate called without an active exception", SIGABRT, in a few runs
    of ten on a loaded 2-core machine): a gloo worker thread still freeing the tensors of the last collective asked
    for the GIL after Python had begun to finalise, and Python ends such a thread in the middle of a C++ destructor.
    common.cleanup now leaves before the teardown; nothing registered for it (atexit) runs, nothing after it."""
    script = tmp_path / "end.py"
    script.write_text(
        "import atexit, os, sys\n"
        "from common import cleanup, rng_state, setup\n"
        "rt = setup('cpu', 'float32')\n"
        "rng_state(rt)  # all_gather_object: the collective whose tensors the aborting thread was freeing\n"
        f"atexit.register(lambda: open(os.path.join({str(tmp_path)!r}, f'teardown_{{rt.rank}}'), 'w').close())\n"
        "print(f'rank {rt.rank} done')\n"
        "cleanup(rt)\n"
        "print('after cleanup')\n")
    proc = torchrun(str(script), env={"PYTHONPATH": ROOT})
    assert "rank 0 done" in proc.stdout and "rank 1 done" in proc.stdout and "after cleanup" not in proc.stdout
    assert not list(tmp_path.glob("teardown_*"))


def test_a_compiled_models_checkpoint_has_plain_keys(world, tmp_path):
    from common import setup, unwrap, wrap
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=64))
    compiled = wrap(model, setup("cpu", "float32"), compile=True)
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())  # what a naive save would store
    sd = unwrap(compiled).state_dict()
    fresh = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=64))
    fresh.load_state_dict(sd)  # strict: no key renaming needed
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in sd.items())
