"""Multi-host training and evaluation on one machine: 2 processes x 2 CPU devices (gloo collectives) against 1
process x 4 devices.

Every process runs the same ``python -m rlvjax.train`` (or ``evaluate``); they find each other through the RLVJAX_*
environment. The story the slow test tells: a 2-host run trains exactly like a 1-host run, only host 0 logs, the
two write each checkpoint together, a host that dies takes the other down within the heartbeat timeout (no hang),
and the job restarted with ``--resume`` continues from the shared checkpoint exactly.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from rlvjax.rl import verifier
from conftest import xla_flags

REPO = Path(__file__).resolve().parents[1]
HEARTBEAT_S = 10  # a host silent this long is declared dead
EXIT_WITHIN_S = 40  # the survivor must be gone this long after its peer was killed (heartbeat + exit, on a busy CPU)
BINDINGS = (
    "WarmStartConfig.num_steps = 20", "RunConfig.eval_every = 0", "RunConfig.export_final = False",
    "TaskSpec.num_eval = 0",  # no eval: the losses are the comparison
    "OptimConfig.schedule = 'constant'",  # runs of different lengths share one learning rate
    "RunConfig.checkpoint_every = 2",
    # FSDP across the hosts, tensor parallel within one: each host owns different shards of every matrix
    "MeshConfig.data = 1", "MeshConfig.fsdp = 2", "MeshConfig.tensor = 2",
    f"MeshConfig.heartbeat_timeout_s = {HEARTBEAT_S}", "MeshConfig.initialization_timeout_s = 120",
)
CONFIG = ["--gin_file", str(REPO / "configs" / "digit_smoke.gin"), *[a for b in BINDINGS for a in ("--gin_param", b)]]
COMPARED = ("policy_loss", "verify_loss", "reward_mean")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def launch(tmp_path):
    """``launch(name, workdir, *args, devices=, process_id=, port=)`` starts ``python -m rlvjax.train`` in the
    background with its output in ``tmp_path/<name>.log`` (``module="rlvjax.evaluate"``: that command with ``args``
    alone, ``workdir`` None; ``cwd``: where it runs); whatever is still running at the end is killed."""
    started = []

    def start(name, workdir, *args, devices: int, process_id: int | None = None, port: int | None = None,
              module: str = "rlvjax.train", cwd: Path = REPO):
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # run from any cwd
        env = {**os.environ, "PYTHONPATH": path, "JAX_PLATFORMS": "cpu", "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
               "XLA_FLAGS": xla_flags(devices), "HF_HUB_OFFLINE": "1",
               "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               # a run compiles only what an earlier one has not (the resumed pair: nothing)
               "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
        for var in ("RLVJAX_COORDINATOR", "RLVJAX_NUM_PROCESSES", "RLVJAX_PROCESS_ID", "JAX_COORDINATOR_ADDRESS"):
            env.pop(var, None)
        if process_id is not None:
            env.update(RLVJAX_COORDINATOR=f"127.0.0.1:{port}", RLVJAX_NUM_PROCESSES="2",
                       RLVJAX_PROCESS_ID=str(process_id))
        log = tmp_path / f"{name}.log"
        with open(log, "w") as out:  # a file, not a pipe: a full pipe would block a chatty process mid-run
            argv = ["--workdir", str(workdir), *CONFIG, *args] if module == "rlvjax.train" else list(args)
            proc = subprocess.Popen([sys.executable, "-m", module, *argv],
                                    cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        proc.log = log
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_pair(launch, name, workdir, *args) -> list[subprocess.Popen]:
    port = free_port()
    return [launch(f"{name}.host{i}", workdir, *args, devices=2, process_id=i, port=port) for i in range(2)]


def output(proc: subprocess.Popen) -> str:
    return proc.log.read_text(errors="replace")


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    proc.wait(timeout=timeout)
    assert proc.returncode == 0, output(proc)[-4000:]
    return output(proc)


def logged(workdir) -> list[dict]:
    return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def checkpoint_steps(workdir) -> list[int]:
    return sorted(int(p.name) for p in (Path(workdir) / "checkpoints").iterdir() if p.name.isdigit())


AUTO_SCRIPT = """
import jax, numpy as np
from rlvjax import parallel
parallel.initialize_distributed(parallel.MeshConfig(coordinator_address="auto", initialization_timeout_s=60))
parallel.initialize_distributed(parallel.MeshConfig(coordinator_address="auto"))  # a second call does nothing
gathered = parallel.to_host(np.asarray([jax.process_index()]))
print("JOINED", jax.process_count(), jax.device_count(), gathered.tolist())
"""


def test_auto_finds_the_job_the_cluster_describes():
    """``coordinator_address='auto'``: jax.distributed reads the cluster's environment (here a faked 2-task SLURM
    step on this machine; on a TPU pod, the TPU metadata) for the coordinator, process count and process id."""
    # SLURM's coordinator port is 61440 + job id % 4096: pick a job id whose port is free.
    job = next(job for job in range(4096) if port_is_free(61440 + job))
    no_cluster = {k: v for k, v in os.environ.items()  # whatever cluster this test itself may run in
                  if not k.startswith(("SLURM_", "OMPI_", "PMI_", "KUBERNETES_", "TPU_", "MEGASCALE_"))
                  and k not in ("RLVJAX_COORDINATOR", "JAX_COORDINATOR_ADDRESS")}
    no_cluster.update(JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(2))
    env = {**no_cluster, "SLURM_JOB_ID": str(job), "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2"}
    # stdout and stderr apart: Gloo's C++ log lines (on stderr) land mid-way through a merged "JOINED ..." line.
    procs = [subprocess.Popen([sys.executable, "-c", AUTO_SCRIPT], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=process_env)
             for process_env in ({**env, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"},
                                 {**env, "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}, no_cluster)]
    deadline, outputs = time.monotonic() + 120, []
    for proc in procs:  # all within the deadline; a process still running then is killed, and its output shown
        try:
            outputs.append(proc.communicate(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            proc.kill()
            outputs.append(proc.communicate())
    for proc, (out, err) in zip(procs[:2], outputs):
        assert proc.returncode == 0, f"{proc.returncode}: {(out + err)[-3000:]}"
        # Gloo's C++ logger writes to stdout too, and can land inside the "JOINED ..." line: its lines are cut out.
        assert "JOINED 2 4 [0, 1]" in re.sub(r"\[Gloo\][^\n]*\n", "", out), (out + err)[-3000:]
    assert procs[2].returncode != 0 and "coordinator_address='auto' found no cluster to join" in "".join(outputs[2])


def test_two_hosts_train_like_one_survive_a_lost_peer_and_resume(tmp_path, launch):
    export = ("--gin_param", "RunConfig.export_final = True")
    reference = launch("one", tmp_path / "one", "--gin_param", "RunConfig.num_steps = 4", *export, devices=4)
    two = tmp_path / "two"
    # A long run: host 1 is killed once both hosts have saved step 2.
    hosts = start_pair(launch, "killed", two, "--gin_param", "RunConfig.num_steps = 100")
    deadline = time.monotonic() + 300
    while not (two / "checkpoints").exists() or 2 not in checkpoint_steps(two):
        assert hosts[0].poll() is None and hosts[1].poll() is None, output(hosts[0])[-4000:]
        assert time.monotonic() < deadline, "no checkpoint at step 2 after 300 s"
        time.sleep(0.1)
    hosts[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    try:
        hosts[0].wait(timeout=EXIT_WITHIN_S)
    except subprocess.TimeoutExpired:
        hosts[0].kill()
        raise AssertionError(f"host 0 still running {EXIT_WITHIN_S} s after host 1 died") from None
    exit_s = time.monotonic() - killed
    hosts[1].wait()
    assert hosts[0].returncode != 0
    # XLA's coordination service names the lost task ("Task 1 heartbeat timeout" or "... stopped sending heartbeats):
    # 1", depending on whether host 0 was waiting in a collective or computing on its own when it noticed).
    assert re.search(r"Task 1 heartbeat timeout|stopped sending heartbeats\):\s*1\b", output(hosts[0])), \
        output(hosts[0])[-4000:]
    print(f"host 0 exited {exit_s:.1f} s after host 1 was killed (rc {hosts[0].returncode})")

    resumed = start_pair(launch, "resumed", two, "--resume", "--gin_param", "RunConfig.num_steps = 4", *export)
    outputs = [finish(p) for p in resumed]
    finish(reference)

    # Host 0 logged every step once (the resumed run first rewound the log to its checkpoint); host 1 nothing.
    steps = [m["step"] for m in logged(two)]
    assert steps == [1, 2, 3, 4], steps
    samples = [json.loads(line)["step"] for line in (two / "samples.jsonl").read_text().splitlines()]
    assert samples == [step for step in steps for _ in range(4)]  # 4 sample rows per logged step, from host 0 only
    assert len(list((two / "tensorboard").iterdir())) == 2  # one event file per run
    assert "warm start" in output(hosts[0]) and "reward=" in outputs[0]  # progress bars on host 0,
    assert "warm start" not in output(hosts[1]) and "reward=" not in outputs[1]  # none on host 1
    # The same losses as on one host: steps 1-2 from the killed run, 3-4 from the resumed one.
    for key in COMPARED:
        np.testing.assert_allclose([m[key] for m in logged(two)], [m[key] for m in logged(tmp_path / "one")],
                                   rtol=1e-4, atol=1e-6, err_msg=key)
    # One checkpoint per saved step, each written by both hosts together (each its own shards of the arrays).
    assert checkpoint_steps(two) == [2, 4]
    for step in (2, 4):
        state = two / "checkpoints" / str(step) / "state"
        assert {p.name for p in state.glob("ocdbt.process_*")} == {"ocdbt.process_0", "ocdbt.process_1"}
    # The final policy, gathered from both hosts' shards and written once by host 0, is the one-host run's. Adam
    # turns the ~1e-7 loss differences into ~1e-5 in a few weights whose gradient is near zero (its step is ~lr
    # whatever the gradient's size), so compare per tensor: a misplaced shard would differ by ~100% of the norm.
    ours, reference_final = (load_file(str(d / "final" / "model.safetensors")) for d in (two, tmp_path / "one"))
    assert ours.keys() == reference_final.keys()
    for name, value in ours.items():
        assert value.shape == reference_final[name].shape, name
        assert np.linalg.norm(value - reference_final[name]) <= 1e-4 * np.linalg.norm(reference_final[name]), name


SIGNAL_SCRIPT = """
import os, signal, sys, time
from rlvjax import parallel, preemption
caught = []
signal.signal(signal.SIGTERM, lambda signum, frame: caught.append(signum))  # as rlvjax's start-up stop is, before
parallel.initialize_distributed(parallel.MeshConfig(coordinator_address=sys.argv[1], num_processes=2,
                                                    process_id=int(sys.argv[2]), heartbeat_timeout_s=10))
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.5)
print("CAUGHT", caught == [signal.SIGTERM], flush=True)
try:
    parallel.check_same_settings({"x": 1})
