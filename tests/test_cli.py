"""Bad input to the CLIs: one line naming the problem, a non-zero exit, nothing written."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("binding,message", [
    ("RLConfig.lambda_verify = -1", "lambda_verify=-1 must be >= 0"),
    ("RLConfig.nope = 1", "doesn't have a parameter named 'nope'"),
    ("RLConfig.algorithm = 'ppo'", "unknown advantage estimator 'ppo'; valid names"),
    ("RLConfig.group_size = 1", "group_size=1"),
    ("TaskSpec.name = 'chess'", "unknown task 'chess'"),
])
def test_train_rejects_bad_config(tmp_path, binding, message):
    workdir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "rlvjax.train", "--gin_param", binding, "--workdir", str(workdir)],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.startswith("rlvjax.train: error:")]
    assert len(lines) == 1 and message in lines[0], out.stderr[-2000:]
    assert not workdir.exists()
