"""``python -m rlvjax.train ... --dry_run``: every hardware config compiles at Qwen2.5-Math-1.5B's real widths on
faked devices (2 of its 28 layers), XLA's per-device memory agrees with the plan, and the decode loop holds no
cache-sized copy; bad architectures and budgets give one line and exit 2."""

import json
import os
import re
import sys
from pathlib import Path

import pytest

from rlvjax import hlo
import forkserver

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
EXPERIMENT = CONFIGS / "experiments" / "rlv_grpo_math.gin"
QWEN = json.loads((CONFIGS / "models" / "qwen2_5_math_1_5b" / "config.json").read_text())
ROW = re.compile(r"^\s+(rollout|value pass|update|eval|final eval)\s+([\d.]+) (GiB|MiB)\s+([\d.]+) (GiB|MiB)"
                 r"\s+([\d.]+)\s*(\d*)$")


def dry_run(*args, cwd=REPO):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    # the tests' flags (LLVM unoptimised: the same buffers, 8% less compiling), less a device count: the dry run fakes
    # the mesh's devices itself
    env["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
    return forkserver.run([sys.executable, "-m", "rlvjax.train", "--dry_run", *args], cwd=cwd, env=env,
                          timeout=600)


def two_layer_qwen(tmp_path) -> Path:
    path = tmp_path / "qwen2_layers" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({**QWEN, "num_hidden_layers": 2}))
    return path


