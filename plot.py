"""
Draw a run's logs and evaluation as PNGs: what each stage learned, and what evaluate.py measured.

    python plot.py --out_dir=out                                     # -> out/plots/*.png
    python plot.py --out_dir=out --seeds=out,out/seed_1,out/seed_2   # win rates of three seeds, each and their mean
    python plot.py --out_dir=out --beta0=out/ppo_beta0               # adds a beta = 0 PPO run to the Gao et al. plot

Reads out_dir/{pretrain,sft,reward,ppo,ppo_ptx,ppo_r2,rloo,grpo,dpo}/log.jsonl (common.Logger's lines; a stage whose directory is
absent was not run and is left out) and out_dir/eval/results.json (evaluate.py). Writes, each about 800 px wide:
 1. learning_curves.png   pretrain and SFT train/val loss, the RM's and DPO's loss and held-out pairwise accuracy.
 2. dpo.png               DPO's implicit rewards of the chosen and rejected answers and their margin.
 3. rl_training.png       PPO's training curves over iterations (RM score, gold score of the batch, KL to SFT,
                          entropy), ppo_ptx, ppo_r2, rloo and grpo overlaid, and the --beta0 run when given.
 4. overoptimisation.png  gold and RM score against KL to SFT (Gao et al. 2022): PPO snapshots (evaluate.py
                          --snapshots), best-of-n of SFT, the --beta0 run's training batches, and the final policies.
 5. win_rates.png         win rate against SFT with its 95% interval per policy; with --seeds, each seed and the mean.
 6. failures.png          InstructGPT's Figure 4 in miniature: each failure's rate per policy, as grouped bars.
 7. frontier.png          with out_dir/frontier/frontier.json (frontier.py, run.sh --frontier): gold against
                          sqrt(KL) for every method's runs and snapshots, Gao et al.'s fitted forms dashed; beside
                          it, best-of-n and PPO against the RMs trained on less of the comparisons.
A figure whose data is absent (no RL stage was run, say) is skipped with a line saying so. Nothing is recomputed:
every number drawn is one a log or results.json already holds.
"""

import io
import json
import math
import os
from dataclasses import dataclass

from common import parse_config

try:
    import matplotlib
except ImportError:  # the only script that needs it: say so instead of a traceback at the end of run.sh
    raise SystemExit("plot.py needs matplotlib, which nothing else here imports: pip install matplotlib")
matplotlib.use("Agg")  # files only: no display, the same output on a server as on a laptop
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from PIL import Image  # matplotlib's own dependency: no new package


@dataclass
class Config:
    out_dir: str = "out"  # a run directory: the stages' directories and eval/results.json
    seeds: str = ""       # comma-separated run directories whose eval/results.json give win_rates.png ("": out_dir)
    beta0: str = ""       # a PPO run directory trained with --beta=0: its log goes on overoptimisation.png
    to: str = ""          # where the PNGs go ("": out_dir/plots)


STAGES = ("pretrain", "sft", "reward", "ppo", "ppo_ptx", "ppo_r2", "rloo", "grpo", "dpo")
COMMANDS = {  # what writes each stage's log, for the message when it is missing
    "pretrain": "python pretrain.py", "sft": "python sft.py", "reward": "python reward.py", "ppo": "python ppo.py",
    "ppo_ptx": "python ppo.py --ptx_coef=0.1", "ppo_r2": "bash run.sh --full",
    "rloo": "python ppo.py --estimator=rloo", "grpo": "python ppo.py --estimator=grpo", "dpo": "python dpo.py"}
# one colour per policy in every figure, so a reader matches PPO's bar to PPO's curve without the legend
COLORS = {"gpt": "#9e9e9e", "gpt_prompted": "#8c564b", "sft": "#222222", "ppo": "#1f77b4", "ppo_ptx": "#17becf",
          "ppo_r2": "#393b79", "rloo": "#ff7f0e", "grpo": "#2ca02c", "dpo": "#d62728", "best_of": "#9467bd",
          "beta0": "#6baed6", "distill": "#08306b"}
WIDTH = 8    # inches at DPI: 800 px, the README's width, so a figure is shown at 1:1 and its text stays legible
DPI = 100


def color(name):
    return COLORS.get(name, COLORS["best_of"] if name.startswith("best_of") else "#7f7f7f")


