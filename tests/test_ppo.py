import json
import math
import os

import pytest
import torch

from conftest import ROOT, TINY_MODEL, read, run
from common import save_checkpoint, setup
from model import GPT, GPTConfig
from ppo import (adapt_beta, compute_gae, ptx_seed, grpo_advantages, kl_k3, load_rewards, masked_whiten, policy_loss,
                 reinforce_loss, response_logprobs, response_mask, rloo_advantages, token_rewards, value_loss)
from reward import RewardModel
from tokenizer import get_tokenizer


def test_gae_equals_a_plain_reverse_loop_over_each_rows_real_tokens():
    torch.manual_seed(0)
    B, T = 4, 7
    lengths = [7, 3, 1, 5]
    mask = torch.tensor([[1.0] * n + [0.0] * (T - n) for n in lengths])
    rewards, values = torch.randn(B, T), torch.randn(B, T)  # garbage at the pads must not leak in
    gamma, lam = 0.9, 0.8
    adv, ret = compute_gae(rewards, values, mask, gamma, lam)
    for b, n in enumerate(lengths):
        expected, running = [0.0] * n, 0.0
        for t in reversed(range(n)):
            next_value = values[b, t + 1].item() if t + 1 < n else 0.0  # the episode ends at the last real token
            running = rewards[b, t].item() + gamma * next_value - values[b, t].item() + gamma * lam * running
            expected[t] = running
        assert torch.allclose(adv[b, :n], torch.tensor(expected), atol=1e-5)
        assert torch.allclose(ret[b, :n], torch.tensor(expected) + values[b, :n], atol=1e-5)
        assert (adv[b, n:] == 0).all() and (ret[b, n:] == 0).all()
    # gamma = lambda = 1: the advantage is the sum of the rewards still to come, minus the value
    adv, _ = compute_gae(rewards, values, mask, 1.0, 1.0)
    assert torch.allclose(adv[1, 0], rewards[1, :3].sum() - values[1, 0], atol=1e-5)