def _bindings_but_the_budget(path: Path) -> tuple[str, ...]:
    """A hardware config's bindings less its MemoryConfig.device_memory_gib (the test below sets its own)."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return tuple(sorted(line for line in lines if line and not line.startswith("MemoryConfig.device_memory_gib")))


# Configs that differ only in their budget compile the same programs: one dry run covers them all (4xa100 and
# tpu_v4_8: the same fsdp 2 x tensor 2 layout on 40 and 32 GB chips).
_BY_BINDINGS: dict[tuple[str, ...], list[Path]] = {}
for _path in sorted((CONFIGS / "hardware").glob("*.gin")):
    _BY_BINDINGS.setdefault(_bindings_but_the_budget(_path), []).append(_path)
HARDWARE = [pytest.param(paths[0], (), id="+".join(p.stem for p in paths)) for paths in _BY_BINDINGS.values()] + [
    # FSDP alone on the other 8-GPU layout: weights split only on their second dimension are relaid out for sampling
    # through copies; the eval's prefill MLP intermediates were uncounted there (1.15 of the plan at 2 layers); and
    # VinePPO, whose value pass (K unscored continuations of a chunk of step prefixes) is a phase of its own
    pytest.param(CONFIGS / "hardware" / "4xa100.gin",
                 ("MeshConfig.fsdp = 8", "MeshConfig.tensor = 1", "RLConfig.algorithm = 'vineppo'"),
                 id="4xa100_as_fsdp_8_vineppo")]


@pytest.mark.parametrize("hardware,mesh", HARDWARE)
def test_each_hardware_config_compiles_to_its_plan_without_cache_copies(hardware, mesh, tmp_path):
    # f32 compute: the CPU backend runs bf16 matmuls in f32 (with f32 operand copies an accelerator does not make),
    # so f32 is where its compiled memory is the accelerator's. The KV cache layout does not depend on the dtype.
    out = dry_run("--gin_file", str(EXPERIMENT), "--gin_file", str(hardware), *(a for b in mesh for a in
                                                                                   ("--gin_param", b)),
                  "--gin_param", f"ModelSpec.config_json = '{two_layer_qwen(tmp_path)}'",
                  "--gin_param", "ModelSpec.compute_dtype = None", "--gin_param", "MemoryConfig.device_memory_gib = 1e6",
                  cwd=tmp_path)  # no checkpoints/ nor data/ here; the programs go to the default compilation cache
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [ROW.match(line) for line in out.stdout.splitlines()]
    rows = {m.group(1): m for m in rows if m}
    assert {"rollout", "update", "eval", "final eval"} <= set(rows), out.stdout
    assert ("value pass" in rows) == ("RLConfig.algorithm = 'vineppo'" in mesh), out.stdout
    for phase, m in rows.items():
        assert 0.9 <= float(m.group(6)) <= 1.1, (hardware.stem, phase, m.group(0))
        if phase != "update":
            assert m.group(7) == "0", (hardware.stem, phase, "cache-sized copies in the decode loop")
    assert "qwen2 2 layers, weights float32, compute float32; prompts padded to 1024 tokens" in out.stdout


def test_over_budget_and_unknown_architectures_are_one_line_errors(tmp_path):
    hardware = CONFIGS / "hardware" / "4xa100.gin"
    small = dry_run("--gin_file", str(EXPERIMENT), "--gin_file", str(hardware),
                    "--gin_param", f"ModelSpec.config_json = '{two_layer_qwen(tmp_path)}'",
                    "--gin_param", "MemoryConfig.device_memory_gib = 1.0")
    assert small.returncode == 2 and small.stderr.count("\n") == 1, small.stderr[-2000:]
    assert re.match(r"rlvjax.train: error: needs [\d.]+ GiB per device \(\w+ phase\), has 1.00 GiB: \w+", small.stderr)
    assert "compiled per device" not in small.stdout  # refused before compiling
    gpt2 = tmp_path / "gpt2.json"
    gpt2.write_text(json.dumps({**QWEN, "model_type": "gpt2"}))
    for path, message in ((gpt2, "unsupported architecture model_type='gpt2'"),
                          (tmp_path / "missing.json", "ModelSpec.config_json: no such file")):
        out = dry_run("--gin_file", str(EXPERIMENT), "--gin_param", f"ModelSpec.config_json = '{path}'")
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr[-2000:]


def test_the_dry_run_refuses_what_the_run_refuses_and_goes_on_where_it_goes_on(tmp_path, tmp_path_factory):
    """It passed configs the run refuses (too many positions, a warm-start batch that does not split over the
    devices) and refused before compiling one the run accepts with a warning (MemoryConfig.refuse = False)."""
    cache = tmp_path_factory.mktemp("xla")
    tiny = str(CONFIGS / "quickstart_tiny.gin")
    # the prompts' own length, not their batch's padded width (16; it refused runs that fit)
    for binding, message in (("RLConfig.max_new_tokens = 4096", "up to 10 tokens + RLConfig.max_new_tokens=4096 + the "
                              "verify prompt (1) = 4107 positions, more than the model's max_position_embeddings=4096"),
                             ("WarmStartConfig.batch_size = 3", "WarmStartConfig.batch_size of 3 rows does not "
                              "divide over data*fsdp=2 devices"),
                             # XLA replicated the micro-batch whole; and a report with no problems, refused by the
                             # run after it had trained, passed the dry run
                             ("RLConfig.micro_batch_size = 1", "RLConfig.micro_batch_size of 1 rows does not "
                              "divide over data*fsdp=2 devices"),
                             ("TaskSpec.num_eval = 0", "RunConfig.final_eval_samples=2 asks for an end-of-run "
                              "report, but the task has no eval problems")):
        out = dry_run("--gin_file", tiny, "--gin_param", "MeshConfig.data = 2", "--gin_param", binding, cwd=tmp_path)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr[-2000:]
    # MeshConfig.data left at -1 (the devices left over): nothing is faked, and it said "1 devices do not split into
    # fsdp*tensor=2; change the mesh sizes", as if the mesh were wrong
    out = dry_run("--gin_file", tiny, "--gin_param", "MeshConfig.fsdp = 2", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "the dry run fakes the devices only when every " \
        "axis is given: set MeshConfig.data (now -1, the devices left over)" in out.stderr, out.stderr[-2000:]
    faked = ("--gin_file", tiny, "--gin_param", "MeshConfig.data = 2",
             "--gin_param", f"RunConfig.compilation_cache_dir = '{cache}'")
    budget = lambda gib: ("--gin_param", f"MemoryConfig.device_memory_gib = {gib}")
    # float32: the plan (775 KiB at its peak) fits 800 KiB, the compiled warm start (849 KiB) does not
    out = dry_run(*faked, *budget(800 / 2**20), cwd=tmp_path)
    assert out.returncode == 2 and "error: the compiled warm start step needs " in out.stderr, out.stderr[-2000:]
    # MemoryConfig.refuse = False: over the plan and over the compiled step, a warning each, as the run warns (the
    # compiled step was refused)
    out = dry_run(*faked, *budget(0.0002), "--gin_param", "MemoryConfig.refuse = False", cwd=tmp_path)
    assert "(MemoryConfig.refuse = False: compiling anyway)" in out.stdout, out.stdout[-2000:]
    assert out.returncode == 0 and "warning: the compiled warm start step needs " in out.stdout, out.stdout[-2000:]
    # bfloat16 on CPU: the compiled figures are upper bounds (float32 copies an accelerator does not make), the plan
    # is the check: 597 KiB fits 650 KiB, the compiled warm start's 720 KiB is a warning (it was refused)
    bf16 = (*faked, "--gin_param", "ModelSpec.compute_dtype = 'bfloat16'")
    out = dry_run(*bf16, *budget(650 / 2**20), cwd=tmp_path)
    assert out.returncode == 0 and "warning: the compiled warm start step needs " in out.stdout, out.stdout[-2000:]
    # faked devices with no budget: said, not a silent pass
    out = dry_run(*bf16, cwd=tmp_path)
    assert out.returncode == 0 and "note: no per-device budget was checked (faked devices have none): set " \
        "MemoryConfig.device_memory_gib" in out.stdout, out.stdout[-2000:]
    # the warm start is a phase of its own, planned and compiled (it once was neither)
    assert re.search(r"^  warm start +[\d.]+ [KM]iB +[\d.]+ [KM]iB +[\d.]+ *$", out.stdout, re.M), out.stdout[-3000:]
    # the programs land in the run's compilation cache: a rerun recompiles only what a knob changed
    assert all(list(cache.glob(f"jit_{step}-*")) for step in ("rollout_step", "update_step", "warm_start_step")), \
        list(cache.iterdir())
    # On this host's own devices (a -1 mesh axis) the host's memory is the budget, as the run's (none was checked)
    big = dry_run("--gin_file", tiny, "--gin_param", "ModelSpec.hidden_size = 1024", "--gin_param",
                  "ModelSpec.intermediate_size = 4096", "--gin_param", "ModelSpec.num_layers = 96",
                  "--gin_param", "RunConfig.batch_size = 64",
                  "--gin_param", "RLConfig.micro_batch_size = 0", "--gin_param", "RLConfig.max_new_tokens = 1024",
                  cwd=tmp_path)
    assert big.returncode == 2 and re.search(r"error: needs [\d.]+ GiB per device \(\w+ phase\), has [\d.]+ GiB",
                                             big.stderr), big.stderr[-2000:]
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_an_architecture_for_the_dry_run_only_is_refused_by_training(tmp_path):
    """Without hf_dir the run trained the built-in model's sizes while --dry_run planned config_json's model."""
    from rlvjax import experiment

    with pytest.raises(ValueError, match=r"^ModelSpec.config_json='.*config.json' names an architecture for "
                                         r"--dry_run only; training needs its weights: set ModelSpec.hf_dir"):
        experiment.build_policy(experiment.ModelSpec(config_json=str(two_layer_qwen(tmp_path))))


def test_loop_copies_finds_copies_in_loop_bodies_only():
    text = """HloModule m