def read_log(run_dir, stage):
    """A stage's log lines, or None when the stage was not run (no directory); a directory without its log stops."""
    path = os.path.join(run_dir, "log.jsonl")
    if not os.path.isdir(run_dir):
        return None
    if not os.path.exists(path):
        raise SystemExit(f"{path} is missing though {run_dir} exists: run {COMMANDS.get(stage, 'python ppo.py')} "
                         f"--out_dir={run_dir} (or bash run.sh) to write it")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_results(run_dir):
    path = os.path.join(run_dir, "eval", "results.json")
    if not os.path.exists(path):
        p = lambda *stages: ",".join(os.path.join(run_dir, s) for s in stages)
        raise SystemExit(f"{path} is missing: run python evaluate.py --policies={p('pretrain', 'sft', 'ppo', 'dpo')} "
                         f"--reward={p('reward')} --snapshots={p('ppo')} --out_dir={p('eval')} (run.sh's evaluate "
                         f"stage) to write it")
    with open(path) as f:
        return json.load(f)


def series(log, key):
    """(steps, values) of the lines that carry key: train and validation lines share one log."""
    rows = [r for r in log if r.get(key) is not None]
    return [r["step"] for r in rows], [r[key] for r in rows]


def smooth(ys, k):
    """A centred moving average over 2k + 1 points; k < 2 leaves ys as they are."""
    if k < 2:
        return ys
    return [sum(ys[max(0, i - k):i + k + 1]) / len(ys[max(0, i - k):i + k + 1]) for i in range(len(ys))]


def save(fig, to, name):
    """Write fig as a palette PNG: a plot has a few flat colours, and 256 of them keep its antialiased text smooth
    at a third of the size of full colour, small enough to commit for the README."""
    path = os.path.join(to, name)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format="png")
    plt.close(fig)
    Image.open(buf).convert("RGB").quantize(colors=256).save(path, optimize=True)
    print(f"wrote {path} ({os.path.getsize(path) // 1024} KB)")


def learning_curves(logs, to):
    """(1) one panel per supervised stage that was run."""
    panels = [s for s in ("pretrain", "sft", "reward", "dpo") if logs.get(s)]
    if not panels:
        return print("skipped learning_curves.png: none of pretrain, sft, reward, dpo was run")
    cols = 2 if len(panels) > 2 else len(panels)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH, 3.1 * rows + 0.4), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, stage in zip(axes.flat, panels):
        log = logs[stage]
        if stage in ("pretrain", "sft"):
            ax.plot(*series(log, "loss"), color="#1f77b4", lw=1.2, label="train (batch)")
            ax.plot(*series(log, "val_loss"), "o-", color="#d62728", ms=4, lw=1.2, label="validation")
            ax.set_yscale("log")  # the first evaluation (untrained, ~5 nats) would flatten the rest to a line
            ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 0.1, 0.2, 0.5, 1, 2, 5: plain numbers
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            what = "per token" if stage == "pretrain" else "per assistant token"
            ax.set_ylabel(f"cross-entropy (nats {what})")
            ax.set_title("pretrain: the world's prose" if stage == "pretrain" else "sft: the demonstrations")
        else:  # pairwise stages: a loss in nats and accuracies in [0, 1] share one axis, both start near 0.69 / 0.5
            ax.plot(*series(log, "loss"), color="#1f77b4", lw=1.2, label="train loss (nats)")
            if stage == "dpo":
                ax.plot(*series(log, "accuracy"), color="#ff7f0e", lw=1, alpha=0.8, label="train batch accuracy")
            # points, not a line: the RM and DPO are evaluated at the start and the end only, and a line between
            # the two would draw a progress nobody measured
            steps, acc = series(log, "val_accuracy")
            ax.plot(steps, acc, "o", color="#d62728", ms=6, label="held-out accuracy")
            for s, a in zip(steps, acc):
                ax.annotate(f"{a:.2f}", (s, a), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8,
                            color="#d62728")
            steps, base = series(log, "length_baseline")
            if base:
                ax.axhline(base[-1], color="#7f7f7f", ls="--", lw=1, label="longer-answer baseline")
            ax.axhline(0.5, color="#bbbbbb", ls=":", lw=1, label="chance")
            ax.set_ylim(0, 1.08)
            ax.set_ylabel("accuracy (fraction of pairs); loss")
            ax.set_title("reward model: the comparisons" if stage == "reward" else "dpo: the same comparisons")
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Learning curves of the supervised stages")
    fig.tight_layout()
    save(fig, to, "learning_curves.png")