def test_whitening_ignores_the_pads():
    x = torch.tensor([[1.0, 2.0, 3.0, 1e4], [4.0, 1e4, -1e4, 1e4]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    w = masked_whiten(x, mask)
    real = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.allclose(w[mask.bool()], (real - real.mean()) / real.std(unbiased=False), atol=1e-5)
    assert (w[~mask.bool()] == 0).all()


@pytest.mark.parametrize("ratio, adv, loss, clipped", [
    (1.5, 1.0, -1.2, True),    # good action, ratio past 1 + clip: the gain is capped at 1.2 and gives no gradient
    (0.5, 1.0, -0.5, False),   # good action made less likely: unclipped, the gradient pushes it back up
    (1.5, -1.0, 1.5, False),   # bad action made more likely: unclipped, full penalty
    (0.5, -1.0, 0.8, True),    # bad action already pushed below 1 - clip: capped at 0.8, no gradient
    (1.1, 2.0, -2.2, False),   # inside the band: the plain surrogate
])
def test_policy_loss_clips_on_the_right_side(ratio, adv, loss, clipped):
    old = torch.tensor([[-1.0, -3.0]])
    logp = torch.tensor([[-1.0 + math.log(ratio), 5.0]], requires_grad=True)  # the second token is a pad
    mask = torch.tensor([[1.0, 0.0]])
    got, clipfrac, approx_kl = policy_loss(logp, old, torch.tensor([[adv, 100.0]]), mask, clip=0.2)
    assert got.item() == pytest.approx(loss, abs=1e-6)
    assert clipfrac.item() == float(clipped)
    assert approx_kl.item() == pytest.approx(0.5 * math.log(ratio) ** 2, abs=1e-6)
    got.backward()
    assert (logp.grad[0, 0] == 0) == clipped and logp.grad[0, 1] == 0


def test_value_loss_is_clipped_around_the_old_value():
    old, ret, mask = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    # jumped to 2: (2 - 1)^2 = 1 against the clipped (0.2 - 1)^2 = 0.64; the pessimistic max keeps 1
    assert value_loss(torch.tensor([[2.0, 9.0]]), old, ret, mask, 0.2).item() == pytest.approx(0.5 * 1.0)
    # moved to 0.5: (0.5 - 1)^2 = 0.25, but the clipped 0.2 is further from the return and the max picks it
    assert value_loss(torch.tensor([[0.5, 9.0]]), old, ret, mask, 0.2).item() == pytest.approx(0.5 * 0.64)
    # inside the band: plain squared error
    assert value_loss(torch.tensor([[0.1, 9.0]]), old, ret, mask, 0.2).item() == pytest.approx(0.5 * 0.81)


def test_rewards_score_on_the_last_real_token_penalty_only_for_cut_answers_nothing_after_end():
    end, pad = 260, 261
    response = torch.tensor([[5, 6, end, pad, pad],    # finished after 3 tokens
                             [7, 8, 9, 10, 11],        # cut by the length limit
                             [end, pad, pad, pad, pad]])
    mask = response_mask(response, end)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    finished = (response == end).any(1)
    kl = torch.full((3, 5), 0.5) * mask
    r = token_rewards(kl, torch.tensor([2.0, 3.0, 4.0]), mask.float(), finished, beta=0.1, missing_eos_penalty=1.0)
    expected = torch.tensor([[-0.05, -0.05, -0.05 + 2.0, 0, 0],
                             [-0.05, -0.05, -0.05, -0.05, -0.05 + 3.0 - 1.0],
                             [-0.05 + 4.0, 0, 0, 0, 0]])
    assert torch.allclose(r, expected)


def test_rloo_advantage_is_the_reward_minus_the_mean_of_the_other_answers_to_the_prompt():
    # two prompts, k = 4 answers each in adjacent rows; the reward is PPO's per-token reward summed over the answer
    mask = torch.tensor([[1.0, 1.0, 0.0]] * 8)
    kl = torch.tensor([[0.5, 0.5, 0.0]] * 8)                                       # 1 nat per answer
    score = torch.tensor([1.3, 2.3, 3.3, 6.3, 0.3, 0.3, 0.3, 4.3])
    rewards = token_rewards(kl, score, mask, torch.ones(8, dtype=torch.bool), 0.3, 1.0).sum(1)
    assert torch.allclose(rewards, score - 0.3, atol=1e-6)                         # score - beta * KL
    adv = rloo_advantages(rewards, 4)
    # by hand: 1 - (2 + 3 + 6) / 3, 2 - (1 + 3 + 6) / 3, 3 - (1 + 2 + 6) / 3, 6 - (1 + 2 + 3) / 3; then 0, 0, 0, 4
    expected = torch.tensor([1 - 11 / 3, 2 - 10 / 3, 3 - 9 / 3, 6 - 6 / 3, -4 / 3, -4 / 3, -4 / 3, 4.0])
    assert torch.allclose(adv, expected, atol=1e-5)
    assert torch.allclose(adv.view(2, 4).sum(1), torch.zeros(2), atol=1e-5)      # = k / (k - 1) (R - group mean)
    with pytest.raises(ValueError, match="k >= 2"):
        rloo_advantages(rewards, 1)


def test_rloo_loss_is_reinforce_on_the_whole_answer_with_no_ratio_and_no_clip():
    """(16) Ahmadian et al.: -(1 / B) sum_i A_i sum_t log pi(y_it); the gradient does not depend on the old log-probs
    (no ratio), even where PPO's clip would have cut it, and pads count nowhere. The clip fraction is only logged."""
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv = torch.tensor([2.0, -1.0])
    losses = []
    for old in (logp.detach(), logp.detach() - 3.0):  # ratio 1, then e^3 on every token: far outside 1 +- 0.2
        loss, clipfrac, approx_kl = reinforce_loss(logp, old, adv, mask, clip=0.2)
        grad, = torch.autograd.grad(loss, logp)
        assert torch.allclose(grad, -adv[:, None] * mask / 2)          # d/d logp_it of -(1/B) sum_i A_i sum_t
        losses.append((loss.item(), clipfrac.item(), approx_kl.item()))
    assert losses[0][0] == pytest.approx(-(2.0 * -3.5 - 1.0 * -1.0) / 2) == losses[1][0]
    # clipfrac: where PPO's clip would bite, ratio e^3 > 1.2 with A > 0 (answer 0's 3 tokens), not with A < 0
    assert losses[0][1:] == (0.0, 0.0) and losses[1][1] == pytest.approx(3 / 5) and losses[1][2] == pytest.approx(4.5)


def test_critic_free_estimators_refuse_one_answer_per_prompt_in_one_sentence(world, tmp_path):
    sft, rm = tiny_checkpoints(tmp_path, dropout=0.0)
    for estimator in ("rloo", "grpo"):
        proc = run("ppo.py", f"--estimator={estimator}", "--k=1", f"--data_dir={world}", f"--init_from={sft}",
                   f"--reward={rm}", f"--out_dir={tmp_path / estimator}", check=False)
        assert proc.returncode == 1 and not (tmp_path / estimator).exists()
        message = proc.stderr.strip()
        assert "\n" not in message and message.count(". ") == 0 and "--k >= 2" in message, message
    proc = run("ppo.py", "--estimator=reinforce", f"--init_from={sft}", f"--reward={rm}", check=False)
    assert proc.returncode == 1 and "gae (PPO), rloo, grpo" in proc.stderr
    proc = run("ppo.py", "--estimator=rloo", "--ppo_epochs=2", f"--data_dir={world}", f"--init_from={sft}",
               f"--reward={rm}", f"--out_dir={tmp_path / 'rloo2'}", check=False)  # (16) REINFORCE is on-policy
    assert proc.returncode == 1 and "one pass" in proc.stderr and not (tmp_path / "rloo2").exists()
    proc = run("ppo.py", "--ppo_epochs=-1", f"--out_dir={tmp_path / 'minus'}", check=False)
    assert proc.returncode == 1 and "--ppo_epochs=-1" in proc.stderr and not (tmp_path / "minus").exists()


def test_grpo_normalises_each_group_by_hand_and_an_all_equal_group_gets_zero():
    scores = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.7, 0.7, 0.7, 0.7])
    adv = grpo_advantages(scores, 4)
    std = math.sqrt((4 + 1 + 0 + 9) / 4)                                           # population std of 1, 2, 3, 6
    assert torch.allclose(adv[:4], torch.tensor([-2.0, -1.0, 0.0, 3.0]) / (std + 1e-4), atol=1e-6)
    assert torch.isfinite(adv).all() and adv[4:].abs().max() < 1e-6                # no signal, and no NaN
    # Dr. GRPO (--group_std=false): the distance to the group mean alone
    assert torch.allclose(grpo_advantages(scores, 4, scale=False)[:4], torch.tensor([-2.0, -1.0, 0.0, 3.0]))


