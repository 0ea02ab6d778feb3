"""``python -m rlvjax.export --workdir W --out DIR [--checkpoint N] [--overwrite] [--max_shard_size 5GB]
[--dtype bfloat16]``

Writes the policy of a training run's Orbax checkpoint (the latest, or step N) as a Hugging Face directory —
``model.safetensors`` (or shards of at most ``--max_shard_size`` with their index), ``config.json`` and the
tokenizer — that ``transformers.AutoModelForCausalLM`` and
``rlvjax.load_hf`` load. The policy is rebuilt the way ``rlvjax.evaluate --checkpoint`` rebuilds it (from the
config stored with the step), and ``save_hf`` writes into a temporary sibling that is renamed into place, so
``DIR`` appears whole or not at all.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub.serialization._base import parse_size_to_int

from rlvjax import evaluate, policy_tokens, preemption, run_sampling
from rlvjax.checkpoint import Checkpointer
from rlvjax.config import Config, check_local
from rlvjax.model.hf import save_hf
from rlvjax.outputs import MANAGED, is_run, run_under


def export(workdir, out, *, step: int | None = None, overwrite: bool = False, max_shard_size: str = "5GB",
           dtype: str | None = None) -> int:
    """Export checkpoint ``step`` (default: the latest) of the run in ``workdir`` to ``out``, its weights in
    safetensors files of at most ``max_shard_size`` each (as ``save_pretrained``), in ``dtype`` (None: the run's
    ``ModelSpec.dtype``); returns the step."""
    for name, value in (("workdir", workdir), ("out", out)):  # Path("") is ".": an unset $RUN exported the cwd's run
        if not str(value).strip():
            raise ValueError(f"--{name} is empty; pass " + ("a training run's directory" if name == "workdir" else
                                                            "the directory to write"))
    workdir, out = Path(workdir).expanduser(), Path(out).expanduser()  # checked where save_hf writes: "~/x" too
    try:
        if parse_size_to_int(max_shard_size) <= 0:
            raise ValueError("not positive")
    except ValueError:
        raise ValueError(f"--max_shard_size {max_shard_size!r} is not a size; pass a number with a unit, e.g. 5GB "
                         "or 500MB") from None
    checkpoint_dir = workdir / "checkpoints"
    if not workdir.is_dir():
        raise FileNotFoundError(f"workdir {workdir} " + ("is a file, not a directory" if workdir.exists() else
                                                          "does not exist") + "; pass the --workdir of a training run")
    if not checkpoint_dir.is_dir():
        raise FileNotFoundError(f"no checkpoints in {workdir} ({checkpoint_dir} does not exist); train there first")
    check_out(out, workdir, overwrite)
    with Checkpointer(checkpoint_dir, read_only=True) as checkpoints:
        if checkpoints.latest_step() is None:
            unfinished = checkpoints.unfinished_steps()
            raise FileNotFoundError(f"no complete checkpoint in {checkpoint_dir}; " + (
                f"step {unfinished[0]} has no complete save yet (a training run is writing it, or was killed while "
                "writing it): wait for the save" if unfinished else "train there first"))
        step = checkpoints.latest_step() if step is None else step
        stored = checkpoints.read_config(step)  # a step that was not saved fails here, listing the saved ones
    config = Config.from_dict(stored)
    model, tokenizer = evaluate.load_checkpoint_policy(workdir, step, config, on_host=True)
    files = policy_tokens.export_files(tokenizer, config.verifier, config, run_sampling.of_checkpoint(stored, config))
    save_hf(model, tokenizer, out, files=files,
            overwrite=overwrite, max_shard_size=max_shard_size, step=step, dtype=dtype)
    return step


def check_out(out: Path, workdir: Path, overwrite: bool, *, flag: str = "--out",
              overwrite_hint: str = "pass --overwrite") -> None:
    """Refuse to replace files the user may want, and never the run itself or what it manages, in this run or in
    any run above ``out``, nor another run at ``out`` or anywhere inside it (``overwrite`` replaces ``out``); ``flag``
    names ``out`` in the message."""
    check_local(out, flag)
    try:
        out.stat()
    except FileNotFoundError:
        pass
    except NotADirectoryError:
        raise ValueError(f"{flag} {out}: a folder on its path is a file; pass a path under directories") from None
    except OSError as e:  # a name too long, a loop of links, an unreadable parent
        raise ValueError(f"{flag} {out} is not a usable path ({e.strerror}); pass another directory") from None
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {out} is a file; pass a directory path")
    run, target = workdir.resolve(), out.resolve()
    if Path.cwd().resolve().is_relative_to(target):  # '' or '.' (an unset shell variable): it cannot be renamed
        raise ValueError(f"{flag} {str(out)!r} is the working directory or holds it; pass a new directory, e.g. "
                         f"{workdir / 'export'}")
    if run == target or run.is_relative_to(target):
        raise ValueError(f"{flag} {out} would replace the training run {workdir}; export next to it, e.g. "
                         f"{workdir / 'export'}")
    # --overwrite would delete it: never a run, at any depth (without it a non-empty --out is refused below)
    held = target if is_run(target) else run_under(target) if overwrite and out.is_dir() else None
    if held is not None:
        raise ValueError(f"{flag} {out} {'is' if held == target else 'holds'} the training run {held}; "
                         f"export to a new directory, e.g. {workdir / 'export'}")
    for root in [run, *(p for p in target.parents if (p / "checkpoints").is_dir())]:
        inside = target.relative_to(root).parts[0] if target.is_relative_to(root) else None
        if inside in MANAGED:
            where = "is" if target == root / inside else "is inside"  # "RUN/final is inside RUN/final"
            raise ValueError(f"{flag} {out} {where} {root / inside}, which the run in {root} manages; export next "
                             f"to it, e.g. {root / 'export'}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{flag} {out} exists and is not empty; {overwrite_hint} to replace it or choose another")
    # Written beside ``out``, then renamed into its place: a read-only parent or a mount point at ``out`` failed
    # with a traceback once the whole model was written.
    beside = next(p for p in target.parents if p.exists())
    if not os.access(beside, os.W_OK):
        raise PermissionError(f"{flag} {out}: {beside} is not writable (an export is written beside its folder, then "
                              "moved in); choose another directory")
    if os.path.ismount(target):
        raise ValueError(f"{flag} {out} is a mount point, which an export cannot replace; pass a folder inside it, "
                         f"e.g. {out / 'model'}")


def main(argv):
    del argv
    from absl import flags, logging

    logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    with preemption.interrupt_on_sigterm():  # a scheduler's notice removes the half-written copy, as Ctrl-C does
        step = export(f.workdir, f.out, step=f.checkpoint, overwrite=f.overwrite, max_shard_size=f.max_shard_size,
                      dtype=f.dtype)
    print(f"exported step {step} of {f.workdir} to {f.out}")


if __name__ == "__main__":
    from absl import flags

    # Defined here, not at import: rlvjax.train defines --workdir too, and both modules may share a process.
    flags.DEFINE_string("workdir", None, "a training run's workdir", required=True)
    flags.DEFINE_string("out", None, "the Hugging Face directory to write", required=True)
    flags.DEFINE_integer("checkpoint", None, "export this Orbax checkpoint step (default: the latest)")
    flags.DEFINE_bool("overwrite", False, "replace --out when it exists and is not empty")
    flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "the weights' dtype in the files (default: the run's "
                      "ModelSpec.dtype; bfloat16 halves an f32 run's export, as a bf16 base checkpoint was shipped)")
    flags.DEFINE_string("max_shard_size", "5GB", "largest safetensors file; bigger weights are split into shards "
                        "with an index, as transformers' save_pretrained does")
    from rlvjax import cli

    cli.run("rlvjax.export", main)