def dpo_rewards(log, to):
    """(2) DPO's implicit reward beta * log(pi / pi_ref) of chosen and rejected answers: a reader sees whether the
    margin grows by raising the chosen answers or (the common case, Rafailov et al. 2023) by pushing rejected down."""
    if not log:
        return print("skipped dpo.png: dpo was not run")
    fig, ax = plt.subplots(figsize=(WIDTH, 3.6))
    ax.plot(*series(log, "chosen_reward"), color="#2ca02c", lw=1.2, label="chosen answers (train batch)")
    ax.plot(*series(log, "rejected_reward"), color="#d62728", lw=1.2, label="rejected answers (train batch)")
    ax.plot(*series(log, "margin"), color="#1f77b4", lw=1.2, label="margin, chosen - rejected (train batch)")
    ax.plot(*series(log, "val_margin"), "o", color="#1f77b4", mfc="white", ms=6, label="margin on held-out pairs")
    ax.axhline(0, color="#7f7f7f", lw=0.8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("implicit reward β·log(π/π_ref) (nats)")
    ax.set_title("DPO: implicit rewards of the answers labelers preferred and rejected")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, to, "dpo.png")


def rl_training(logs, beta0_log, to):
    """(3) the RL runs' own measures over iterations, on their training batches (T = 1 samples of training prompts)."""
    runs = [(s, logs[s], color(s), "-") for s in ("ppo", "ppo_ptx", "ppo_r2", "rloo", "grpo") if logs.get(s)]
    if beta0_log:
        runs.append((f"ppo β={beta0_log[-1].get('beta', 0):g}", beta0_log, color("beta0"), "--"))
    if not runs:
        return print("skipped rl_training.png: none of ppo, rloo, grpo was run")
    fig, axes = plt.subplots(2, 2, figsize=(WIDTH, 6.2), sharex=True)
    for ax, (key, label) in zip(axes.flat, [("rm_score", "RM score (RM units)"),
                                            ("gold", "gold score of the batch (labeler, 0-1)"),
                                            ("kl", "KL to SFT (nats per answer)"),
                                            ("entropy", "entropy (nats per token)")]):
        for name, log, c, ls in runs:
            steps, ys = series(log, key)
            if not ys:
                continue  # a log from before the key existed, or no labeler on this data (gold)
            # a long run's per-iteration noise hides the trend and makes overlaid estimators unreadable: its raw
            # values faint, a moving average over ~1/10 of the run on top; the CPU recipe's 32 are drawn as they are
            k = len(ys) // 20
            if k >= 2:
                ax.plot(steps, ys, color=c, ls=ls, lw=0.6, alpha=0.3)
            ax.plot(steps, smooth(ys, k), color=c, ls=ls, lw=1.6,
                    label=name + (f" (moving average of {2 * k + 1})" if k >= 2 else ""))
        ax.set_ylabel(label)
        ax.set_title(label.split(" (")[0])
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("iteration (one rollout batch)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no iteration 1.5
    axes[0, 0].legend(fontsize=9)
    fig.suptitle("RL against the reward model, on its training batches (T = 1 samples)")
    fig.tight_layout()
    save(fig, to, "rl_training.png")


def overoptimisation(res, beta0_log, to):
    """(4) Gao et al. 2022: the proxy (RM) score keeps rising with KL while the gold score it stands for rises, then
    flattens or falls. The x axis is sqrt-scaled as in their figures: best-of-n's KL is bounded by log n, PPO's
    snapshots reach a few nats, a beta = 0 run tens of nats; on a linear axis the first two would be one point."""
    snaps = (res.get("overoptimisation") or {}).get("snapshots") or []
    bon = res.get("best_of_n") or []
    if not (snaps or bon or beta0_log):
        return print("skipped overoptimisation.png: results.json has no snapshots nor best_of_n (run evaluate.py "
                     "with --snapshots=out/ppo and --reward) and no --beta0 run was given")
    finals = [(n, p) for n, p in res["policies"].items() if p.get("kl_to_sft") is not None and n != "sft"
              and not n.startswith("best_of") and not (snaps and n == "ppo")]  # those curves end at these policies
    kl_max = max([s["kl_to_sft"] for s in snaps] + [b["kl_to_sft"] for b in bon] + [p["kl_to_sft"] for _, p in finals]
                 + [r["kl"] for r in beta0_log or [] if r.get("kl") is not None] + [0.0])
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 4.7), sharex=True)
    for ax, key, log_key, label in [(axes[0], "gold_score", "gold", "gold score (labeler, 0-1)"),
                                    (axes[1], "rm_score", "rm_score", "RM score (RM units)")]:
        if snaps and all(s.get(key) is not None for s in snaps):
            ax.plot([s["kl_to_sft"] for s in snaps], [s[key] for s in snaps], "o-", color=color("ppo"), ms=4,
                    label="PPO snapshots (greedy answers, held-out prompts)")
            last = snaps[-1]  # the path is in iteration order; its end is the final policy
            ax.annotate(f"iter {last['step']}", (last["kl_to_sft"], last[key]), textcoords="offset points",
                        xytext=(5, 0), fontsize=7, color=color("ppo"))
        if bon:
            ax.plot([b["kl_to_sft"] for b in bon], [b[key] for b in bon], "s-", color=color("best_of"), ms=4,
                    label="best-of-n of SFT (KL: its upper bound)")
            for b in bon[1:]:  # n = 1 is the SFT sample itself, at KL 0 on the axis: no room for a label left of it
                ax.annotate(f"n={b['n']}", (b["kl_to_sft"], b[key]), textcoords="offset points", xytext=(-4, 5),
                            ha="right", fontsize=7, color=color("best_of"))
        if beta0_log:
            kl, ys = [r["kl"] for r in beta0_log if r.get(log_key) is not None], series(beta0_log, log_key)[1]
            if ys:
                ax.plot([max(k, 0.0) for k in kl], ys, ".", color=color("beta0"), ms=5, alpha=0.8,
                        label=f"PPO β={beta0_log[-1].get('beta', 0):g} (its training batches, T=1)")
        for name, p in finals:
            if p.get(key) is not None:
                ax.plot(p["kl_to_sft"], p[key], "D", color=color(name), ms=6, mec="white", label=f"{name} (final)")
        ax.set_ylabel(label)
        ax.set_title(label.split(" (")[0] + " against KL")
        ax.grid(alpha=0.3)
    # sqrt scale (above); clip at 0 since a k1 estimate from few samples can come out slightly negative
    axes[0].set_xscale("function", functions=(lambda x: x.clip(0) ** 0.5, lambda x: x ** 2))
    ticks = [t for t in (0, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128) if t <= max(kl_max, 0.25) * 1.05
             and (t >= 1 or t == 0 or kl_max < 4)]  # below 1 the sqrt axis has room for fractions only on short runs
    if len(ticks) >= 3:  # else (a tiny run's KL of hundredths) matplotlib's own ticks say more
        axes[0].set_xticks(ticks, [f"{t:g}" for t in ticks])
    axes[0].set_xlim(0, kl_max * 1.08 or 1)
    for ax in axes:
        ax.set_xlabel("KL to SFT (nats per answer, √ scale)")
    handles, labels = axes[0].get_legend_handles_labels()  # one legend for both panels, below them: none covers data
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("Reward over-optimisation (Gao et al. 2022): gold and RM score against KL to SFT")
    fig.tight_layout(rect=(0, 0.01 + 0.045 * math.ceil(len(labels) / 2), 1, 1))
    save(fig, to, "overoptimisation.png")


