"""Run logs after a resume: metrics.jsonl and what TensorBoard shows both hold each step once, with the values of
the run that went on."""

import json
import struct
import types

import numpy as np
import pytest
from tensorboardX import event_file_writer
from tensorboardX.proto.event_pb2 import Event, SessionLog

from rlvjax.metrics import MetricsWriter, rewind_logs


def tensorboard_view(directory) -> dict[int, float]:
    """The loss curve as TensorBoard shows it: event files in order, and a START event at step s hides every value
    read so far at steps >= s (TensorBoard's purge of orphaned steps)."""
    shown = {}
    for path in sorted(directory.iterdir()):
        data, at = path.read_bytes(), 0
        while at < len(data):  # TFRecord: length, its crc, the record, its crc
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 16 + length
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                shown = {s: v for s, v in shown.items() if s < event.step}
            for value in event.summary.value:
                shown[event.step] = value.simple_value
    return shown


def test_a_resumed_run_logs_each_step_once_in_jsonl_and_tensorboard(tmp_path, monkeypatch):
    # tensorboardX names event files by the second: here both writers start in the same one
    monkeypatch.setattr(event_file_writer, "time", types.SimpleNamespace(time=lambda: 1_700_000_000.0))
    first = MetricsWriter(tmp_path, total_steps=4, progress=False)
    for step in range(1, 5):
        first.write(step, {"loss": float(step)})
    first.close()
    rewind_logs(tmp_path, 2)  # the newest checkpoint was step 2: steps 3 and 4 run again
    again = MetricsWriter(tmp_path, total_steps=4, initial_step=2, progress=False)
    for step in (3, 4):
        again.write(step, {"loss": 10.0 + step})
    again.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 13.0), (4, 14.0)]
    assert len(list((tmp_path / "tensorboard").iterdir())) == 2
    assert tensorboard_view(tmp_path / "tensorboard") == {1: 1.0, 2: 2.0, 3: 13.0, 4: 14.0}


def test_a_run_killed_after_a_checkpoint_keeps_its_steps_in_tensorboard(tmp_path):
    """tensorboardX's SummaryWriter queued events and flushed them every two minutes: a run killed (-9) after its
    step-3 checkpoint had steps 1-4 in metrics.jsonl and none in its event file, and after the resume TensorBoard
    showed only the repeated steps. Events are flushed with each step now, as metrics.jsonl is."""
    import os
    import subprocess
    import sys

    script = ("import os, sys; from rlvjax.metrics import MetricsWriter\n"
              "w = MetricsWriter(sys.argv[1], total_steps=5, progress=False)\n"
              "for step in range(1, 5): w.write(step, {'loss': float('nan') if step == 2 else float(step)})\n"
              "os.kill(os.getpid(), 9)\n")
    killed = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert killed.returncode == -9
    rewind_logs(tmp_path, 3)
    again = MetricsWriter(tmp_path, total_steps=5, initial_step=3, progress=False)
    for step in (4, 5):
        again.write(step, {"loss": 10.0 + step})
    again.close()
    assert tensorboard_view(tmp_path / "tensorboard") == {1: 1.0, 3: 3.0, 4: 14.0, 5: 15.0}  # NaN: not plotted


def test_undefined_metrics_return_as_nan_floats_and_are_written_as_strict_json(tmp_path):
    writer = MetricsWriter(tmp_path, total_steps=1, progress=False)
    returned = writer.write(1, {"auroc": np.float32("nan"), "loss": np.float32(0.5), "grad": float("inf")})
    writer.close()
    assert all(type(v) is float for v in returned.values()) and np.isnan(returned["auroc"])  # np.nanmean works
    line = (tmp_path / "metrics.jsonl").read_text()
    assert json.loads(line, parse_constant=lambda c: pytest.fail(f"metrics.jsonl holds {c}")) == {
        "step": 1, "auroc": "nan", "loss": 0.5, "grad": "inf"}


def test_sample_logs_are_strict_json_and_say_p_yes_as_the_report_does(tmp_path):
    """A sample the verifier could not score (Yes and No both -inf) wrote a bare NaN to samples.jsonl and
    eval_samples.jsonl, which strict readers (jq) refuse; eval_samples' p_yes was the raw p(Yes) while eval.json's
    verifier_p_yes and samples.jsonl's are normalised over {Yes, No}."""
    from rlvjax import reports, testtime

    writer = MetricsWriter(tmp_path, total_steps=1, progress=False)
    writer.samples(1, [{"prompt": "p", "p_yes": float("nan"), "reward": 1.0}])
    writer.close()
    strict = lambda text: [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in {line}"))  # noqa: E731
                           for line in text.splitlines()]
    assert strict((tmp_path / "samples.jsonl").read_text()) == [{"step": 1, "prompt": "p", "p_yes": "nan",
                                                                  "reward": 1.0}]
    with np.errstate(divide="ignore"):  # log(0): a Yes and a No the verifier gives no mass
        yes, no = np.log([[0.3, 0.2, 0.0]]), np.log([[0.1, 0.6, 0.0]])
    pool = {"yes_logp": yes, "no_logp": no, "texts": np.array([["a", "b", "c"]], object),
            "answers": np.array([["1", "2", None]], object), "rewards": np.array([[1.0, 0.0, 0.0]]),
            "correct": np.array([[True, False, False]]), "lengths": np.array([[3, 4, 5]]),
            "finished": np.array([[True, True, False]])}
    with np.errstate(divide="ignore"):
        path = reports.write_samples(pool, [{"prompt": "q", "gold": "1", "id": "0"}], testtime.Conventions(),
                                     tmp_path / "eval_samples.jsonl")
    rows = strict(path.read_text())
    np.testing.assert_allclose([r["p_yes"] for r in rows], [0.75, 0.25, 0.0])  # 0.3 / (0.3 + 0.1), ...
    np.testing.assert_allclose([r["p_yes_raw"] for r in rows], [0.3, 0.2, 0.0])
    with np.errstate(divide="ignore"):  # under another score, p_yes stays normalised; the score is its own field
        path = reports.write_samples(pool, [{"prompt": "q", "gold": "1", "id": "0"}], testtime.Conventions(score="raw"),
                                     tmp_path / "eval_samples.jsonl")
    rows = strict(path.read_text())
    np.testing.assert_allclose([r["p_yes"] for r in rows], [0.75, 0.25, 0.0])
    np.testing.assert_allclose([r["score"] for r in rows], [0.3, 0.2, 0.0])