def test_the_k3_kl_term_and_its_gradient_are_zero_when_the_policy_is_the_reference():
    torch.manual_seed(0)
    ref = torch.randn(3, 5) - 2
    logp = ref.clone().requires_grad_(True)
    term = kl_k3(logp, ref)
    assert (term == 0).all()
    term.sum().backward()
    assert (logp.grad == 0).all()
    # away from the reference it is positive, and it is r - 1 - log r with r = pi_ref / pi
    other = ref + 0.3 * torch.randn(3, 5)
    r = torch.exp(ref - other)
    assert torch.allclose(kl_k3(other, ref), r - 1 - torch.log(r), atol=1e-6) and (kl_k3(other, ref) > 0).all()


def test_the_kl_controller_moves_beta_by_the_clipped_error_over_a_horizon_in_iterations():
    # lm-human-preferences' horizon of 10000 answers would move beta by 0.2 * 64 / 10000 = 0.13% an iteration here
    assert adapt_beta(1.0, kl=0.0, target=4.0, horizon=2) == pytest.approx(0.9)    # far below: -0.2 / 2
    assert adapt_beta(1.0, kl=40.0, target=4.0, horizon=2) == pytest.approx(1.1)   # far above: +0.2 / 2
    assert adapt_beta(1.0, kl=4.4, target=4.0, horizon=2) == pytest.approx(1.05)   # 10% above: +0.1 / 2
    assert adapt_beta(0.3, kl=4.0, target=4.0, horizon=2) == 0.3                   # on target: unchanged
    assert adapt_beta(1.0, kl=0.0, target=4.0, horizon=4) == pytest.approx(0.95)   # a longer horizon, a smaller step


