"""The README's main command, shrunken: `python -m rlvjax.train` on the default config (arithmetic task, warm start,
RL^V, end-of-run report) with a smaller model, fewer steps and a smaller eval, as a subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHRINK = [
    "ModelSpec.num_layers = 2", "TaskSpec.levels = (1,)", "TaskSpec.num_eval = 32",
    "WarmStartConfig.num_steps = 700", "WarmStartConfig.batch_size = 32",
    "RunConfig.num_steps = 40", "RunConfig.batch_size = 16", "RunConfig.final_eval_samples = 8",
    "RLConfig.max_new_tokens = 16", "OptimConfig.learning_rate = 5e-4",
]
STRATEGIES = {"majority", "best_of_n", "weighted"}


def test_shrunken_default_pipeline_writes_the_report(tmp_path):
    args = [sys.executable, "-m", "rlvjax.train", "--workdir", str(tmp_path)]
    for binding in SHRINK:
        args += ["--gin_param", binding]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "pass@1" in out.stdout and f"report: {tmp_path / 'eval.json'}" in out.stdout, out.stdout
    assert (tmp_path / "scaling.png").stat().st_size > 10_000

    reports = json.loads((tmp_path / "eval.json").read_text())
    assert set(reports) == {"warm_start", "final"}
    for rep in reports.values():
        assert rep["num_problems"] == 32 and rep["num_samples"] == 8 and rep["ns"] == [1, 2, 4, 8]
        assert set(rep["pass@k"]) == {"1", "2", "4", "8"}
        assert set(rep["accuracy"]) == STRATEGIES
        assert all(set(curve) == {"1", "2", "4", "8"} for curve in rep["accuracy"].values())
        assert {"verifier_accuracy", "verifier_balanced_accuracy", "verifier_auroc",
                "calibration_error"} <= set(rep["verifier"])
        assert set(rep["by_level"]) == {"1"}
        assert "compute_efficiency_weighted_vs_majority" in rep
        for value in [rep["pass@1"], *rep["pass@k"].values(), *rep["verifier"].values()]:
            assert value is None or np.isnan(value) or 0.0 <= value <= 1.0
