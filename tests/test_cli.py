"""Bad input to the real ``python -m rlvjax.train`` process: one line naming the problem, exit 2, nothing written.

A handful of subprocess runs prove the end-to-end contract (flag parsing, the exit code, the single stderr line);
the full catalogue of bad inputs runs in-process in test_errors.py (see docs/errors.md).
"""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args,message", [
    (["--gin_param", "RLConfig.lambda_verify = -1"], "RLConfig.lambda_verify=-1 must be >= 0"),
    (["--gin_param", "RLConfig.nope = 1"], "Configurable 'RLConfig' doesn't have a parameter named 'nope' (In "
                                           "bindings string line 1 RLConfig.nope = 1); see the configurables'"),
    (["--gin_file", "configs/nope.gin"], "no such gin file: configs/nope.gin; check the --gin_file path"),
])
def test_train_rejects_bad_config(tmp_path, args, message):
    workdir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "rlvjax.train", *args, "--workdir", str(workdir)],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.startswith("rlvjax.train: error:")]
    assert len(lines) == 1 and message in lines[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "In call to configurable" not in out.stderr
    assert not workdir.exists()