def test_rollout_logprobs_equal_a_fresh_forward_on_the_left_padded_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=64, dropout=0.0)).eval()
    prompts = [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12]]
    P = 5
    x = torch.tensor([[0] * (P - len(p)) + p for p in prompts])
    pmask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    for temperature in (1.0, 0.7):
        g = torch.Generator().manual_seed(1)
        seq, gen_logp = model.generate(x, 10, temperature=temperature, eos_id=1, pad_id=0, attention_mask=pmask,
                                       generator=g)
        rmask = response_mask(seq[:, P:], 1)
        logp, _ = response_logprobs(model, seq, torch.cat([pmask, rmask], 1), P, temperature)
        assert torch.allclose(logp * rmask, gen_logp * rmask, atol=1e-5)
        # and each row equals the same row generated alone, unpadded: left padding changes nothing
        for b, p in enumerate(prompts):
            alone = torch.tensor([p + seq[b, P:].tolist()])
            ref, _ = response_logprobs(model, alone, torch.ones_like(alone), len(p), temperature)
            assert torch.allclose(ref[0] * rmask[b], logp[b] * rmask[b], atol=1e-5)


def tiny_checkpoints(tmp_path, dropout=0.1, **rm_shape):
    """A random tiny SFT policy (with dropout in its config, as sft.py --dropout=0.1 leaves it) and a random tiny RM,
    the policy's shape unless rm_shape overrides some of it (n_layer=3, n_embd=48)."""
    torch.manual_seed(0)
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=160, vocab_size=320, dropout=dropout)
    sft = GPT(config)
    save_checkpoint(tmp_path / "sft", {"model": sft.state_dict(), "model_args": vars(config).copy(),
                                       "tokenizer": "bytes", "stage": "sft", "parent": None, "config": {}, "step": 0})
    rm = RewardModel(GPTConfig(**{**vars(config), "dropout": 0.0, **rm_shape}))
    save_checkpoint(tmp_path / "rm", {"model": rm.state_dict(), "model_args": vars(rm.gpt.config).copy(),
                                      "tokenizer": "bytes", "stage": "reward", "parent": None, "config": {},
                                      "step": 0, "val_accuracy": 0.5, "length_baseline_accuracy": 0.5})
    return tmp_path / "sft", tmp_path / "rm"


METRICS = ("rm_score", "gold", "kl", "kl_k3", "entropy", "clipfrac", "approx_kl", "pg_loss", "vf_loss",
           "explained_var", "resp_len", "ratio_first", "t_rollout", "t_score", "t_update")