except ValueError as e:
    print("REFUSED", e, flush=True)
if sys.argv[2] == "1":
    with preemption.stop_at_once("during the report; nothing was written"):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)
time.sleep(60)
print("NOT STOPPED", flush=True)
"""


def test_a_sigterm_after_the_join_is_rlvjaxs_and_stops_the_job(tmp_path):
    """Joining installed JAX's preemption notifier over rlvjax's SIGTERM handler: a notice during a multi-host
    start-up or evaluation was dropped (the job trained on, and an evaluation finished, until the SIGKILL). One
    during the end-of-run report stopped that host alone; the other aborted (134) with a C++ trace. Hosts with
    different device counts failed in a numpy reshape (review, 2026-12-07)."""
    port, env = free_port(), {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}
    procs = [subprocess.Popen([sys.executable, "-c", SIGNAL_SCRIPT, f"127.0.0.1:{port}", str(i)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**env, "XLA_FLAGS": xla_flags(2 + i)})
             for i in range(2)]
    start, outputs = time.monotonic(), []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=120))
        except subprocess.TimeoutExpired:
            proc.kill()
            outputs.append(proc.communicate())
    took = time.monotonic() - start
    for proc, (out, err) in zip(procs, outputs):
        assert "CAUGHT True" in out, (out + err)[-3000:]
        assert "REFUSED the processes have different numbers of devices (process 0: 2, process 1: 3); give every " \
               "host the same number" in out
        assert proc.returncode == 0 and "NOT STOPPED" not in out, (proc.returncode, (out + err)[-3000:])
    assert "rlvjax.train: SIGTERM during the report; nothing was written" in outputs[1][1]
    assert "process 1 stopped: SIGTERM during the report; nothing was written" in outputs[0][1], outputs[0][1][-3000:]
    assert took < 50, took


def test_an_error_on_one_host_ends_both_at_once(tmp_path, launch):
    """Process 0 alone takes the workdir's lock. Refused it, it printed its one line and then waited at JAX's
    shutdown barrier for process 1, blocked in its next collective: both hung for the barrier's 300 s and aborted
    (exit 134). Now process 0 exits with its one line at once and process 1 follows it."""
    from rlvjax.lock import workdir_lock

    workdir = tmp_path / "busy"
    workdir.mkdir()
    with workdir_lock(workdir):  # another run's
        hosts = start_pair(launch, "busy", workdir)
        start = time.monotonic()
        for proc in hosts:
            proc.wait(timeout=240)
        took = time.monotonic() - start
    assert hosts[0].returncode == 2, output(hosts[0])[-3000:]
    assert re.search(r"^rlvjax\.train: error: .*busy is in use by pid \d+", output(hosts[0]), re.M), output(hosts[0])
    # process 1 stops with process 0's line (it aborted, 134, once process 0's coordination service was gone)
    assert hosts[1].returncode == 2 and took < 120, (took, output(hosts[1])[-3000:])
    assert re.search(r"^rlvjax\.train: error: process 0 stopped: .*busy is in use by pid \d+", output(hosts[1]),
                     re.M), output(hosts[1])[-3000:]


@pytest.mark.parametrize("setting", ["RunConfig.num_steps", "--workdir", "--resume"])
def test_hosts_launched_with_different_settings_are_refused_at_once(tmp_path, launch, setting):
    """A typo in one host's flags trained until a collective's sizes disagreed (num_steps: a gloo crash after 3
    steps; --workdir: a checkpoint save hung for 1,000 s). Both hosts now name the setting before anything is
    loaded. --resume on one host alone, of a run with checkpoints: the other's refusal (it holds checkpoints) came
    before the join, and the first waited for it there until the join's timeout (300 s), then aborted."""
    port = free_port()
    other = {"RunConfig.num_steps": ("--gin_param", "RunConfig.num_steps = 5"), "--resume": ("--resume",)}.get(
        setting, ())
    workdirs = [tmp_path / "mixed", tmp_path / ("mixde" if setting == "--workdir" else "mixed")]
    if setting == "--resume":
        (tmp_path / "mixed" / "checkpoints" / "2").mkdir(parents=True)
    contents = lambda: [sorted(w.rglob("*")) if w.exists() else None for w in workdirs]
    before = contents()
    hosts = [launch(f"mixed.host{i}", workdirs[i], *(other if i else ()), devices=2, process_id=i, port=port)
             for i in range(2)]
    for proc in hosts:
        proc.wait(timeout=240)
    for proc in hosts:
        assert proc.returncode == 2, output(proc)[-3000:]
        assert re.search(r"^rlvjax\.train: error: processes \[1\] were started with other settings than process 0 "
                         rf"\({re.escape(setting)}\); launch every process", output(proc), re.M), output(proc)[-3000:]
    assert contents() == before  # nothing written


