"""run.sh --tiny: the whole pipeline, every stage through its real script, on a tiny model."""
import json
import os
import subprocess
import sys

from conftest import ROOT


def test_run_sh_tiny_runs_every_stage_to_the_table(tmp_path):
    proc = subprocess.run(["bash", "run.sh", "--tiny"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("prepare", "pretrain", "sft", "label", "reward", "ppo", "dpo", "evaluate"):
        assert f"-- {stage} took" in proc.stdout
    res = json.load(open(tmp_path / "eval" / "results.json"))
    assert set(res["policies"]) == {"gpt", "gpt_prompted", "sft", "ppo", "dpo", "best_of_2"}
    assert res["policies"]["sft"]["win_rate_vs_sft"] == 0.5
    assert not os.path.exists(os.path.join(ROOT, "out", "tiny"))  # $OUT was honoured: nothing written elsewhere