def test_ppo_through_the_command_line_logs_every_metric_and_starts_at_ratio_one(world, tmp_path):
    sft, rm = tiny_checkpoints(tmp_path, dropout=0.1)
    out = tmp_path / "ppo"
    proc = run("ppo.py", f"--data_dir={world}", f"--init_from={sft}", f"--reward={rm}", f"--out_dir={out}",
               "--max_iters=3", "--batch_size=8", "--minibatch_size=4", "--max_new_tokens=8", "--sample_interval=2",
               "--ptx_coef=0.5", "--beta=0.02", "--target_kl=100", "--warmup_iters=2", "--vf_warmup=2",
               "--dtype=float32")  # a ratio of exactly 1: bf16's sums depend on the batch's shape
    warm, log = read(out / "log.jsonl")[:2], read(out / "log.jsonl")[2:]
    # (20) two iterations of the value model alone, logged as steps -1 and 0: the policy stands still in them (KL 0
    # in the second and in the first policy iteration), at vf_warmup_lr, with no policy loss and beta not adapted
    assert [l["step"] for l in warm] == [-1, 0] and [l["step"] for l in log] == [1, 2, 3]
    for line in warm:
        assert line["kl"] == 0.0 and line["lr"] == 3e-4 and line["beta"] == 0.02 and line["vf_loss"] > 0
        assert not {"pg_loss", "clipfrac", "ratio_first", "ptx_loss"} & set(line), line
    assert "after 2 of the value model alone" in proc.stdout
    for line in log:
        for k in METRICS + ("ptx_loss",):
            assert isinstance(line[k], float) and math.isfinite(line[k]), (k, line)
        # the first minibatch of every batch: old log-probs are the rollout's, so the ratio is 1 (no dropout)
        assert abs(line["ratio_first"] - 1.0) < 1e-5
        assert 0 <= line["clipfrac"] <= 1 and line["resp_len"] <= 8 and line["kl_k3"] >= 0
    assert log[0]["kl"] == 0.0 and log[0]["kl_k3"] == 0.0  # the policy is the reference before the first update
    assert log[1]["kl"] != 0.0
    # the controller: every KL here is far below the target, so beta shrinks by the clipped error over the horizon,
    # 0.2 / 2 iterations, each iteration: -27% in three tiny iterations (the logged beta is the one the iteration used)
    assert [l["beta"] for l in log] == pytest.approx([0.02, 0.02 * 0.9, 0.02 * 0.9 ** 2])
    # warmup counts iterations: half the learning rate in the first of two, all of it from the second
    assert [l["lr"] for l in log[:2]] == pytest.approx([3e-5 / 2, 3e-5])
    assert proc.stdout.count("] -> ") >= 2  # sample answers printed
    ckpt = torch.load(out / "ckpt.pt", weights_only=False)
    assert ckpt["stage"] == "ppo" and ckpt["step"] == 3 and ckpt["parent"] == str(sft)
    assert ckpt["beta"] == pytest.approx(0.02 * 0.9 ** 3)
    assert ckpt["model_args"]["dropout"] == 0.0 and "value" in ckpt


@pytest.mark.parametrize("estimator", ["gae", "rloo", "grpo"])
def test_ppo_resume_continues_the_same_run(world, tmp_path, estimator):
    sft, rm = tiny_checkpoints(tmp_path, dropout=0.0)
    common = [f"--data_dir={world}", f"--init_from={sft}", f"--reward={rm}", "--batch_size=4", "--minibatch_size=2",
              "--max_new_tokens=6", "--ppo_epochs=1", "--labeler=", "--ckpt_interval=2",
              "--learning_rate=3e-4", "--min_lr=3e-4",  # constant: the schedule does not depend on max_iters
              "--target_kl=1e-3",  # beta moves every iteration, and must come back from the checkpoint
              f"--estimator={estimator}", "--k=2"]  # rloo, grpo: 2 prompts x 2 answers an iteration
    run("ppo.py", *common, "--max_iters=4", f"--out_dir={tmp_path / 'full'}")
    run("ppo.py", *common, "--max_iters=2", f"--out_dir={tmp_path / 'cut'}")
    proc = run("ppo.py", *common, "--max_iters=4", f"--out_dir={tmp_path / 'cut'}", "--resume")
    full, cut = (torch.load(tmp_path / d / "ckpt.pt", weights_only=False) for d in ("full", "cut"))
    for k in full["model"]:
        assert torch.allclose(full["model"][k], cut["model"][k], atol=1e-6), k
    assert full["beta"] == pytest.approx(cut["beta"], rel=1e-6) and full["beta"] != 0.3
    warm = [-3, -2, -1, 0] if estimator == "gae" else []  # (20) the value model's warmup: PPO's only
    assert [l["step"] for l in read(tmp_path / "cut" / "log.jsonl")] == warm + [1, 2, 3, 4]
    assert "gold" not in read(tmp_path / "cut" / "log.jsonl")[0]  # --labeler= turns the gold metric off
    assert ("value" in cut) == (estimator == "gae") and cut["config"]["estimator"] == estimator
    # a checkpoint goes on only under the estimator that wrote it (a gae one has a value model the others lack)
    other = "rloo" if estimator == "gae" else "gae"
    proc = run("ppo.py", *common[:-2], f"--estimator={other}", "--max_iters=6", f"--out_dir={tmp_path / 'cut'}",
               "--resume", check=False)
    assert proc.returncode == 1 and f"--estimator={estimator} run" in proc.stderr, proc.stderr