@pytest.mark.parametrize("failing", [1, 0])
def test_a_host_whose_gin_file_is_missing_stops_the_job_at_once(tmp_path, launch, failing):
    """A gin file copied to one host but not the other: that host stopped before it joined the job, and the other
    waited for it at the join until its timeout (300 s), then aborted (exit 134) without the cause. The failing host
    now joins to stop: the job ends at once, process 0 printing the line (its own, or process 1's)."""
    cwds = [tmp_path / "host0", tmp_path / "host1"]
    for cwd in cwds:
        cwd.mkdir()
    (cwds[1 - failing] / "mine.gin").write_text("RunConfig.num_steps = 2\n")
    port = free_port()
    hosts = [launch(f"gin.host{i}", tmp_path / "run", "--gin_file", "mine.gin", devices=2, process_id=i, port=port,
                    cwd=cwds[i]) for i in range(2)]
    start = time.monotonic()
    for proc in hosts:
        proc.wait(timeout=240)
    took = time.monotonic() - start
    # the host that did not fail prints the other's line (process 1 aborted, 134, once process 0 was gone)
    assert hosts[0].returncode == hosts[1].returncode == 2, [output(proc)[-3000:] for proc in hosts]
    line = "no such gin file: mine.gin"
    assert line in output(hosts[failing]), output(hosts[failing])[-3000:]
    assert f"rlvjax.train: error: process {failing} stopped: " in output(hosts[1 - failing]), \
        output(hosts[1 - failing])[-3000:]
    assert took < 120, took  # the join's timeout is 300 s
    assert not (tmp_path / "run").exists()