def win_rates(all_res, to):
    """(5) greedy win rate against SFT, ties half, with evaluate.py's 95% interval (Tango's score interval, its
    detail 5). SFT itself is left out: it is 0.5 by definition. With several seeds, each seed's point and interval
    and, on top, their mean: the spread between seeds is the error a single run hides."""
    names = []
    for res in all_res:  # the union in the order evaluate.py writes rows; a policy only some seeds have is kept
        names += [n for n in res["policies"] if n != "sft" and n not in names]
    if not names:
        return print("skipped win_rates.png: results.json has no policy but sft")
    many = len(all_res) > 1
    fig, ax = plt.subplots(figsize=(WIDTH, (0.55 if many else 0.4) * len(names) + 2.0))  # room for seeds' rows
    right = [0.0] * len(names)  # where each row's intervals end: its number is written just right of them
    for i, res in enumerate(all_res):
        seed, labelled = res.get("settings", {}).get("seed", i), False
        offset = (i - (len(all_res) - 1) / 2) * 0.18 if many else 0.0  # seeds one above another, not on top
        for y, name in enumerate(names):
            p = res["policies"].get(name)
            if p is None or p.get("win_rate_vs_sft") is None:
                continue
            w, (lo, hi) = p["win_rate_vs_sft"], p["win_ci95"]
            ax.errorbar(w, y + offset, xerr=[[w - lo], [hi - w]], fmt="osv^PX*"[i % 7], capsize=2, lw=1,
                        color="#666666" if many else color(name), ms=4 if many else 7,
                        label=None if labelled else f"seed {seed}, 95% interval" if many else "win rate, 95% interval")
            labelled = True  # one legend entry per seed, whichever of its policies comes first
            right[y] = max(right[y], hi)
            if not many:
                ax.annotate(f"{w:.2f}", (hi, y), textcoords="offset points", xytext=(6, 0), va="center", fontsize=9)
    for y, name in enumerate(names if many else []):
        vals = [r["policies"][name]["win_rate_vs_sft"] for r in all_res
                if r["policies"].get(name, {}).get("win_rate_vs_sft") is not None]
        mean = sum(vals) / len(vals)
        ax.plot(mean, y, "D", color=color(name), ms=9, mec="black", mew=0.8, zorder=5,
                label=f"mean of {len(all_res)} seeds" if y == 0 else None)
        ax.annotate(f"mean {mean:.2f}" + (f" ({len(vals)} seeds)" if len(vals) < len(all_res) else ""),
                    (right[y], y), textcoords="offset points", xytext=(6, 0), va="center", fontsize=9)
    ax.axvline(0.5, color="#7f7f7f", ls="--", lw=1, label="as good as SFT (0.5)")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()  # evaluate.py's order reads top to bottom: gpt first, the aligned policies below
    ax.set_xlim(0, 1)
    ax.set_xlabel("win rate against SFT (fraction of held-out prompts, ties count half)")
    ax.set_title("Win rate against SFT, greedy answers judged by the gold labeler"
                 + (f" ({len(all_res)} seeds)" if many else ""))
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)  # off the data
    fig.tight_layout()
    save(fig, to, "win_rates.png")