CRITIC_FREE_METRICS = tuple(m for m in METRICS if m not in ("vf_loss", "explained_var")) + ("tied",)


@pytest.mark.parametrize("estimator", ["rloo", "grpo"])
def test_critic_free_estimators_through_the_command_line_log_every_metric_without_a_value_model(world, tmp_path,
                                                                                               estimator):
    sft, rm = tiny_checkpoints(tmp_path, dropout=0.1)
    out = tmp_path / estimator
    common = [f"--estimator={estimator}", f"--data_dir={world}", f"--init_from={sft}", f"--reward={rm}",
              "--batch_size=8", "--minibatch_size=4", "--max_new_tokens=8", "--k=4"]
    proc = run("ppo.py", *common, f"--out_dir={out}", "--max_iters=3", "--sample_interval=2", "--target_kl=100")
    log = read(out / "log.jsonl")
    assert [l["step"] for l in log] == [1, 2, 3]
    for line in log:
        for k in CRITIC_FREE_METRICS + (("kl_loss",) if estimator == "grpo" else ()):
            assert isinstance(line[k], float) and math.isfinite(line[k]), (k, line)
        assert "vf_loss" not in line and "explained_var" not in line and ("kl_loss" in line) == (estimator == "grpo")
        assert abs(line["ratio_first"] - 1.0) < 1e-5  # the rollout's log-probs, no dropout: ratio 1 at first
        assert 0 <= line["clipfrac"] <= 1 and 0 <= line["tied"] <= 1 and line["kl_k3"] >= 0
    assert log[0]["kl"] == 0.0 and log[1]["kl"] != 0.0
    assert [l["beta"] for l in log] == pytest.approx([0.1, 0.1 * 0.9, 0.1 * 0.9 ** 2])  # (6) works for both
    assert "2 per iteration x 4 answers" in proc.stdout and "no value model" in proc.stdout
    ckpt = torch.load(out / "ckpt.pt", weights_only=False)
    assert ckpt["stage"] == "ppo" and ckpt["step"] == 3 and ckpt["config"]["estimator"] == estimator
    assert "value" not in ckpt and ckpt["model_args"]["dropout"] == 0.0
    # near temperature 0 a prompt's k answers are the same answer: every group is tied, no advantage, no loss.
    # The rows of a group are the same prompt, or their answers would differ.
    run("ppo.py", *common, f"--out_dir={tmp_path / 'greedy'}", "--max_iters=1", "--temperature=1e-3", "--labeler=")
    line = read(tmp_path / "greedy" / "log.jsonl")[0]
    assert line["tied"] == 1.0 and line["pg_loss"] == 0.0 and line["clipfrac"] == 0.0


def expected_last_token_reward(policy_dir, rm, prompts):
    """Mean over prompts of sum_y pi(y | x) * RM(x, y) for one-token answers y: no sampling noise."""
    model = GPT(GPTConfig(**torch.load(policy_dir / "ckpt.pt", weights_only=False)["model_args"])).eval()
    model.load_state_dict(torch.load(policy_dir / "ckpt.pt", weights_only=False)["model"])
    total = 0.0
    with torch.no_grad():
        for p in prompts:
            probs = torch.softmax(model(torch.tensor([p]))[0][0, -1], -1)                 # (V,)
            answers = torch.cat([torch.tensor([p]).expand(probs.numel(), -1), torch.arange(probs.numel())[:, None]], 1)
            total += (probs * rm(answers, torch.ones_like(answers))).sum().item()
    return total / len(prompts)


