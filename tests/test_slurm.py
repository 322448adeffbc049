"""Sweeps through SLURM for real: `hydra/launcher=slurm` (submitit) on a running cluster, such as
the one-node cluster of scripts/slurm_local.sh (which .ci/run starts). Skipped, with the reason,
where there is no cluster to submit to."""
import csv
import json
import re
import shutil
import subprocess
import sys
import time

import pytest
import torch
from conftest import QUICK, run_cli


def cluster_problem() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch not found: start a one-node cluster with `sudo bash scripts/slurm_local.sh start`"
    try:
        subprocess.run(["sinfo", "-h"], capture_output=True, timeout=15, check=True)
        subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, timeout=15, check=True)
    except (subprocess.SubprocessError, OSError) as e:
        return f"no SLURM cluster with accounting answers ({e}): `sudo bash scripts/slurm_local.sh start` makes one"
    return None


pytestmark = pytest.mark.skipif(cluster_problem() is not None, reason=str(cluster_problem()))

# The preset of conf/hydra/launcher/slurm.yaml, sized for a small machine without GPUs.
SLURM = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=2"]


def scontrol(*args: str) -> str:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, check=True).stdout


def rows_without_wall_time(job_dir):
    with open(job_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(f)]


def assert_same_run(job_dir, reference_dir):
    assert json.loads((job_dir / "summary.json").read_text())["status"] == "completed"
    assert rows_without_wall_time(job_dir) == rows_without_wall_time(reference_dir)
    weights = torch.load(job_dir / "model.pt", weights_only=True)["state_dict"]
    reference = torch.load(reference_dir / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(weights[k], reference[k]) for k in reference)


