"""
The gold-versus-KL frontier: every method at several KL budgets from one SFT model and one reward model, judged by
the labeler's gold score, and Gao et al.'s over-optimisation laws fitted to it.

    bash run.sh --frontier          # the default run, then the sweep (run.sh) and this script, on one seed
    python frontier.py --runs=out/frontier/ppo_b0.1,out/frontier/dpo_b0.1 --reward=out/reward --out_dir=out/frontier
    python plot.py --out_dir=out    # frontier.png from out/frontier/frontier.json

A method that moved further from SFT can look better or worse for that alone, so methods are compared along the
frontier of true reward against KL to the initial policy (Stiennon et al. 2020, fig. 5; Gao et al. 2022, "Scaling
laws for reward model overoptimization"; the DPO paper's fig. 2). Real data cannot give every answer's true reward;
the embedded world's labeler can. Writes out_dir/frontier.json; prints the points, the fits and the matched-KL table.

Details:
 1. Points: each run directory of --runs gives its snapshots iter_*.pt (ppo.py writes one every ckpt_interval
    iterations) and its final ckpt.pt (unless a snapshot is the same step). For each: the greedy answers to
    prompts_eval.jsonl scored by the labeler (evaluate.py 1-3), and the KL to SFT where the run was trained: k1 on
    kl_samples answers per prompt at its training temperature and length limit (evaluate.py 6). Those samples'
    gold is kept too (gold_sampled). SFT is the origin: KL 0, its greedy gold.
 2. A point's method is evaluate.py's row name (ppo, rloo, grpo, ppo_ptx, dpo); its setting the run's --beta (and
    --target_kl when set); a run trained against an RM other than the first of --reward is method@that RM's
    directory name (7).
 3. best_of_n: the first n of N answers of SFT at T = 1 per prompt, for n = 1, 2, 4, ..., N, the RM's favourite
    (reward.best_of_n; the same candidates scored by every RM of --reward, as Gao et al. score one set of samples
    with each proxy RM). Its KL is log n - (n - 1) / n, an upper bound (evaluate.py 9): kl_is_upper_bound, and
    hollow markers in the plot. Its origin is n = 1, SFT sampled at T = 1 (best-of-n has no greedy answer), so its
    gain is over that origin's gold, not over SFT's greedy answers.
 4. Intervals: each point's gain over its origin, paired on the prompts (evaluate.gold_diff, Student's t).
 5. Gold at matched KL (--match, in nats): a method's best gold within the KL budget k. Its Pareto points (the
    origin and every point with more gold than all points of less KL), joined linearly in d = sqrt(KL); past the
    last Pareto point the curve stays flat (stopping earlier is always possible) as long as the method has a point
    at KL >= k, and is None beyond its largest KL (it never got there). The per-prompt golds are interpolated with
    the same weights, so the interval of a matched value is still paired: to the method's origin, and to ppo at the
    same k (results["matched"]). Picking a method's best points from its own noisy measurements flatters it a
    little: the more points, the more.
 6. Gao et al.'s functional forms, d = sqrt(KL), fitted to the gain over the origin: best-of-n R(d) = d (alpha -
    beta d), RL R(d) = d (alpha - beta log d) (their eqs. 1 and 2; dpo gets the RL form too, a choice: the paper has
    no DPO). Both are linear in (alpha, beta): least squares on the columns (d, -d^2) or (d, -d log d), R(0) = 0 by
    construction. R^2 = 1 - SS_res / SS_tot over the method's points. The fitted peak: d* = alpha / (2 beta) for
    best-of-n, d* = exp(alpha / beta - 1) for RL, where beta > 0 and d* is within the measured points (none
    otherwise: a curve still rising at its last point has no measured peak).
 7. Several RMs (--reward=A,B,...; run.sh --frontier trains proxy RMs on a quarter and a half of the comparisons
    beside the one on all of them): best-of-n against each, and each RL run grouped with the RM it was trained on.
    Gao et al. found alpha and beta moving smoothly (about logarithmically) with the proxy RM's size and data; the
    fits per RM (results["fits"], with each RM's comparisons and held-out accuracy in results["reward_models"]) show
    whether they do here.
 8. Every measured point is cached in out_dir/points/, keyed by its checkpoint's path, step and modification time
    and the settings that change it: an interrupted frontier resumes where it stopped, and two processes can measure
    disjoint --runs at once (run.sh does) before one run over all of them gathers the cache.
"""

