"""frontier.py's arithmetic: Gao et al.'s fits, the matched-KL interpolation, the cache, and its bad input.
The whole sweep through the real scripts runs in tests/test_run.py (run.sh --tiny --full --frontier)."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from frontier import cached, fit_gao, gao_curve, matched, parse_budgets


@pytest.mark.parametrize("form,alpha,beta", [("bon", 0.30, 0.08), ("rl", 0.20, 0.15), ("rl", 0.15, -0.02)])
def test_fit_recovers_known_alpha_and_beta_from_noisy_points(form, alpha, beta):
    """Points of R(d) = d (alpha - beta d) or d (alpha - beta log d) with noise of a gold score's standard error
    at 240 prompts (0.01): the fit gives alpha and beta back, and a high R^2; the peak where the derivative is 0."""
    rng = np.random.default_rng(0)
    d = np.linspace(0.1, 2.5, 24)
    gain = gao_curve(form, alpha, beta, d) + rng.normal(0, 0.01, len(d))
    fit = fit_gao(d, gain, form)
    assert abs(fit["alpha"] - alpha) < 0.02 and abs(fit["beta"] - beta) < 0.02, fit
    assert fit["r2"] > 0.9 and fit["points"] == 24
    if beta > 0:
        peak = alpha / (2 * beta) if form == "bon" else math.exp(alpha / beta - 1)
        assert abs(fit["peak_d"] - peak) / peak < 0.25
        slope = np.gradient(gao_curve(form, fit["alpha"], fit["beta"], [fit["peak_d"] - 1e-3, fit["peak_d"] + 1e-3]))
        assert abs(slope[0]) < 1e-4 and fit["peak_kl"] == pytest.approx(fit["peak_d"] ** 2)
    else:  # a curve still rising: no peak
        assert fit["peak_d"] is None and fit["peak_gain"] is None
    # exact points: exact coefficients; the origin (d = 0) is R(0) = 0 by construction and is left out of the fit
    exact = fit_gao(np.r_[0.0, d], np.r_[0.0, gao_curve(form, alpha, beta, d)], form)
    assert exact["alpha"] == pytest.approx(alpha) and exact["beta"] == pytest.approx(beta) and exact["points"] == 24
    assert fit_gao([0.0, 0.5], [0.0, 0.1], form) is None  # one point: two coefficients cannot be fitted


def test_matched_kl_is_the_best_gold_within_the_budget_interpolated_in_sqrt_kl():
    """Pareto points joined linearly in sqrt(KL), prompt by prompt; a dominated point ignored; flat past the last
    Pareto point while the method went further; None where it never got."""
    g = lambda *v: list(v)  # per-prompt golds of 2 prompts
    origin = {"kl": 0.0, "gold": 0.4, "golds": g(0.4, 0.4)}
    a = {"kl": 1.0, "gold": 0.6, "golds": g(0.5, 0.7)}
    worse = {"kl": 2.0, "gold": 0.5, "golds": g(0.5, 0.5)}   # more KL, less gold than a: not on the frontier
    b = {"kl": 4.0, "gold": 0.8, "golds": g(0.8, 0.8)}
    pts = [origin, a, worse, b]
    # k = 2.25: sqrt is 1.5, half way from a (sqrt 1) to b (sqrt 2)
    assert matched(pts, 2.25).tolist() == pytest.approx([0.65, 0.75])
    assert matched(pts, 0.25).tolist() == pytest.approx([0.45, 0.55])  # sqrt(0.25) = 0.5: half way from the origin to a
    assert matched(pts, 1.0).tolist() == pytest.approx([0.5, 0.7])
    assert matched(pts, 5.0) is None  # beyond the method's largest KL
    assert matched([origin, a, worse], 1.5).tolist() == pytest.approx([0.5, 0.7])  # flat past a: worse reached 2


def test_cached_computes_once_per_key_and_again_when_the_key_changes(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"kl": 0.5, "golds": [1.0, 0.0]}

    key = {"path": "/x/ckpt.pt", "step": 8, "mtime": 1.0}
    assert cached(str(tmp_path), key, compute) == cached(str(tmp_path), key, compute) == compute()
    assert len(calls) == 2  # once for the two cached calls, once for the direct one
    cached(str(tmp_path), {**key, "mtime": 2.0}, compute)  # the checkpoint was written again: measured again
    assert len(calls) == 3 and len(os.listdir(tmp_path)) == 2


@pytest.mark.parametrize("bad", ["", "a,b", "0", "1,-2", "1,,2", "nan"])
def test_a_matched_kl_list_that_is_empty_or_not_positive_numbers_stops_before_anything(bad, tmp_path):
    with pytest.raises(SystemExit, match="comma-separated list of positive numbers"):
        parse_budgets(bad)
    proc = subprocess.run([sys.executable, "frontier.py", f"--match={bad}", f"--out_dir={tmp_path / 'f'}",
                           "--sft=nowhere"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "nothing was started" in proc.stderr
    assert not (tmp_path / "f").exists()
    assert parse_budgets("1,2.5") == [1.0, 2.5]


def test_a_run_directory_without_checkpoints_is_named_before_any_model_is_loaded(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "frontier.py", f"--runs={tmp_path / 'empty'}", "--sft=nowhere",
                           f"--out_dir={tmp_path / 'f'}"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "no ckpt.pt or iter_*.pt" in proc.stderr and str(tmp_path / "empty") in proc.stderr
    assert not (tmp_path / "f").exists()