@pytest.mark.parametrize("estimator", ["gae", "rloo", "grpo"])
def test_ppo_raises_the_reward_it_is_given(world, tmp_path, estimator):
    """PPO, RLOO and GRPO must climb the RM's score. Answers are one token long and this RM scores only that token:
    it is the policy's own trunk (an RM starts from SFT) with its blocks and positions zeroed, so its head reads the
    token's embedding. The expected score over all 320 answers, before and after, leaves no sampling noise."""
    sft, rm_path = tiny_checkpoints(tmp_path, dropout=0.0)
    ckpt = torch.load(rm_path / "ckpt.pt", weights_only=False)
    policy = torch.load(sft / "ckpt.pt", weights_only=False)["model"]
    ckpt["model"].update({"gpt." + k: v.clone() for k, v in policy.items()})
    for k, v in ckpt["model"].items():
        if k.endswith(("attn.c_proj.weight", "attn.c_proj.bias", "mlp.c_proj.weight", "mlp.c_proj.bias", "wpe.weight")):
            v.zero_()
    save_checkpoint(rm_path, ckpt)
    out = tmp_path / "ppo"
    run("ppo.py", f"--data_dir={world}", f"--init_from={sft}", f"--reward={rm_path}", f"--out_dir={out}",
        "--max_iters=8", "--batch_size=32", "--minibatch_size=16", "--max_new_tokens=1", "--labeler=",
        "--learning_rate=1e-3", "--min_lr=1e-3", "--missing_eos_penalty=0", f"--estimator={estimator}")
    rm = RewardModel(GPTConfig(**ckpt["model_args"])).eval()
    rm.load_state_dict(ckpt["model"])
    tok = get_tokenizer("bytes")
    prompts = [tok.render_prompt(r["messages"])[-150:] for r in read(world / "prompts_rl.jsonl")[:16]]
    before, after = expected_last_token_reward(sft, rm, prompts), expected_last_token_reward(out, rm, prompts)
    assert after > before + 0.1, (before, after)  # measured: 0.075 -> 0.264 (gae), 0.271 (rloo), 0.269 (grpo)


def test_the_value_warmup_fits_the_returns_before_the_policy_moves(world, tmp_path):
    """(20) In the warmup only the value model learns: the policy is still SFT when it first moves (KL 0, and the
    rollouts are those of a run whose warmup learns nothing), and the fitted value model explains more of the
    returns of the first policy iteration's rollouts than the RM it started from."""
    sft, rm = tiny_checkpoints(tmp_path, dropout=0.0)
    logs = {}
    for lr in ("0", "1e-3"):  # a warmup at learning rate 0 leaves the value model the RM
        run("ppo.py", f"--data_dir={world}", f"--init_from={sft}", f"--reward={rm}", f"--out_dir={tmp_path / lr}",
            "--max_iters=1", "--vf_warmup=4", f"--vf_warmup_lr={lr}", "--batch_size=16", "--minibatch_size=8",
            "--max_new_tokens=8", "--labeler=")
        logs[lr] = read(tmp_path / lr / "log.jsonl")
    fixed, fitted = logs["0"], logs["1e-3"]
    assert [l["step"] for l in fitted] == [-3, -2, -1, 0, 1] and all(l["kl"] == 0.0 for l in fitted)
    assert [l["rm_score"] for l in fitted] == [l["rm_score"] for l in fixed]  # the same answers: the policy stood
    assert fitted[-1]["explained_var"] > fixed[-1]["explained_var"] + 0.2  # measured: -0.17 against -1.59


def test_ptx_windows_get_a_distinct_seed_for_every_iteration_rank_and_minibatch():
    """PPO-ptx's corpus windows: no two (iteration, rank, minibatch) share a seed, for up to 64 ranks (the old sum
    seed + 7 j + 100003 it + rank gave rank 7's minibatch 0 rank 0's minibatch 1)."""
    seeds = [ptx_seed(3, it, rank, j) for it in range(4) for rank in range(64) for j in range(32)]
    assert len(set(seeds)) == len(seeds) and max(seeds) < 2**63


