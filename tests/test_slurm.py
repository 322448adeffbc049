"""Sweeps through SLURM for real: `hydra/launcher=slurm` (submitit) on a running cluster, such as
the one-node cluster of scripts/slurm_local.sh (which .ci/run starts). Skipped, with the reason,
where there is no cluster to submit to, or where the cluster cannot run a plain Python job
through submitit (then the reason holds what the cluster said). With VAE_REPRO_REQUIRE_SLURM=1
(.ci/run sets it, as it starts the cluster) those cases fail instead: there the tests must run. A
test that times out says what the cluster said of its job."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import QUICK, rows_without_wall_time, run_cli

pytestmark = pytest.mark.slow


def cluster_problem() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch not found: start a one-node cluster with `sudo bash scripts/slurm_local.sh start`"
    try:
        subprocess.run(["sinfo", "-h"], capture_output=True, timeout=15, check=True)
        subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, timeout=15, check=True)
    except (subprocess.SubprocessError, OSError) as e:
        return f"no SLURM cluster with accounting answers ({e}): `sudo bash scripts/slurm_local.sh start` makes one"
    return None


REQUIRED = os.environ.get("VAE_REPRO_REQUIRE_SLURM") == "1"


def no_cluster(reason: str):
    """Skip, or fail where the SLURM tests are required to run."""
    (pytest.fail if REQUIRED else pytest.skip)(reason)


@pytest.fixture(scope="module", autouse=True)
def cluster_answers():
    problem = cluster_problem()
    if problem:
        no_cluster(problem)


# The preset of conf/hydra/launcher/slurm.yaml, sized for a small machine without GPUs.
SLURM = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=2"]
LOG_DIR = Path(os.environ.get("SLURM_LOCAL_DIR", "/var/tmp/slurm-local")) / "log"  # scripts/slurm_local.sh's


def shell(*command: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        return (done.stdout + done.stderr).strip()
    except (subprocess.SubprocessError, OSError) as e:
        return f"({e})"


def tail(path: Path, lines: int = 6) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(none)"


JOB_FIELDS = {"JobState", "Reason", "Restarts", "ExitCode", "RunTime", "TimeLimit", "NodeList", "BatchHost"}


def cluster_report(submitit_dir: Path) -> str:
    """What the cluster says of the jobs in submitit's folder that do not get on: for a failure or
    skip message."""
    job_ids = sorted(p.name for p in submitit_dir.glob("*") if p.name.isdigit())
    parts = [f"squeue: {shell('squeue', '-o', '%i %T %r %M')}", f"sinfo: {shell('sinfo', '-N', '-o', '%N %T %E')}"]
    for jid in job_ids:
        parts += [f"sacct {jid}: {shell('sacct', '-D', '-n', '-P', '-o', 'JobID,State,ExitCode,Reason', '-j', jid)}",
                  f"scontrol show job {jid}: " + " ".join(field for field in shell("scontrol", "show", "job", jid).split()
                                                          if field.split("=")[0] in JOB_FIELDS)]
        for log in sorted((submitit_dir / jid).glob("*_log.*")):
            parts.append(f"{log.name}: {tail(log)}")
    parts += [f"slurmd.log: {tail(LOG_DIR / 'slurmd.log')}", f"slurmctld.log: {tail(LOG_DIR / 'slurmctld.log')}"]
    return "\n".join(parts)


# A plain Python job through submitit, as the launcher sends one: it imports torch and this
# project, so that what it proves is the cluster and the environment, not the project's code.
SMOKE_JOB = """
import sys, submitit
def job():
    import torch, vae_repro
    return torch.ones(2).sum().item()
