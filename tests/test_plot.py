"""plot.py: the PNGs it promises from a run directory's logs and results.json, and one sentence when a file is missing.

The run directory is written by hand with the keys the stages' loggers and evaluate.py write (as run.sh --tiny
leaves them, a few lines each), so the test takes seconds instead of the minute a tiny pipeline run takes;
tests/test_run.py checks that run.sh's own plot stage runs on the real files."""
import json
import os

from conftest import run

PNGS = {"learning_curves.png", "dpo.png", "rl_training.png", "overoptimisation.png", "win_rates.png", "failures.png"}
AXES = ("constraint", "filler", "wrong")


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def rl_log(beta, critic=True):
    return [{"step": i, "rm_score": 0.3 * i, "gold": 0.4 + 0.02 * i, "kl": 0.5 * i * (1 + 10 * (beta == 0)),
             "kl_k3": 0.5 * i, "entropy": 0.08, "clipfrac": 0.01, "approx_kl": 0.004, "pg_loss": -0.01,
             **({"vf_loss": 1.0, "explained_var": 0.1} if critic else {}), "resp_len": 30.0, "finished": 1.0,
             "ratio_first": 1.0, "beta": beta, "lr": 3e-5, "elapsed_s": 2.0 * i} for i in range(1, 5)]


def write_results(run_dir, seed, win):
    policies = {}
    for i, name in enumerate(("gpt", "sft", "ppo", "rloo", "grpo", "dpo", "best_of_2")):
        w = 0.5 if name == "sft" else win + 0.05 * i - 0.3
        policies[name] = {"gold_score": 0.3 + 0.05 * i, "rm_score": 0.2 * i, "win_rate_vs_sft": w,
                          "win_ci95": [w - 0.04, w + 0.04], "kl_to_sft": None if name == "gpt" else 0.4 * i,
                          "failures": {a: 0.1 * ((i + j) % 8) for j, a in enumerate(AXES)}}
    results = {"policies": policies, "settings": {"seed": seed}, "failure_prompts": {a: 40 for a in AXES},
               "overoptimisation": {"run": "out/ppo", "snapshots": [
                   {"step": s, "kl_to_sft": 0.5 * s, "gold_score": 0.4 + 0.01 * s, "rm_score": 0.3 * s}
                   for s in (0, 2, 4)]},
               "best_of_n": [{"n": n, "kl_to_sft": 0.2 * n, "kl_is_upper_bound": True, "rm_score": 0.1 * n,
                              "gold_score": 0.4 + 0.01 * n} for n in (1, 2)]}
    os.makedirs(os.path.join(run_dir, "eval"), exist_ok=True)
    with open(os.path.join(run_dir, "eval", "results.json"), "w") as f:
        json.dump(results, f)


def write_run(out):
    """Every stage run.sh runs, a PPO run at beta 0, and a second seed's results."""
    lm = lambda: [{"step": 0, "val_loss": 5.5}, {"step": 5, "loss": 2.0, "lr": 1e-3}, {"step": 10, "loss": 1.0},
                  {"step": 10, "val_loss": 1.2}]
    write_jsonl(os.path.join(out, "pretrain", "log.jsonl"), lm())
    write_jsonl(os.path.join(out, "sft", "log.jsonl"), lm())
    write_jsonl(os.path.join(out, "reward", "log.jsonl"), [
        {"step": 0, "val_accuracy": 0.45, "length_baseline": 0.4}, {"step": 5, "loss": 0.6}, {"step": 10, "loss": 0.4},
        {"step": 10, "val_accuracy": 0.8, "length_baseline": 0.4, "val_pairs": 20, "gain": 1.0, "bias_shift": 0.1}])
    write_jsonl(os.path.join(out, "dpo", "log.jsonl"), [{"step": 0, "val_accuracy": 0.5, "val_margin": 0.0}] + [
        {"step": s, "loss": 0.69 - 0.01 * s, "margin": 0.01 * s, "accuracy": 0.6, "chosen_reward": 0.001 * s,
         "rejected_reward": -0.01 * s, "lr": 1e-5} for s in (5, 10)] + [{"step": 10, "val_accuracy": 0.7,
                                                                          "val_margin": 0.1}])
    write_jsonl(os.path.join(out, "ppo", "log.jsonl"), rl_log(0.1))
    for est in ("rloo", "grpo"):
        write_jsonl(os.path.join(out, est, "log.jsonl"), rl_log(0.1, critic=False))
    write_jsonl(os.path.join(out, "ppo_beta0", "log.jsonl"), rl_log(0.0))
    write_results(out, 0, 0.8)
    write_results(os.path.join(out, "seed_1"), 1, 0.7)


def test_plot_writes_every_png_it_promises(tmp_path):
    out = str(tmp_path)
    write_run(out)
    proc = run("plot.py", f"--out_dir={out}", f"--seeds={out},{out}/seed_1", f"--beta0={out}/ppo_beta0")
    assert set(os.listdir(tmp_path / "plots")) == PNGS, proc.stdout
    for name in PNGS:
        data = (tmp_path / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name                  # a real PNG,
        assert 5_000 < len(data) < 100_000, (name, len(data))        # with something drawn, small enough to commit
        assert f"wrote {tmp_path / 'plots' / name}" in proc.stdout


def test_plot_leaves_out_stages_that_were_not_run(tmp_path):
    out = str(tmp_path)
    write_run(out)
    for stage in ("rloo", "grpo", "dpo"):  # a run without them (an older run.sh, a partial pipeline)
        for f in os.listdir(tmp_path / stage):
            os.remove(tmp_path / stage / f)
        os.rmdir(tmp_path / stage)
    proc = run("plot.py", f"--out_dir={out}", f"--to={out}/figs")
    assert set(os.listdir(tmp_path / "figs")) == PNGS - {"dpo.png"}
    assert "skipped dpo.png: dpo was not run" in proc.stdout


def test_plot_stops_with_one_sentence_naming_a_missing_file(tmp_path):
    out = str(tmp_path)
    write_run(out)
    os.remove(tmp_path / "sft" / "log.jsonl")  # the stage's directory is there: its log should be
    proc = run("plot.py", f"--out_dir={out}", check=False)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1, proc.stderr
    assert os.path.join(out, "sft", "log.jsonl") in proc.stderr and "python sft.py" in proc.stderr
    assert not (tmp_path / "plots").exists()  # nothing drawn before the check

    write_run(out)
    os.remove(tmp_path / "seed_1" / "eval" / "results.json")
    proc = run("plot.py", f"--out_dir={out}", f"--seeds={out},{out}/seed_1", check=False)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1, proc.stderr
    assert os.path.join(out, "seed_1", "eval", "results.json") in proc.stderr and "evaluate.py" in proc.stderr
