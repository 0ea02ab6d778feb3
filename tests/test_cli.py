"""Bad input to the real ``python -m rlvjax.train`` process: one line naming the problem, exit 2, nothing written.

A handful of subprocess runs prove the end-to-end contract (flag parsing, the exit code, the single stderr line);
the full catalogue of bad inputs runs in-process in test_errors.py (see docs/errors.md).
"""

import subprocess
import sys
from pathlib import Path

import pytest

import forkserver

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args,message", [
    (["--gin_param", "RLConfig.lambda_verify = -1"], "RLConfig.lambda_verify=-1 must be >= 0"),
    (["--gin_param", "RLConfig.nope = 1"], "Configurable 'RLConfig' doesn't have a parameter named 'nope' (In "
                                           "bindings string line 1 RLConfig.nope = 1); docs/config.md lists every "
                                           "Section.field"),
    (["--gin_file", "configs/nope.gin"], "no such gin file: configs/nope.gin; check the --gin_file path"),
])
def test_train_rejects_bad_config(tmp_path, args, message):
    workdir = tmp_path / "run"
    out = forkserver.run([sys.executable, "-m", "rlvjax.train", *args, "--workdir", str(workdir)],
                         timeout=300, cwd=REPO)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.startswith("rlvjax.train: error:")]
    assert len(lines) == 1 and message in lines[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "In call to configurable" not in out.stderr
    assert not workdir.exists()


def test_broken_gin_files_and_an_empty_workdir_are_one_line_errors(tmp_path):
    (tmp_path / "include.gin").write_text("include 'nope/missing.gin'\n")
    (tmp_path / "import.gin").write_text("import nonexistent_module_xyz\n")
    (tmp_path / "latin1.gin").write_bytes("RunConfig.num_steps = 2  # caf\xe9\n".encode("latin-1"))
    cases = [
        (["--gin_file", str(tmp_path / "include.gin")],
         f"gin include in {tmp_path / 'include.gin'} line 1: Unable to open file: nope/missing.gin"),
        (["--gin_file", str(tmp_path / "import.gin")],
         f"gin `import nonexistent_module_xyz` in {tmp_path / 'import.gin'} line 1: no such module"),
        (["--gin_file", str(tmp_path / "latin1.gin")],
         f"{tmp_path / 'latin1.gin'} (or a file it includes) is not UTF-8 text (invalid continuation byte"),
        (["--workdir", ""], "--workdir is empty; pass the run's directory, e.g. --workdir runs/default"),
    ]
    for args, message in cases:
        workdir = [] if "--workdir" in args else ["--workdir", str(tmp_path / "run")]
        out = forkserver.run([sys.executable, "-m", "rlvjax.train", *args, *workdir], timeout=300, cwd=tmp_path)
        lines = [line for line in out.stderr.splitlines() if line.startswith("rlvjax.train: error:")]
        assert out.returncode == 2 and len(lines) == 1 and message in lines[0], (args, out.stderr[-2000:])
        assert "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["import.gin", "include.gin", "latin1.gin"]


@pytest.mark.parametrize("module,flag", [("train", "--help"), ("evaluate", "--help"), ("export", "-h")])
def test_help_exits_zero(module, flag, tmp_path):
    """absl exits 1 after --help, which errors.md and scripts read as a run that stopped itself; -h was an unknown
    flag (exit 2), where the launchers take it. A fresh interpreter (the other commands of the tests are forks of
    one that has imported their libraries): each command starts from nothing, without a warning."""
    done = subprocess.run([sys.executable, "-m", f"rlvjax.{module}", flag], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr[-2000:]
    assert "--workdir" in done.stdout and not list(tmp_path.iterdir())