import glob
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch

from common import (LM_STAGES, ckpt_path, load_checkpoint, load_labeler, model_from_checkpoint, parse_config,
                    read_jsonl, setup)
from evaluate import (answer, check_labeler, check_prompt, fmt, gold_diff, kl_to_sft, row_name, training_sampling,
                      write_json)
from reward import best_of_n, load_reward_model, score_sequences
from tokenizer import get_tokenizer


@dataclass
class Config:
    runs: str = ""                       # ppo.py / dpo.py run directories, comma-separated: their snapshots (1)
    sft: str = "out/sft"                 # the SFT policy every run started from: the origin (1)
    reward: str = "out/reward"           # RMs, comma-separated: the first is the proxy; each picks best-of-n (3, 7)
    data_dir: str = "data/assistant"     # holds prompts_eval.jsonl
    labeler: str = "data/assistant/labeler.py"  # the gold: score(record, response)
    best_of: int = 64                    # N: best-of-n for n = 1, 2, 4, ..., N (3); 0 = none
    match: str = "0.5,1"                 # KL budgets in nats for the matched-KL table (5); RL here ends below 2
    kl_samples: int = 2                  # answers per prompt for a point's KL (1)
    out_dir: str = "out/frontier"        # frontier.json, and points/ (the cache, 8)
    max_new_tokens: int = 64             # answer length limit (a PPO run's KL uses its own, 1)
    batch_size: int = 64                 # prompts per generation batch
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"


def parse_budgets(text, flag="--match"):
    """A comma-separated list of positive numbers (KL budgets or coefficients); one sentence and a stop otherwise."""
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise SystemExit(f"{flag}={text!r}: expected a comma-separated list of positive numbers (as 1,2); "
                         f"nothing was started")
    return values


