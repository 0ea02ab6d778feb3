"""The evaluation report against hand-computed values, and the evaluate CLI on a tiny trained run."""

import json
import subprocess
import sys
from pathlib import Path

import gin
import numpy as np
import pytest

from rlvjax import evaluate, train

REPO = Path(__file__).resolve().parents[1]


def test_calibration_error_by_hand():
    # bin [0.8, 0.9): p 0.8, 0.8 with correctness 1, 0 -> |0.8 - 0.5| = 0.3, weight 1/2
    # bin [0.2, 0.3): p 0.2, 0.2 with correctness 0, 0 -> |0.2 - 0| = 0.2, weight 1/2
    assert evaluate.calibration_error(np.array([0.8, 0.8, 0.2, 0.2]), np.array([1, 0, 0, 0])) == pytest.approx(0.25)


def test_report_by_hand():
    # Problem 0: answers 5, 5, 7, 7 (5 is right); verifier likes the 7s. Problem 1: all wrong or unparseable.
    yes = np.log(np.array([[0.6, 0.6, 0.9, 0.9], [0.5, 0.5, 0.5, 0.5]]))
    no = np.log(1 - np.exp(yes))
    pool = {"answers": np.array([["5", "5", "7", "7"], ["3", None, None, "4"]], dtype=object),
            "correct": np.array([[1, 1, 0, 0], [0, 0, 0, 0]], bool), "yes_logp": yes, "no_logp": no}
    rep = evaluate.report(pool, levels=[1, 2], num_subsets=2000)
    assert rep["ns"] == [1, 2, 4] and rep["pass@1"] == 0.25
    # pass@2 of problem 0 = 1 - C(2,2)/C(4,2) = 5/6; problem 1 = 0
    assert rep["pass@k"]["2"] == pytest.approx(5 / 12)
    assert rep["pass@k"]["4"] == pytest.approx(0.5)
    # At N = 4: majority is a 2-2 tie (broken at random: 1/2); weighted 1.2 vs 1.8 picks 7; BoN picks a 7.
    assert rep["accuracy"]["majority"]["4"] == pytest.approx(0.25)
    assert rep["accuracy"]["weighted"]["4"] == 0.0 and rep["accuracy"]["best_of_n"]["4"] == 0.0
    assert rep["by_level"]["1"] == {"problems": 1, "pass@1": 0.5, "weighted@4": 0.0}
    assert set(rep["verifier"]) >= {"verifier_accuracy", "verifier_auroc", "calibration_error"}
    # Within problem 0 both right answers score 0.6 < 0.9: AUROC 0; problem 1 has no right sample and is left out.
    assert rep["verifier"]["within_problem_auroc"] == 0.0


def test_evaluate_cli_on_a_trained_run(tmp_path):
    gin.clear_config()
    gin.parse_config_files_and_bindings([str(REPO / "configs" / "digit_smoke.gin")], [
        "WarmStartConfig.num_steps = 150", "RunConfig.num_steps = 4", "RunConfig.eval_every = 0",
        "RunConfig.checkpoint_every = 2", "RunConfig.final_eval_samples = 4"])
    try:
        train.run_and_report(tmp_path, compare_baseline=True)
    finally:
        gin.clear_config()
    end_report = json.loads((tmp_path / "eval.json").read_text())
    assert set(end_report) == {"warm_start", "final", "lambda0"}
    assert (tmp_path / "scaling.png").stat().st_size > 10_000
    for extra, name in [([], "final"), (["--checkpoint", "2"], "step_2")]:
        out = subprocess.run([sys.executable, "-m", "rlvjax.evaluate", "--workdir", str(tmp_path), "--num_samples",
                              "4", *extra], capture_output=True, text=True, timeout=300, cwd=REPO)
        assert out.returncode == 0, out.stderr[-2000:]
        rep = json.loads((tmp_path / "eval" / name / "eval.json").read_text())[name]
        assert rep["num_problems"] == 64 and rep["ns"] == [1, 2, 4]
        assert set(rep["accuracy"]) == {"majority", "best_of_n", "weighted"}
        assert "report:" in out.stdout
        # The run's temperature (digit_smoke: 2.0) scatters the samples of a problem.
        assert rep["temperature"] == 2.0 and rep["pass@k"]["4"] > rep["pass@1"] + 0.05
    # --temperature overrides it: near-greedy, the 4 samples of a problem are one answer, so pass@4 = pass@1.
    cold = subprocess.run([sys.executable, "-m", "rlvjax.evaluate", "--workdir", str(tmp_path), "--num_samples", "4",
                           "--temperature", "0.01", "--out", str(tmp_path / "cold")],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert cold.returncode == 0, cold.stderr[-2000:]
    rep = json.loads((tmp_path / "cold" / "eval.json").read_text())["final"]
    assert rep["temperature"] == 0.01 and rep["pass@k"]["4"] == pytest.approx(rep["pass@1"], abs=0.02)
    bad = subprocess.run([sys.executable, "-m", "rlvjax.evaluate", "--workdir", str(tmp_path), "--num_samples", "6"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert bad.returncode != 0 and "power of two" in bad.stderr
