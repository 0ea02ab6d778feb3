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


def test_undefined_metrics_return_as_nan_floats_and_are_written_as_strict_json(tmp_path):
    writer = MetricsWriter(tmp_path, total_steps=1, progress=False)
    returned = writer.write(1, {"auroc": np.float32("nan"), "loss": np.float32(0.5), "grad": float("inf")})
    writer.close()
    assert all(type(v) is float for v in returned.values()) and np.isnan(returned["auroc"])  # np.nanmean works
    line = (tmp_path / "metrics.jsonl").read_text()
    assert json.loads(line, parse_constant=lambda c: pytest.fail(f"metrics.jsonl holds {c}")) == {
        "step": 1, "auroc": "nan", "loss": 0.5, "grad": "inf"}