TWO_HOSTS = """
import os, subprocess, sys, time
from rlvjax import checkpoint, cli, parallel
parallel.initialize_distributed(parallel.MeshConfig(coordinator_address=sys.argv[2], num_processes=2,
                                                    process_id=int(sys.argv[3])))
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
mesh = jax.make_mesh((2,), ("d",))
def state(v):  # one array split over the two processes: each writes its own shard
    w = jax.make_array_from_callback((4,), NamedSharding(mesh, P("d")), lambda i: np.full(4, v, np.float32)[i])
    return {"w": w}
"""  # two processes joined, and a state of one array split over them (argv: folder, coordinator, process id)


SAVE_THEN_LOSE_WRITES = TWO_HOSTS + """
ckpt = checkpoint.Checkpointer(sys.argv[1])
ckpt.save(1, state(1.0), data_state={}, config={})
ckpt.wait()
jax.experimental.multihost_utils.sync_global_devices("saved")
if jax.process_index() == 0:
    os.chmod(sys.argv[1], 0o555)  # the shared folder stops taking writes
jax.experimental.multihost_utils.sync_global_devices("unwritable")
start = time.monotonic()
try:
    ckpt.save(2, state(2.0), data_state={}, config={})
    ckpt.wait()
except checkpoint.CheckpointUnwritable as e:
    print(f"{time.monotonic() - start:.1f}", e, flush=True)
"""