executor = submitit.AutoExecutor(folder=sys.argv[1] + "/%j", cluster="slurm")
executor.update_parameters(timeout_min=5, cpus_per_task=1, mem_gb=2)
print(executor.submit(job).result())
"""


@pytest.fixture(scope="module", autouse=True)
def cluster_runs_a_python_job(cluster_answers, tmp_path_factory):
    folder = tmp_path_factory.mktemp("smoke")
    try:
        done = subprocess.run([sys.executable, "-c", SMOKE_JOB, str(folder)], capture_output=True, text=True,
                              timeout=180)
        problem = None if done.stdout.strip() == "2.0" else f"it ended with exit {done.returncode}: {done.stderr[-800:]}"
    except subprocess.TimeoutExpired:
        problem = "it did not end in 180 s"
    if problem:
        subprocess.run(["scancel", *(p.name for p in folder.glob("*") if p.name.isdigit())], capture_output=True)
        no_cluster(f"the SLURM cluster does not run a plain Python job through submitit: {problem}\n"
                   f"{cluster_report(folder)}")


@pytest.fixture(autouse=True)
def cancel_leftover_jobs(tmp_path):
    """A failed test's jobs would hold the cluster's cores and hold up the tests after it."""
    yield
    ids = [p.name for p in tmp_path.glob("sweep/.submitit/*") if p.name.isdigit()]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


def scontrol(*args: str) -> str:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, check=True).stdout


def assert_same_run(job_dir, reference_dir):
    assert json.loads((job_dir / "summary.json").read_text())["status"] == "completed"
    assert rows_without_wall_time(job_dir) == rows_without_wall_time(reference_dir)
    weights = torch.load(job_dir / "model.pt", weights_only=True)["state_dict"]
    reference = torch.load(reference_dir / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(weights[k], reference[k]) for k in reference)


def test_a_two_job_sweep_completes_on_the_cluster(data_root, tmp_path):
    result = sweep(["-m", *SLURM, "latent_dim=2,3", f"data.root={data_root}", *QUICK, "hydra.sweep.dir=sweep"],
                   tmp_path)
    assert result.returncode == 0, result.stderr
    for num, latent_dim in ((0, 2), (1, 3)):
        job = tmp_path / "sweep" / str(num)
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["latent_dim"] == latent_dim
        assert summary["threads"] == 1  # the job's SLURM allocation, not the machine's cores
        assert (job / "metrics.csv").read_text().count("\n") >= 4 and (job / "model.pt").exists()
    assert result.stdout.strip().splitlines()[-1] == f"2 of 2 jobs completed; outputs in {tmp_path / 'sweep'}"


def test_a_diverging_job_on_the_cluster_is_named_and_fails_the_command(data_root, tmp_path):
    result = sweep(["-m", *SLURM, "optimizer.lr=100,0.02", f"data.root={data_root}", *QUICK,
                    "hydra.sweep.dir=sweep"], tmp_path)
    assert result.returncode == 1
    assert f"{tmp_path / 'sweep' / '0'}: diverged: the weights became NaN or infinite by step" in result.stderr
    assert json.loads((tmp_path / "sweep" / "1" / "summary.json").read_text())["status"] == "completed"
    assert result.stdout.strip().splitlines()[-1] == f"1 of 2 jobs completed; outputs in {tmp_path / 'sweep'}"


# The stack launcher's SLURM preset (conf/hydra/launcher/stack_slurm.yaml), sized alike.
STACK_SLURM = ["hydra/launcher=stack_slurm", "hydra.launcher.slurm.gpus_per_node=0",
               "hydra.launcher.slurm.cpus_per_task=1", "hydra.launcher.slurm.mem_gb=2"]


def test_a_stacked_sweep_is_one_slurm_job_per_stack(data_root, tmp_path):
    result = sweep(["-m", *STACK_SLURM, "latent_dim=2,3", "seed=0,1", f"data.root={data_root}", *QUICK,
                    "hydra.sweep.dir=sweep"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"4 of 4 jobs completed; outputs in {tmp_path / 'sweep'}"
    assert len([p for p in (tmp_path / "sweep" / ".submitit").glob("*") if p.name.isdigit()]) == 1
    for num in range(4):
        job = tmp_path / "sweep" / str(num)
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["stack"] == 4
        assert summary["threads"] == 1  # the job's SLURM allocation, not the machine's cores
        assert (job / ".hydra" / "config.yaml").exists() and "300 training images" in (job / "run.log").read_text()


def start(args, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vae_repro.run", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def slurm_job_id(sweep_dir, process, timeout=120) -> str:
    """The SLURM id of the sweep's only job, from submitit's folder for it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ids = [p.name for p in (sweep_dir / ".submitit").glob("*") if p.name.isdigit()]
        if ids:
            return ids[0]
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    raise AssertionError(f"the job was not submitted\n{cluster_report(sweep_dir / '.submitit')}")