def test_a_verifier_as_the_reward_alone_or_beside_the_rm(world, tmp_path):
    """(21) RLVR: --reward names a verifier file, alone or after an RM. Alone: only the prompts it can check, and a
    value model that starts from the SFT trunk with a zero head (no RM to start from); with an RM, every prompt.
    evaluate.py names the rows for it."""
    from evaluate import row_name
    verifier = os.path.join(ROOT, "data", "assistant", "verifier.py")
    _, verify = load_rewards(verifier)
    checkable = sum(verify(r, "") is not None for r in read(world / "prompts_rl.jsonl"))
    sft, rm = tiny_checkpoints(tmp_path, dropout=0.0)
    common = [f"--data_dir={world}", f"--init_from={sft}", "--max_iters=2", "--vf_warmup=1", "--batch_size=8",
              "--minibatch_size=4", "--max_new_tokens=8", "--learning_rate=0", "--min_lr=0", "--vf_warmup_lr=0"]
    proc = run("ppo.py", *common, f"--reward={verifier}", f"--out_dir={tmp_path / 'alone'}")
    assert f"{checkable} prompts" in proc.stdout and "the verifier times 1" in proc.stdout and 0 < checkable < 1000
    log = read(tmp_path / "alone" / "log.jsonl")
    assert all(0 <= l["verified"] <= 1 and l["rm_score"] == 0.0 for l in log)
    ckpt = torch.load(tmp_path / "alone" / "ckpt.pt", weights_only=False)  # learning rate 0: the critic's start
    sft_weights = torch.load(sft / "ckpt.pt", weights_only=False)["model"]
    assert all(torch.equal(ckpt["value"]["gpt." + k], v) for k, v in sft_weights.items())
    assert not ckpt["value"]["head.weight"].any() and not ckpt["value"]["head.bias"].any()
    assert row_name(ckpt, str(tmp_path / "alone"), {}) == "ppo_verifier"
    proc = run("ppo.py", *common, f"--reward={rm},{verifier}", f"--out_dir={tmp_path / 'both'}", "--estimator=grpo")
    assert "1000 prompts" in proc.stdout  # every prompt: where the verifier cannot check, the RM's score alone
    both = torch.load(tmp_path / "both" / "ckpt.pt", weights_only=False)
    assert row_name(both, str(tmp_path / "both"), {}) == "grpo_rm_verifier"
    assert both["reward"] == f"{rm},{verifier}"
    # bad input: a file that is neither, a .py without verify: one sentence naming what was expected
    (tmp_path / "notes.txt").write_text("hello")
    for bad, says in ((tmp_path / "notes.txt", "neither a reward checkpoint"),
                      (os.path.join(ROOT, "data", "assistant", "prepare.py"), "defines no verify")):
        proc = run("ppo.py", *common, f"--reward={bad}", f"--out_dir={tmp_path / 'bad'}", check=False)
        assert proc.returncode == 1 and says in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert not (tmp_path / "bad").exists()


def test_an_rm_larger_than_the_policy_scores_it_and_its_value_model_takes_the_rms_shape(world, tmp_path):
    """InstructGPT trained one 6B RM (and value model) for policies of 1.3B to 175B: the RM's shape is its own. Here a
    3-layer, 48-wide RM for the 2-layer, 32-wide policy: PPO runs and resumes, the value model is the RM's shape."""
    sft, rm = tiny_checkpoints(tmp_path, dropout=0.0, n_layer=3, n_embd=48)
    out = tmp_path / "ppo"
    args = ["ppo.py", f"--data_dir={world}", f"--init_from={sft}", f"--reward={rm}",
            f"--out_dir={out}", "--batch_size=8", "--minibatch_size=4", "--max_new_tokens=8", "--vf_warmup=1"]
    run(*args, "--max_iters=2")
    run(*args, "--max_iters=3", "--resume")
    log = read(out / "log.jsonl")
    assert [l["step"] for l in log] == [0, 1, 2, 3]
    assert all(math.isfinite(l["rm_score"]) and math.isfinite(l["vf_loss"]) for l in log)
    ckpt = torch.load(out / "ckpt.pt", weights_only=False)
    assert ckpt["model"]["transformer.wte.weight"].shape == (320, 32)      # the policy keeps its shape
    assert ckpt["value"]["gpt.transformer.wte.weight"].shape == (320, 48)  # the value model is the RM's
    assert len({k for k in ckpt["value"] if k.startswith("gpt.transformer.h.")}) == 3 * len(
        {k for k in ckpt["model"] if k.startswith("transformer.h.0.")})