def test_a_save_that_fails_on_every_host_is_reported_by_each_at_once(tmp_path):
    """A shared checkpoint folder that stops taking writes (permissions) during a multi-host run: process 0 could not
    create the step's folder, and the other host's save waited for its "folder created" signal, which Orbax sends on
    success only, for its coordination timeout (300 s), process 0 too (its save waits for the other's). Now the
    failed creation signals anyway: the other host's writes fail at once too, and each host reports its save's
    failure in one line within seconds."""
    folder, port = tmp_path / "ckpt", free_port()
    # root writes anywhere: drop the capability, as a user's job has none
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv (util-linux): the folder cannot be made unwritable")
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}
    hosts = [subprocess.Popen([*(drop if os.geteuid() == 0 else []), sys.executable, "-c", SAVE_THEN_LOSE_WRITES,
                               str(folder), f"127.0.0.1:{port}", str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outs = [proc.communicate(timeout=120) for proc in hosts]
    finally:
        folder.chmod(0o755)
        for proc in hosts:
            proc.kill()
    for proc, (out, err) in zip(hosts, outs):
        assert proc.returncode == 0, err[-3000:]
        took, line = out.strip().splitlines()[-1].split(" ", 1)  # after gloo's own lines
        assert float(took) < 30 and line.startswith("a checkpoint could not be written under ") and \
            "Permission denied" in line and "the latest complete checkpoint is step 1;" in line, out
        assert "Traceback" not in err, err[-3000:]
    assert sorted(os.listdir(folder))[0] == "1"


SAVE_THEN_LOSE_ONE_HOSTS_WRITES = TWO_HOSTS + """
if sys.argv[4] == "full everywhere" or sys.argv[4] == "full" and jax.process_index() == 1:  # injected: the disk
    # fills up as this host writes step 2
    import errno
    from orbax.checkpoint._src.checkpointers import async_checkpointer
    commit = async_checkpointer._AsyncManager._thread_func
    def full_disk(manager, directory, *args, **kwargs):
        if directory.name != "2":
            return commit(manager, directory, *args, **kwargs)
        manager._exception = OSError(errno.ENOSPC, "No space left on device")
    async_checkpointer._AsyncManager._thread_func = full_disk
def main(argv):
    ckpt = checkpoint.Checkpointer(sys.argv[1])
    ckpt.save(1, state(1.0), data_state={}, config={})
    ckpt.wait()
    jax.experimental.multihost_utils.sync_global_devices("saved")
    if jax.process_index() == 1 and sys.argv[4] == "read-only":  # this node's mount of the shared folder
        subprocess.run(["mount", "-o", "remount,ro,bind", sys.argv[1]], check=True)
    jax.experimental.multihost_utils.sync_global_devices("read-only on host 1")
    ckpt.save(2, state(2.0), data_state={}, config={})
    ckpt.wait()
    print("saved", flush=True)
cli.run_main("save", main)([])
"""


@pytest.mark.parametrize("failure", ["read-only", "full", "full everywhere"])
def test_a_save_that_fails_on_one_host_stops_the_job_at_once(tmp_path, failure):
    """One node's mount of the shared checkpoint folder goes read-only during a multi-host run: that host's writes
    fail, the other's succeed. Orbax raised the failure only after a barrier of the hosts that the other host, its
    writes done, never reached (it waited in another one): every host hung for Orbax's coordination timeout (300 s),
    with no line (measured: the train command stopped at step 6 of 8 and stayed so). Now the failing host raises its
    error at once and the job stops with its line. A full disk there: the line names the partial step, left (process
    0 may still be writing there). A full disk on every host: process 0 removes it, and its own line says so (the
    other host's said it was left)."""
    folder, port = tmp_path / "ckpt", free_port()
    folder.mkdir()
    own_mounts = ["unshare", "-m", "--propagation", "private"]
    if subprocess.run([*own_mounts, "true"], capture_output=True).returncode != 0:
        pytest.skip("needs a mount namespace of its own (unshare -m: root)")
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}
    host = lambda i: [sys.executable, "-c", SAVE_THEN_LOSE_ONE_HOSTS_WRITES, str(folder), f"127.0.0.1:{port}", i,
                      failure]
    hosts = [subprocess.Popen(host("0"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
             subprocess.Popen([*own_mounts, "sh", "-c", 'mount --bind "$0" "$0" && exec "$@"', str(folder), *host("1")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    start = time.monotonic()
    try:
        outs = [proc.communicate(timeout=120)[0] for proc in hosts]
    finally:
        for proc in hosts:
            proc.kill()
    assert time.monotonic() - start < 60  # with the start-up and the first save; the hang was 300 s
    full = f"the disk under {folder} filled up while saving a checkpoint; the partial save "
    assert [proc.returncode for proc in hosts] == [2, 2], outs
    assert "Traceback" not in outs[0] + outs[1], outs
    assert "the latest complete checkpoint is step 1;" in outs[0] and "saved" not in outs[0].splitlines()
    if failure == "full everywhere":
        assert f"save: error: {full}was removed and " in outs[0], outs[0][-3000:]  # then process 1's line
        assert os.listdir(folder) == ["1"] and "is left (delete it)" not in outs[0] + outs[1]  # no line says it is
        return
    line = {"read-only": "a checkpoint could not be written under ",
            "full": f"{full}{folder / '2.orbax-checkpoint-tmp'} may be left (delete it if it is still there) and "
            }[failure]
    assert f"save: error: {line}" in outs[1], outs[1][-3000:]
    assert failure == "full" or "Read-only file system" in outs[1] and "\\x" not in outs[1]  # tensorstore's escapes
    assert f"save: error: process 1 stopped: {line}" in outs[0], outs[0][-3000:]
    assert sorted(os.listdir(folder)) == ["1", "2.orbax-checkpoint-tmp"]  # step 1 intact, no step 2


def eval_problems(tmp_path, hf_checkpoint) -> tuple[Path, Path]:
    """An HF model directory with its verifier's question, and 8 problems in its tokenizer's words."""
    model_dir = tmp_path / "model"
    shutil.copytree(hf_checkpoint("qwen2")[0], model_dir)
    (model_dir / verifier.CONFIG_FILE).write_text(json.dumps({"question": "w7 w8 w9"}))  # in the tokenizer's words
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"prompt": " ".join(f"w{(7 * i + j) % 80}" for j in range(3 + i % 4)),
                                        "answer": str(i)}) + "\n" for i in range(8)))
    return model_dir, data


def test_two_hosts_evaluate_like_one(tmp_path, launch, hf_checkpoint):
    """``python -m rlvjax.evaluate`` joins a job like train: each process sampled the whole pool on its own devices
    and every one wrote the report. Now the 2 x 2 devices sample the pool of 1 x 4, and process 0 alone writes."""
    model_dir, data = eval_problems(tmp_path, hf_checkpoint)
    args = ["--model_dir", str(model_dir), "--data", str(data), "--raw_prompts", "--num_samples", "4",
            "--max_new_tokens", "6", "--batch_size", "8", "--compilation_cache", ""]
    one = launch("eval.one", None, *args, "--out", str(tmp_path / "one"), devices=4, module="rlvjax.evaluate")
    finish(one)
    port = free_port()
    hosts = [launch(f"eval.host{i}", None, *args, "--out", str(tmp_path / "two"), devices=2, process_id=i, port=port,
                    module="rlvjax.evaluate") for i in range(2)]
    printed = [finish(proc) for proc in hosts]
    assert "mesh data=4" in printed[0] and "report:" in printed[0]
    assert "memory plan" not in printed[1] and "report:" not in printed[1]
    ours, theirs = ([json.loads(line) for line in (tmp_path / d / "eval_samples.jsonl").open()] for d in ("two", "one"))
    assert len(ours) == 32
    assert [(s["prompt"], s["completion"]) for s in ours] == [(s["prompt"], s["completion"]) for s in theirs]
    np.testing.assert_allclose([s["p_yes"] for s in ours], [s["p_yes"] for s in theirs], rtol=1e-5, atol=1e-6)


def test_an_error_on_another_host_stops_the_job_with_its_cause(tmp_path, launch, hf_checkpoint):
    """Host 1 alone stops on bad input (its copy of the relative --data is missing) while host 0 has gone on to the
    next collective. Host 0 waited there for the heartbeat timeout (100 s) and aborted (exit 134) without the cause;
    now it prints host 1's line and both exit 2 at once, nothing written."""
    model_dir, data = eval_problems(tmp_path, hf_checkpoint)
    cwds = [tmp_path / "host0", tmp_path / "host1"]
    for cwd in cwds:
        cwd.mkdir()
    shutil.move(data, cwds[0] / data.name)
    args = ["--model_dir", str(model_dir), "--data", data.name, "--raw_prompts", "--num_samples", "4",
            "--max_new_tokens", "6", "--batch_size", "8", "--compilation_cache", "", "--out", str(tmp_path / "out")]
    port = free_port()
    hosts = [launch(f"failing.host{i}", None, *args, devices=2, process_id=i, port=port, module="rlvjax.evaluate",
                    cwd=cwds[i]) for i in range(2)]
    hosts[1].wait(timeout=240)
    failed = time.monotonic()
    hosts[0].wait(timeout=240)
    took = time.monotonic() - failed
    assert [proc.returncode for proc in hosts] == [2, 2], [output(proc)[-3000:] for proc in hosts]
    cause = re.search(r"^rlvjax\.evaluate: error: (.*problems\.jsonl.*)$", output(hosts[1]), re.M)
    assert cause, output(hosts[1])[-3000:]
    assert f"rlvjax.evaluate: error: process 1 stopped: {cause[1]}\n" in output(hosts[0]), output(hosts[0])[-3000:]
    assert took < 30, took  # the heartbeat timeout is 100 s
    assert not (tmp_path / "out").exists()


JOINS = {  # how a Python API script joins the job: through rlvjax, or itself before rlvjax's entry points do
    "rlvjax": "",
    "itself": "import os\njax.distributed.initialize(os.environ['RLVJAX_COORDINATOR'], 2, "
              "int(os.environ['RLVJAX_PROCESS_ID']))\n",
}


@pytest.mark.parametrize("joins", JOINS)
def test_an_uncaught_error_in_a_python_api_script_stops_the_job(tmp_path, launch, joins):
    """A script on the Python API (no command's error handling) raising on process 1 alone: it waited at JAX's
    shutdown barrier for process 0, blocked in its next collective, until both aborted (134) with the cause in
    process 1's output only. Now process 1 prints its traceback and the job stops at once, process 0 naming it.
    A script that joined with ``jax.distributed.initialize`` itself got no such stop before rlvjax's entry points
    (``train``, ``evaluate``: ``initialize_distributed``) handed it one."""
    (tmp_path / "job.py").write_text(
        "import jax\n"
        f"{JOINS[joins]}"
        "from rlvjax import parallel\n"
        "parallel.initialize_distributed(parallel.MeshConfig())  # as train() and evaluate() begin\n"
        "parallel.barrier('started')\n"
        "if jax.process_index() == 1:\n"
        "    raise ValueError('bad input on\\nprocess 1')\n"
        "parallel.barrier('never reached')\n")
    port = free_port()
    hosts = [launch(f"api.host{i}", None, devices=2, process_id=i, port=port, module="job", cwd=tmp_path)
             for i in range(2)]
    hosts[1].wait(timeout=120)
    failed = time.monotonic()
    hosts[0].wait(timeout=120)
    took = time.monotonic() - failed
    assert [proc.returncode for proc in hosts] == [1, 1], [output(proc)[-3000:] for proc in hosts]
    assert "ValueError: bad input on\nprocess 1" in output(hosts[1])  # its traceback
    assert "job.py: error: process 1 stopped: ValueError: bad input on process 1\n" in output(hosts[0]), \
        output(hosts[0])[-3000:]
    assert took < 30, took