def fit_gao(d, gain, form):
    """(6) Least squares of gain = d (alpha - beta d) (form "bon") or d (alpha - beta log d) ("rl") over points
    d > 0 (d = sqrt(KL)). Returns {alpha, beta, r2, peak_d, peak_gain, points}; None with fewer than 2 points."""
    d, gain = np.asarray(d, dtype=np.float64), np.asarray(gain, dtype=np.float64)
    keep = d > 0
    d, gain = d[keep], gain[keep]
    if len(d) < 2:
        return None
    X = np.stack([d, -d * d if form == "bon" else -d * np.log(d)], axis=1)  # (n, 2): the model is X @ (alpha, beta)
    (alpha, beta), *_ = np.linalg.lstsq(X, gain, rcond=None)
    resid = gain - X @ np.array([alpha, beta])
    ss_tot = float(((gain - gain.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else None
    peak = None
    if beta > 0:  # a peak past the last point is an extrapolation of the form, not a measurement: none
        peak = alpha / (2 * beta) if form == "bon" else math.exp(alpha / beta - 1)
        peak = peak if peak <= d.max() else None
    return {"form": form, "alpha": float(alpha), "beta": float(beta), "r2": r2, "points": int(len(d)),
            "peak_d": peak, "peak_kl": None if peak is None else peak ** 2,
            "peak_gain": None if peak is None else float(gao_curve(form, alpha, beta, [peak])[0])}


def gao_curve(form, alpha, beta, d):
    """(6) The fitted gain at each d (R(0) = 0)."""
    d = np.asarray(d, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = d * (alpha - beta * d) if form == "bon" else d * (alpha - beta * np.log(d))
    return np.where(d > 0, r, 0.0)


def pareto(points):
    """(5) The origin and the points with more gold than every point of less KL, in order of KL."""
    front = []
    for p in sorted(points, key=lambda p: (p["kl"], -p["gold"])):
        if not front or p["gold"] > front[-1]["gold"]:
            front.append(p)
    return front


def matched(points, k):
    """(5) A method's best gold within KL budget k as per-prompt golds (the Pareto points joined linearly in
    sqrt(KL)), or None when the method never reached KL k. points: dicts with kl, gold, golds (per prompt); the
    first is the origin."""
    if max(p["kl"] for p in points) < k:
        return None
    front = pareto(points)
    below = [p for p in front if p["kl"] <= k]
    a = below[-1]
    above = [p for p in front if p["kl"] > k]
    if not above:  # flat past the last Pareto point: a point further out exists, but none better
        return np.asarray(a["golds"], dtype=np.float64)
    b = above[0]
    w = (math.sqrt(k) - math.sqrt(a["kl"])) / (math.sqrt(b["kl"]) - math.sqrt(a["kl"]))
    return (1 - w) * np.asarray(a["golds"], dtype=np.float64) + w * np.asarray(b["golds"], dtype=np.float64)


def snapshots(run):
    """(1) A run directory's policies in order of step: iter_*.pt, then ckpt.pt (skipped where a snapshot has its
    step)."""
    files = sorted(glob.glob(os.path.join(run, "iter_*.pt")), key=lambda f: int(f.split("_")[-1][:-3]))
    final = os.path.join(run, "ckpt.pt")
    if not os.path.isfile(final) and not files:
        raise SystemExit(f"{run}: no ckpt.pt or iter_*.pt there; train it with ppo.py or dpo.py (bash run.sh "
                         f"--frontier does); nothing was written")
    return files + ([final] if os.path.isfile(final) else [])


def cached(cache_dir, key, compute):
    """(8) compute() once per key: the result is kept in cache_dir as JSON, written atomically."""
    path = os.path.join(cache_dir, hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16] + ".json")
    if os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        if saved.get("key") == key:
            return saved["value"]
    value = compute()
    write_json(path, {"key": key, "value": value})
    return value


def measure(ckpt, sft_ckpt, records, labeler, cfg, rt):
    """(1) A policy's greedy gold per prompt, and its KL to SFT (and those samples' gold) where it was trained."""
    texts, _ = answer(ckpt, records, cfg, rt)
    T, n = training_sampling(ckpt, cfg.max_new_tokens)
    g = torch.Generator(device=rt.device).manual_seed(cfg.seed)
    kl, sampled = kl_to_sft(ckpt, sft_ckpt, records, cfg, rt, g, cfg.kl_samples, T, n)
    many = [r for r in records for _ in range(cfg.kl_samples)]
    return {"golds": [labeler.score(r, t) for r, t in zip(records, texts)], "kl": kl, "kl_temperature": T,
            "gold_sampled": sum(labeler.score(r, t) for r, t in zip(many, sampled)) / len(many),
            "mean_len": sum(len(t) for t in texts) / len(texts)}


def main():
    cfg = parse_config(Config)
    budgets = parse_budgets(cfg.match)
    runs = [r for r in cfg.runs.split(",") if r]
    rms = [r for r in cfg.reward.split(",") if r]
    if cfg.kl_samples < 1 or cfg.best_of < 0:
        raise SystemExit(f"--kl_samples={cfg.kl_samples} must be >= 1 and --best_of={cfg.best_of} >= 0; nothing "
                         f"was started")
    if not runs and not (rms and cfg.best_of):
        raise SystemExit("nothing to measure: give --runs (ppo.py / dpo.py run directories) or --reward with "
                         "--best_of > 0; nothing was started")
    files = {run: snapshots(run) for run in runs}  # every path checked before any model is loaded
    rt = setup(cfg.device, cfg.dtype, cfg.seed)
    labeler = load_labeler(cfg.labeler, required=True)
    check_labeler(labeler, cfg.labeler)
    records = read_jsonl(os.path.join(cfg.data_dir, "prompts_eval.jsonl"), check_prompt,
                         hint="run python data/assistant/prepare.py")
    sft_ckpt = load_checkpoint(cfg.sft, stages=("sft",), hint="the SFT policy the runs started from")
    cache_dir = os.path.join(cfg.out_dir, "points")
    settings = {"data_dir": os.path.abspath(cfg.data_dir), "max_new_tokens": cfg.max_new_tokens,
                "batch_size": cfg.batch_size, "kl_samples": cfg.kl_samples, "seed": cfg.seed,
                "sft": os.path.abspath(cfg.sft)}

    def key_of(path, ckpt):  # (8) what a measured point depends on
        path = ckpt_path(path)  # the file: a run directory's own mtime moves when its log is written
        return {"path": os.path.abspath(path), "step": ckpt["step"], "mtime": os.path.getmtime(path), **settings}

    sft_point = cached(cache_dir, key_of(cfg.sft, sft_ckpt), lambda: measure(sft_ckpt, sft_ckpt, records, labeler,
                                                                            cfg, rt))
    origin = {"method": "sft", "kl": 0.0, "gold": sum(sft_point["golds"]) / len(records), "golds": sft_point["golds"]}
    rm_names = {os.path.abspath(r): os.path.basename(os.path.abspath(r)) for r in rms}
    first_rm = os.path.abspath(rms[0]) if rms else None
    results = {"settings": asdict(cfg), "sft": {k: v for k, v in origin.items() if k != "golds"},
               "points": [], "reward_models": {}}
    by_method = {}  # method -> [point with golds], its origin first
    for run in runs:
        steps = set()
        for path in files[run]:
            ckpt = load_checkpoint(path, stages=LM_STAGES[1:], hint="frontier.py measures chat policies")
            if ckpt["step"] in steps:  # ckpt.pt is the last snapshot again
                continue
            steps.add(ckpt["step"])
            method = row_name(ckpt, path, {})
            rm = ckpt.get("reward") or ckpt["config"].get("reward")  # ppo.py keeps its absolute path
            if ckpt["stage"] == "ppo" and rm and os.path.abspath(rm) != first_rm:  # (2, 7)
                method += "@" + rm_names.get(os.path.abspath(rm), os.path.basename(os.path.abspath(rm)))
            p = cached(cache_dir, key_of(path, ckpt), lambda: measure(ckpt, sft_ckpt, records, labeler, cfg, rt))
            point = {"method": method, "run": run, "file": os.path.basename(path), "step": ckpt["step"],
                     "beta": ckpt["config"].get("beta"), "target_kl": ckpt["config"].get("target_kl") or None,
                     "kl": p["kl"], "kl_temperature": p["kl_temperature"], "gold": sum(p["golds"]) / len(records),
                     "gold_sampled": p["gold_sampled"], "mean_len": p["mean_len"], "golds": p["golds"]}
            by_method.setdefault(method, [origin]).append(point)
            print(f"{method:<18}{run:<32}{point['file']:<12}kl {point['kl']:6.2f}  gold {point['gold']:.3f}")

    if rms and cfg.best_of:  # (3) one set of SFT samples, each RM's pick
        tok = get_tokenizer(sft_ckpt["tokenizer"])
        rm_ckpts = {r: load_checkpoint(r, stages=("reward",)) for r in rms}  # each read once
        key = {"best_of": cfg.best_of, "rms": [key_of(r, rm_ckpts[r]) for r in rms],
               **key_of(cfg.sft, sft_ckpt)}

        def candidates():
            policy = model_from_checkpoint(sft_ckpt, dropout=0.0).to(rt.device).eval()
            g = torch.Generator(device=rt.device).manual_seed(cfg.seed)
            first, _ = load_reward_model(rms[0])
            picks = best_of_n(policy, first.to(rt.device), [tok.render_prompt(r["messages"]) for r in records],
                              cfg.best_of, tok.pad_id, tok.end_id, rt, cfg.max_new_tokens, 1.0,
                              batch_size=cfg.batch_size, generator=g)
            gold = [[labeler.score(r, tok.decode(ids)) for ids, _, _ in p[3]] for r, p in zip(records, picks)]
            scores = [[[s for _, _, s in p[3]] for p in picks]]
            for path in rms[1:]:
                rm, _ = load_reward_model(path)
                rm.to(rt.device)
                block = rm.gpt.config.block_size
                seqs = [(tok.render_prompt(r["messages"]) + ids + [tok.end_id] * fin)[-block:]
                        for r, p in zip(records, picks) for ids, fin, _ in p[3]]
                flat = score_sequences(rm, seqs, tok.pad_id, rt, cfg.batch_size)
                scores.append([flat[i * cfg.best_of:(i + 1) * cfg.best_of] for i in range(len(records))])
            return {"gold": gold, "scores": scores}

        bon = cached(cache_dir, key, candidates)
        for i, path in enumerate(rms):
            method = "best_of_n" + ("" if i == 0 else "@" + rm_names[os.path.abspath(path)])
            ns = sorted({2 ** j for j in range(cfg.best_of.bit_length())} | {cfg.best_of})
            origin_bon = None
            for n in ns:
                picks = [max(range(n), key=lambda j: row[j]) for row in bon["scores"][i]]  # first of ties
                golds = [row[j] for row, j in zip(bon["gold"], picks)]
                point = {"method": method, "n": n, "kl": math.log(n) - (n - 1) / n, "kl_is_upper_bound": True,
                         "gold": sum(golds) / len(golds), "golds": golds}
                if n == 1:
                    origin_bon = point
                    by_method[method] = [point]
                else:
                    by_method[method].append(point)
            assert origin_bon is not None
            ck = rm_ckpts[path]
            results["reward_models"][path] = {"val_accuracy": ck.get("val_accuracy"),
                                              "comparisons": ck.get("train_comparisons"), "method": method}

    # (4) each point's gain over its method's origin, paired; (6) the fits
    results["fits"] = {}
    print(f"\n{'method':<22}{'setting':<16}{'kl':>8}{'gold':>8}{'gain over origin [95% CI]':>30}")
    for method, pts in by_method.items():
        base = pts[0]
        for p in pts[1:]:
            p["gain"] = gold_diff(p["golds"], base["golds"])
            setting = f"n={p['n']}" if "n" in p else f"beta={p['beta']:g} it{p['step']}"
            g = p["gain"]
            print(f"{method:<22}{setting:<16}{('<=' if p.get('kl_is_upper_bound') else '') + format(p['kl'], '.2f'):>8}"
                  f"{p['gold']:>8.3f}{g['mean']:>+12.3f} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]")
        form = "bon" if method.startswith("best_of_n") else "rl"
        results["fits"][method] = fit_gao([math.sqrt(max(p["kl"], 0.0)) for p in pts[1:]],
                                          [p["gold"] - base["gold"] for p in pts[1:]], form)
    results["fits_by_run"] = {}  # (6, 7) one RL run's own path: its snapshots at one beta against one RM
    for method, pts in by_method.items():
        for run in dict.fromkeys(p["run"] for p in pts[1:] if "run" in p):
            own = [p for p in pts[1:] if p.get("run") == run]
            results["fits_by_run"][run] = fit_gao([math.sqrt(max(p["kl"], 0.0)) for p in own],
                                                  [p["gold"] - pts[0]["gold"] for p in own], "rl")
    print(f"\nGao et al.'s forms on the gain over each method's origin, d = sqrt(KL) (6)")
    print(f"{'method':<22}{'form':>6}{'alpha':>9}{'beta':>9}{'R^2':>7}{'points':>8}{'peak kl':>9}{'peak gain':>11}")
    for method, f in results["fits"].items():
        if f is None:
            print(f"{method:<22}  fewer than 2 points: no fit")
            continue
        r2 = "-" if f["r2"] is None else f"{f['r2']:.2f}"
        peak = "-" if f["peak_kl"] is None else f"{f['peak_kl']:.2f}"
        pg = "-" if f["peak_gain"] is None else f"{f['peak_gain']:+.3f}"
        print(f"{method:<22}{f['form']:>6}{f['alpha']:>9.3f}{f['beta']:>9.3f}{r2:>7}{f['points']:>8}{peak:>9}{pg:>11}")

    # (5) gold at matched KL, paired to the origin and to ppo at the same budget
    results["matched"] = []
    print(f"\ngold at matched KL (5): the best within the budget, Pareto points joined in sqrt(KL); gain over the "
          f"method's origin and difference to ppo, paired on the prompts")
    print(f"{'kl':>5}  {'method':<22}{'gold':>8}{'gain [95% CI]':>28}{'minus ppo [95% CI]':>28}")
    for k in budgets:
        at = {m: matched(pts, k) for m, pts in by_method.items()}
        for method, golds in at.items():
            row = {"kl": k, "method": method, "gold": None, "gain": None, "minus_ppo": None}
            if golds is not None:
                row.update(gold=float(golds.mean()), gain=gold_diff(golds, by_method[method][0]["golds"]))
                if at.get("ppo") is not None and method != "ppo":
                    row["minus_ppo"] = gold_diff(golds, at["ppo"])
            results["matched"].append(row)
            cell = lambda d: "-" if d is None else f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
            gold = "never reached" if golds is None else f"{row['gold']:.3f}"
            print(f"{k:>5g}  {method:<22}{gold:>8}{cell(row['gain']):>28}{cell(row['minus_ppo']):>28}")
    # (7) the RM data experiment: per RM, best-of-n's fit and PPO's run against it at one beta
    results["rm_data"] = []
    q_runs = {p["method"].split("@")[1]: p for pts in by_method.values() for p in pts
              if p["method"].startswith("ppo@")}
    beta = next(iter(q_runs.values()))["beta"] if q_runs else None
    for i, path in enumerate(rms if cfg.best_of else []):
        name = rm_names[os.path.abspath(path)]
        if i == 0:
            run = next((p["run"] for p in by_method.get("ppo", [])[1:] if p["beta"] == beta and not p["target_kl"]),
                       None)
        else:
            run = q_runs[name]["run"] if name in q_runs else None
        last = [p for pts in by_method.values() for p in pts if run and p.get("run") == run]
        results["rm_data"].append({
            "reward_model": path, **results["reward_models"][path],
            "best_of_n_fit": results["fits"][results["reward_models"][path]["method"]],
            "ppo_run": run, "ppo_beta": beta, "ppo_fit": results["fits_by_run"].get(run),
            "ppo_final": None if not last else {k: last[-1][k] for k in ("kl", "gold", "gain")}})
    if results["rm_data"]:
        print(f"\nthe RM data experiment (7): each RM's comparisons, its held-out accuracy, and the fits of best-of-n "
              f"and of PPO (beta {beta}) against it")
        print(f"{'reward model':<28}{'comparisons':>12}{'accuracy':>9}{'bon alpha':>10}{'beta':>7}{'R^2':>6}"
              f"{'ppo alpha':>10}{'beta':>7}{'R^2':>6}{'ppo kl':>8}{'ppo gold':>9}")
        for r in results["rm_data"]:
            f, g, last = r["best_of_n_fit"] or {}, r["ppo_fit"] or {}, r["ppo_final"] or {}
            print(f"{r['reward_model'][-28:]:<28}{fmt(r['comparisons'], 'd'):>12}{fmt(r['val_accuracy']):>9}"
                  f"{fmt(f.get('alpha')):>10}{fmt(f.get('beta')):>7}{fmt(f.get('r2'), '.2f'):>6}"
                  f"{fmt(g.get('alpha')):>10}{fmt(g.get('beta')):>7}{fmt(g.get('r2'), '.2f'):>6}"
                  f"{fmt(last.get('kl'), '.2f'):>8}{fmt(last.get('gold')):>9}")
    for method, pts in by_method.items():
        results["points"] += [{k: v for k, v in p.items() if k != "golds"} for p in pts if p is not origin]
    write_json(os.path.join(cfg.out_dir, "frontier.json"), results)
    print(f"\nwrote {os.path.join(cfg.out_dir, 'frontier.json')}")


if __name__ == "__main__":
    main()