%body (p: (s32[], f32[64,2,100,8])) -> (s32[], f32[64,2,100,8]) {
  %p = (s32[], f32[64,2,100,8]) parameter(0)
  %c = f32[64,2,100,8]{3,2,1,0} copy(%g)
  %small = f32[4]{0} copy(%h)
  %filled = f32[64,2,100,8]{3,2,1,0} copy(%wrapped_broadcast.3)
  %call = f32[4] call(%x), to_apply=%inner
}

%inner (x: f32[64,1,100,8]) -> f32[64,1,100,8] {
  %d = f32[64,1,100,8]{3,2,1,0} copy(%x)
}

%cond (p: (s32[], f32[64,2,100,8])) -> pred[] {
  %lt = pred[] compare(%a, %b), direction=LT
}

ENTRY %main (a: f32[64,2,100,8]) -> f32[64,2,100,8] {
  %outside = f32[64,2,100,8]{3,2,1,0} copy(%a)
  %w = (s32[], f32[64,2,100,8]) while(%t), condition=%cond, body=%body
}
"""
    assert hlo.loop_copies(text, 64 * 100 * 8) == ["f32[64,2,100,8]", "f32[64,1,100,8]"]
    assert hlo.loop_copies(text, 64 * 2 * 100 * 8) == ["f32[64,2,100,8]"]
    assert hlo.loop_copies(text.replace("body=%body", ""), 1) == []


def test_a_positional_argument_is_refused():
    out = dry_run("configs/default.gin")  # a forgotten --gin_file: once silently ran the 6-minute default
    assert out.returncode == 2 and out.stderr == ("rlvjax.train: error: unexpected argument 'configs/default.gin'; "
                                                  "gin files go after --gin_file\n")