def sweep(args, cwd, timeout=300) -> subprocess.CompletedProcess:
    """run_cli, and what the cluster says if the sweep does not end in time."""
    try:
        return run_cli(args, cwd, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the sweep did not end in {timeout} s\n{cluster_report(cwd / 'sweep' / '.submitit')}")


def finish(process, cwd, timeout=600) -> tuple[str, str]:
    """The output of a started sweep, and what the cluster says if it does not end in time."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"the sweep did not end in {timeout} s\n{cluster_report(cwd / 'sweep' / '.submitit')}")


def wait_for(condition, process, timeout=180, what="", submitit_dir=None):
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        if time.time() > deadline:
            report = cluster_report(submitit_dir) if submitit_dir else ""
            raise AssertionError(f"timed out waiting for {what}\n{report}")
        time.sleep(0.2)


def restarts(job_id: str) -> int:
    return int(re.search(r"Restarts=(\d+)", scontrol("show", "job", job_id)).group(1))


def accounted_states(job_id: str, final: str, timeout: float = 60) -> list[str]:
    """The job's states in SLURM's accounting, oldest first, once the last is `final` or `timeout`
    has passed: submitit has the job's result as its script ends, and the accounting hears of
    the end some moments later."""
    deadline = time.time() + timeout
    while True:
        states = subprocess.run(["sacct", "-D", "-n", "-X", "-P", "-o", "State", "-j", job_id], capture_output=True,
                                text=True, check=True).stdout.split()
        if states[-1:] == [final] or time.time() > deadline:
            return states
        time.sleep(0.5)


# One job of about a minute on one core, checkpointing often; the same job run without SLURM
# alongside it is the reference.
ONE_JOB = ["train.eval_start=1e4", "train.eval_points_per_decade=3", "train.checkpoint_every=2e4",
           "train.progress=false", "device=cpu", "threads=1"]


@pytest.fixture
def reference(data_root, tmp_path):
    """Starts the uninterrupted reference run of `samples` samples, beside the test's own; returns a
    function that waits for it to end (on a busy machine it can end after the job it is compared
    with) and gives its dir."""
    started = []

    def run(samples: str):
        process = start([f"data.root={data_root}", *ONE_JOB, f"train.max_samples={samples}",
                         "hydra.run.dir=reference"], tmp_path)
        started.append(process)

        def finished():
            out, err = process.communicate(timeout=600)
            assert process.returncode == 0, err
            return tmp_path / "reference"
        return finished
    yield run
    for process in started:
        process.communicate(timeout=600)


def test_a_job_past_its_time_limit_checkpoints_is_requeued_and_ends_as_if_uninterrupted(data_root, reference,
                                                                                          tmp_path):
    """The job is submitted with a 10-minute limit, which is cut to 1 minute once it trains: SLURM
    then sends SIGUSR2 (signal_delay_s=30 before the limit, give or take its 30-second checks),
    the job checkpoints, submitit requeues it, and the limit is set back to 10 minutes while it
    waits, so that it resumes and ends."""
    samples = "1.2e6"
    reference_finished = reference(samples)
    command = start(["-m", *SLURM, "hydra.launcher.timeout_min=10", "hydra.launcher.signal_delay_s=30",
                     "hydra.launcher.max_num_timeout=3", f"data.root={data_root}", *ONE_JOB,
                     f"train.max_samples={samples}", "hydra.sweep.dir=sweep"], tmp_path)
    job_dir = tmp_path / "sweep" / "0"
    job_id = slurm_job_id(tmp_path / "sweep", command)
    wait_for(lambda: (job_dir / "checkpoint.pt").exists(), command, what="the first checkpoint",
             submitit_dir=tmp_path / "sweep" / ".submitit")
    scontrol("update", f"JobId={job_id}", "TimeLimit=1")
    wait_for(lambda: restarts(job_id) >= 1, command, timeout=120, what="the requeue",
             submitit_dir=tmp_path / "sweep" / ".submitit")
    scontrol("update", f"JobId={job_id}", "TimeLimit=10")
    out, err = finish(command, tmp_path)
    assert command.returncode == 0, err
    assert "USR2" in (tmp_path / "sweep" / ".submitit" / job_id / f"{job_id}_0_log.err").read_text()
    log = (job_dir / "run.log").read_text()
    assert "stopped by SIGUSR2" in log and "resuming from" in log
    states = accounted_states(job_id, "COMPLETED")
    assert states[0] == "REQUEUED" and states[-1] == "COMPLETED"
    assert_same_run(job_dir, reference_finished())


def test_a_requeued_job_resumes_and_ends_as_if_uninterrupted(data_root, reference, tmp_path):
    samples = "3e5"
    reference_finished = reference(samples)
    command = start(["-m", *SLURM, f"data.root={data_root}", *ONE_JOB, f"train.max_samples={samples}",
                     "hydra.sweep.dir=sweep"], tmp_path)
    job_dir = tmp_path / "sweep" / "0"
    job_id = slurm_job_id(tmp_path / "sweep", command)
    wait_for(lambda: (job_dir / "checkpoint.pt").exists(), command, what="the first checkpoint",
             submitit_dir=tmp_path / "sweep" / ".submitit")
    time.sleep(1)
    scontrol("requeue", job_id)  # SIGTERM to the job, then back in the queue
    out, err = finish(command, tmp_path)
    assert command.returncode == 0, err
    assert restarts(job_id) == 1
    assert "stopped by SIGTERM" in (job_dir / "run.log").read_text()
    assert_same_run(job_dir, reference_finished())


def test_a_job_killed_on_the_cluster_is_reported_and_the_same_command_resumes_it(data_root, reference, tmp_path):
    samples = "3e5"
    reference_finished = reference(samples)
    args = ["-m", *SLURM, f"data.root={data_root}", *ONE_JOB, f"train.max_samples={samples}", "hydra.sweep.dir=sweep"]
    command = start(args, tmp_path)
    job_dir = tmp_path / "sweep" / "0"
    job_id = slurm_job_id(tmp_path / "sweep", command)
    wait_for(lambda: (job_dir / "checkpoint.pt").exists(), command, what="the first checkpoint",
             submitit_dir=tmp_path / "sweep" / ".submitit")
    time.sleep(1)
    subprocess.run(["scancel", "--signal=KILL", job_id], check=True)  # SLURM ends the job: SIGTERM, then SIGKILL
    out, err = finish(command, tmp_path)
    assert command.returncode == 1
    assert err.startswith(f"error: UncompletedJobError: Job {job_id} (task: 0) with path ")
    assert "has not produced any output (state: CANCELLED by 0)" in err.splitlines()[0]
    assert err.splitlines()[1].startswith(f"{job_dir}: interrupted: stopped by SIGTERM at ")
    assert out.strip().splitlines()[-2:] == [f"0 of 1 jobs completed; outputs in {tmp_path / 'sweep'}",
                                             f"to resume: python -m vae_repro.run {' '.join(args)}"]
    result = sweep(args, tmp_path)  # the same command again
    assert result.returncode == 0, result.stderr
    assert "resuming from" in (job_dir / "run.log").read_text()
    assert_same_run(job_dir, reference_finished())