def failures(res, to):
    """(6) InstructGPT's Figure 4: for each failure the labeler recognises, its rate among the prompts where it can
    occur (evaluate.py 11), one bar per policy; the number of such prompts under each axis says what a bar weighs."""
    pols = [(n, p["failures"]) for n, p in res["policies"].items() if p.get("failures")]
    if not pols:
        return print("skipped failures.png: results.json has no failure rates")
    axes_ = list(res.get("failure_prompts") or pols[0][1])
    n = res.get("failure_prompts", {})
    fig, ax = plt.subplots(figsize=(WIDTH, 4.2))
    width = 0.84 / len(pols)
    for i, (name, rates) in enumerate(pols):
        xs = [j + (i - (len(pols) - 1) / 2) * width for j in range(len(axes_))]
        ax.bar(xs, [rates.get(a, 0.0) for a in axes_], width, color=color(name), label=name)
    ax.set_xticks(range(len(axes_)), [f"{a}\n({n[a]} prompts)" if a in n else a for a in axes_], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("failure rate (share of prompts\nwhere it can occur)")
    ax.set_title("Failures per policy (InstructGPT Figure 4): greedy answers, held-out prompts")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(len(pols), 4), loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.tight_layout()
    save(fig, to, "failures.png")


def gao(fit, d):
    """frontier.py (6): the fitted gain at each d = sqrt(KL)."""
    a, b = fit["alpha"], fit["beta"]
    return [x * (a - b * x) if fit["form"] == "bon" else x * (a - b * math.log(x)) if x > 0 else 0.0 for x in d]


def frontier(fr, to):
    """(7) The gold-versus-KL frontier (frontier.py): x = sqrt(KL) as Gao et al. plot it, so best-of-n's and the RL
    runs' curves have room; each method's points, its runs' paths through their snapshots, and its fitted form.
    best-of-n starts from SFT sampled at T = 1 (its n = 1) and its KL is an upper bound: hollow squares."""
    if fr is None:
        return print("skipped frontier.png: no frontier/frontier.json (bash run.sh --frontier writes it)")
    pts, sft = fr["points"], fr["sft"]
    methods = list(dict.fromkeys(p["method"] for p in pts))
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 4.6), sharey=True)
    d_max = max([math.sqrt(max(p["kl"], 0.0)) for p in pts] + [1.0])

    def draw(ax, method, label, c):
        own = [p for p in pts if p["method"] == method]
        bon = method.startswith("best_of_n")
        origin = (0.0, own[0]["gold"]) if bon else (0.0, sft["gold"])
        for run in dict.fromkeys(p.get("run") for p in own):  # each run's path from the origin through its snapshots
            path = [origin] + [(math.sqrt(max(p["kl"], 0.0)), p["gold"]) for p in own if p.get("run") == run
                               and not (bon and p["n"] == 1)]
            ax.plot(*zip(*path), "-", color=c, lw=0.8, alpha=0.5)
        ax.plot([math.sqrt(max(p["kl"], 0.0)) for p in own], [p["gold"] for p in own], "s" if bon else "o", ms=4,
                color=c, mfc="none" if bon else c, label=label)
        fit = fr["fits"].get(method)
        if fit:  # drawn a little past the method's last point, not extrapolated across the figure
            xs = [1.1 * max(math.sqrt(max(p["kl"], 0.0)) for p in own) * i / 60 for i in range(61)]
            ax.plot(xs, [origin[1] + y for y in gao(fit, xs)], "--", color=c, lw=1.2)

    main = [m for m in methods if "@" not in m]
    for m in main:
        fit = fr["fits"].get(m)
        r2 = "" if not fit or fit["r2"] is None else f" (fit R²={fit['r2']:.2f})"
        draw(axes[0], m, m.replace("best_of_n", "best-of-n (KL bound)") + r2, color(m))
    axes[0].set_title("every method against the same RM")
    shades = ["#08519c", "#6baed6", "#c6dbef", "#deebf7"]  # all the comparisons darkest, less data lighter
    rm_rows = fr.get("rm_data") or []
    by_data = sorted(range(len(rm_rows)), key=lambda i: -math.inf if i == 0 else -(rm_rows[i]["comparisons"] or 0))
    for i, r in enumerate(rm_rows):  # the first is the runs' own RM, trained on all the comparisons
        c = shades[by_data.index(i)] if len(rm_rows) <= len(shades) else None
        tag = "all" if i == 0 else str(r["comparisons"] or os.path.basename(r["reward_model"]))
        tag += " comparisons"
        draw(axes[1], r["method"], f"best-of-n, RM on {tag}", c)
        if r["ppo_run"]:
            own = [p for p in pts if p.get("run") == r["ppo_run"]]
            path = [(0.0, sft["gold"])] + [(math.sqrt(max(p["kl"], 0.0)), p["gold"]) for p in own]
            axes[1].plot(*zip(*path), "o-", color=c, ms=4, lw=1.2, label=f"PPO β={r['ppo_beta']:g}, RM on {tag}")
    axes[1].set_title("proxy RMs on less data (Gao et al.)" if rm_rows else "(no RM data experiment)")
    for ax in axes:
        ax.axhline(sft["gold"], color=color("sft"), lw=0.8, ls=":")
        ax.plot(0, sft["gold"], "*", color=color("sft"), ms=10, zorder=5)
        ax.set_xlabel("√(KL to SFT), KL in nats per answer")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        ax.set_xlim(-0.05, d_max * 1.05)
    axes[0].set_ylabel("gold score (labeler, greedy answers)")
    fig.suptitle("The gold-versus-KL frontier: points, runs' paths, Gao et al.'s forms (dashed); ★ SFT (greedy)")
    fig.tight_layout()
    save(fig, to, "frontier.png")