def test_a_two_job_sweep_completes_on_the_cluster(data_root, tmp_path):
    result = run_cli(["-m", *SLURM, "latent_dim=2,3", f"data.root={data_root}", *QUICK, "hydra.sweep.dir=sweep"],
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
    result = run_cli(["-m", *SLURM, "optimizer.lr=100,0.02", f"data.root={data_root}", *QUICK,
                      "hydra.sweep.dir=sweep"], tmp_path)
    assert result.returncode == 1
    assert f"{tmp_path / 'sweep' / '0'}: diverged: non-finite loss at step" in result.stderr
    assert json.loads((tmp_path / "sweep" / "1" / "summary.json").read_text())["status"] == "completed"
    assert result.stdout.strip().splitlines()[-1] == f"1 of 2 jobs completed; outputs in {tmp_path / 'sweep'}"


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
    raise AssertionError("the job was not submitted")


def wait_for(condition, process, timeout=180, what=""):
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def restarts(job_id: str) -> int:
    return int(re.search(r"Restarts=(\d+)", scontrol("show", "job", job_id)).group(1))


# One job of about a minute on one core, checkpointing often; the same job run without SLURM
# alongside it is the reference.
ONE_JOB = ["train.eval_start=1e4", "train.eval_points_per_decade=3", "train.checkpoint_every=2e4",
           "train.progress=false", "device=cpu", "threads=1"]


@pytest.fixture
def reference(data_root, tmp_path):
    """Starts the uninterrupted reference run of `samples` samples; returns its dir after it ends."""
    started = []

    def run(samples: str):
        started.append(start([f"data.root={data_root}", *ONE_JOB, f"train.max_samples={samples}",
                              "hydra.run.dir=reference"], tmp_path))
        return tmp_path / "reference"
    yield run
    for process in started:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err


def test_a_job_past_its_time_limit_checkpoints_is_requeued_and_ends_as_if_uninterrupted(data_root, reference,
                                                                                          tmp_path):
    """The job is submitted with a 10-minute limit, which is cut to 1 minute once it trains: SLURM
    then sends SIGUSR2 (signal_delay_s=30 before the limit, give or take its 30-second checks),
    the job checkpoints, submitit requeues it, and the limit is set back to 10 minutes while it
    waits, so that it resumes and ends."""
    samples = "1.2e6"
    reference_dir = reference(samples)
    command = start(["-m", *SLURM, "hydra.launcher.timeout_min=10", "hydra.launcher.signal_delay_s=30",
                     "hydra.launcher.max_num_timeout=3", f"data.root={data_root}", *ONE_JOB,
                     f"train.max_samples={samples}", "hydra.sweep.dir=sweep"], tmp_path)
    job_dir = tmp_path / "sweep" / "0"
    job_id = slurm_job_id(tmp_path / "sweep", command)
    wait_for(lambda: (job_dir / "checkpoint.pt").exists(), command, what="the first checkpoint")
    scontrol("update", f"JobId={job_id}", "TimeLimit=1")
    wait_for(lambda: restarts(job_id) >= 1, command, timeout=120, what="the requeue")
    scontrol("update", f"JobId={job_id}", "TimeLimit=10")
    out, err = command.communicate(timeout=600)
    assert command.returncode == 0, err
    assert "USR2" in (tmp_path / "sweep" / ".submitit" / job_id / f"{job_id}_0_log.err").read_text()
    log = (job_dir / "run.log").read_text()
    assert "stopped by SIGUSR2" in log and "resuming from" in log
    states = subprocess.run(["sacct", "-D", "-n", "-X", "-P", "-o", "State", "-j", job_id], capture_output=True,
                            text=True, check=True).stdout.split()
    assert states[0] == "REQUEUED" and states[-1] == "COMPLETED"
    assert_same_run(job_dir, reference_dir)


def test_a_requeued_job_resumes_and_ends_as_if_uninterrupted(data_root, reference, tmp_path):
    samples = "3e5"
    reference_dir = reference(samples)
    command = start(["-m", *SLURM, f"data.root={data_root}", *ONE_JOB, f"train.max_samples={samples}",
                     "hydra.sweep.dir=sweep"], tmp_path)
    job_dir = tmp_path / "sweep" / "0"
    job_id = slurm_job_id(tmp_path / "sweep", command)
    wait_for(lambda: (job_dir / "checkpoint.pt").exists(), command, what="the first checkpoint")
    time.sleep(1)
    scontrol("requeue", job_id)  # SIGTERM to the job, then back in the queue
    out, err = command.communicate(timeout=600)
    assert command.returncode == 0, err
    assert restarts(job_id) == 1
    assert "stopped by SIGTERM" in (job_dir / "run.log").read_text()
    assert_same_run(job_dir, reference_dir)


def test_a_job_killed_on_the_cluster_is_reported_and_the_same_command_resumes_it(data_root, reference, tmp_path):
    samples = "3e5"
    reference_dir = reference(samples)
    args = ["-m", *SLURM, f"data.root={data_root}", *ONE_JOB, f"train.max_samples={samples}", "hydra.sweep.dir=sweep"]
    command = start(args, tmp_path)
    job_dir = tmp_path / "sweep" / "0"
    job_id = slurm_job_id(tmp_path / "sweep", command)
    wait_for(lambda: (job_dir / "checkpoint.pt").exists(), command, what="the first checkpoint")
    time.sleep(1)
    subprocess.run(["scancel", "--signal=KILL", job_id], check=True)  # SLURM ends the job: SIGTERM, then SIGKILL
    out, err = command.communicate(timeout=600)
    assert command.returncode == 1
    assert err.startswith(f"error: UncompletedJobError: Job {job_id} (task: 0) with path ")
    assert "has not produced any output (state: CANCELLED by 0)" in err.splitlines()[0]
    assert err.splitlines()[1].startswith(f"{job_dir}: interrupted: stopped by SIGTERM at ")
    assert out.strip().splitlines()[-2:] == [f"0 of 1 jobs completed; outputs in {tmp_path / 'sweep'}",
                                             f"to resume: python -m vae_repro.run {' '.join(args)}"]
    result = run_cli(args, tmp_path)  # the same command again
    assert result.returncode == 0, result.stderr
    assert "resuming from" in (job_dir / "run.log").read_text()
    assert_same_run(job_dir, reference_dir)
