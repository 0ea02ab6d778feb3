"""Run logs: ``metrics.jsonl`` + TensorBoard event files + a tqdm bar, and ``samples.jsonl`` of completions.

Only process 0 writes; every other process gets a writer that does nothing, so the loop needs no branches.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rlvjax import atomic

BAR_KEYS = {"reward_mean": "reward", "verifier_accuracy": "ver_acc", "policy_loss": "pl", "verify_loss": "vl"}


def _json(value: float):
    return value if math.isfinite(value) else str(value)  # strict JSON has no NaN: "nan", "inf" as text


class MetricsWriter:
    def __init__(self, workdir, *, total_steps: int, initial_step: int = 0, enabled: bool = True,
                 progress: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        self.dir = Path(workdir)
        (self.dir / "tensorboard").mkdir(parents=True, exist_ok=True)
        self._metrics = open(self.dir / "metrics.jsonl", "a", encoding="utf-8")
        self._samples = open(self.dir / "samples.jsonl", "a", encoding="utf-8")
        # Events are written and flushed with each step, as metrics.jsonl is (tensorboardX's SummaryWriter queues
        # them and flushes every two minutes: a run killed after a checkpoint lost the steps up to it for good).
        # A run restarted from ``initial_step`` repeats the steps after it: its file starts with a START event at
        # the first repeated step, which makes TensorBoard hide what earlier files hold from that step on, as
        # ``rewind_logs`` does for the jsonl. The file is named by the second (tensorboardX's name) and opened "wb":
        # the suffix keeps a run resumed within the same second from emptying the earlier file, and sorts after it
        # (TensorBoard reads files in name order).
        self._tb = EventsWriter(str(self.dir / "tensorboard" / "events"), filename_suffix=f".{time.time_ns()}")
        self._tb.write_event(Event(wall_time=time.time(), step=initial_step + 1,
                                   session_log=SessionLog(status=SessionLog.START)))
        self._tb.flush()
        self._bar = tqdm(total=total_steps, initial=initial_step, disable=not progress, dynamic_ncols=True)

    def write(self, step: int, metrics: dict) -> dict:
        """Log one step; returns the metrics as plain floats (NaN where undefined; metrics.jsonl writes a
        non-finite value as the string "nan" or "inf", which strict JSON can hold)."""
        plain = {k: float(np.asarray(v)) for k, v in metrics.items()}
        if self.enabled:
            self._metrics.write(json.dumps({"step": step, **{k: _json(v) for k, v in plain.items()}}) + "\n")
            self._metrics.flush()
            self._scalars(step, plain)
            self._bar.set_postfix({short: f"{plain[k]:.3f}" for k, short in BAR_KEYS.items()
                                   if math.isfinite(plain.get(k, math.nan))}, refresh=False)
            self._bar.update(step - self._bar.n)
        return plain

    def _scalars(self, step: int, plain: dict) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=k, simple_value=v) for k, v in plain.items() if math.isfinite(v)]
        self._tb.write_event(Event(wall_time=time.time(), step=step, summary=Summary(value=values)))
        self._tb.flush()

    def samples(self, step: int, rows: list[dict]) -> None:
        if self.enabled:
            for row in rows:
                plain = {k: _json(v) if isinstance(v, float) else v for k, v in row.items()}  # as metrics.jsonl
                self._samples.write(json.dumps({"step": step, **plain}) + "\n")
            self._samples.flush()

    def close(self) -> None:
        if self.enabled:
            self._bar.close()
            self._tb.close()
            self._metrics.close()
            self._samples.close()


def rewind_logs(workdir: Path, step: int, aside: Path | None = None) -> None:
    """Drops the ``metrics.jsonl`` / ``samples.jsonl`` rows of steps after ``step``, and a torn last line; with
    ``aside`` (where ``--resume --checkpoint`` moved the later checkpoints) their rows are appended to the files of
    the same names there, so that nothing of those steps is lost.

    A restarted run starts at its latest checkpoint (0 when there is none) and repeats the steps after it; without
    this their rows would appear twice. After it, the log of an interrupted-and-resumed run is the log of the
    uninterrupted run. (TensorBoard's event files are kept; ``MetricsWriter`` marks where the repeated steps begin,
    and TensorBoard hides the earlier files' values from there.)
    """
    for name in ("metrics.jsonl", "samples.jsonl"):
        path = workdir / name
        if not path.exists():
            continue
        kept, dropped = [], []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
            try:
                row = json.loads(line) if line.endswith("\n") else None
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                (kept if row["step"] <= step else dropped).append(line)
        if aside is not None and dropped:  # appended and flushed before the rows leave the run's own file
            with open(aside / name, "a", encoding="utf-8") as f:
                f.write("".join(dropped))
                f.flush()
                os.fsync(f.fileno())
        atomic.write_text(path, "".join(kept))