def main():
    cfg = parse_config(Config)
    to = cfg.to or os.path.join(cfg.out_dir, "plots")
    # read everything first, so a missing file stops the run before any PNG is half written
    logs = {s: read_log(os.path.join(cfg.out_dir, s), s) for s in STAGES}
    res = read_results(cfg.out_dir)
    seed_dirs = [d for d in cfg.seeds.split(",") if d] or [cfg.out_dir]
    all_res = [res if os.path.abspath(d) == os.path.abspath(cfg.out_dir) else read_results(d) for d in seed_dirs]
    beta0_log = read_log(cfg.beta0, "ppo") if cfg.beta0 else None
    if cfg.beta0 and beta0_log is None:
        raise SystemExit(f"--beta0={cfg.beta0} is not a directory: give the out_dir of a python ppo.py --beta=0 run")
    os.makedirs(to, exist_ok=True)
    learning_curves(logs, to)
    dpo_rewards(logs.get("dpo"), to)
    rl_training(logs, beta0_log, to)
    overoptimisation(res, beta0_log, to)
    win_rates(all_res, to)
    failures(res, to)
    path = os.path.join(cfg.out_dir, "frontier", "frontier.json")
    frontier(json.load(open(path)) if os.path.exists(path) else None, to)


if __name__ == "__main__":
    main()
