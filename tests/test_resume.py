"""A run killed in the middle and started again ends exactly where an uninterrupted run ends."""
import json
import resource
import signal
import subprocess
import sys

import pytest
import torch
from helpers import LONG, rows_without_wall_time, run_cli, start, wait_for_checkpoint

from vae_repro.checkpoint import StopSignals

pytestmark = pytest.mark.slow

# Long enough to be killed in the middle: 1000 steps, a checkpoint every 100.
# Monte Carlo EM logs no ELBO: its rows compare the marginal likelihood of a few images instead.
# Its step costs about 16 passes through the decoder, so it gets Figure 3's smaller model.
ALGORITHM_ARGS = {"aevb": ["algorithm=aevb"], "wake_sleep": ["algorithm=wake_sleep"], "iwae": ["algorithm=iwae"],
                  "mcem": ["algorithm=mcem", "latent_dim=3", "model.hidden_size=100", "eval.marginal=hmc",
                           "eval.marginal_points=20", "eval.marginal_burn_in=5", "eval.marginal_samples=10"],
                  # Two hidden layers, Adam and its staged step sizes, by the hand-written passes and by autograd.
                  "iwae_deep_adam": ["algorithm=iwae", "model.hidden_sizes=[40,30]", "optimizer=adam",
                                     "optimizer.lr_stages=4", "eval.active_units=true"],
                  "beta_vae_autograd": ["algorithm=beta_vae", "model.hidden_sizes=[40,30]", "optimizer=adam"]}


@pytest.fixture(scope="module", params=list(ALGORITHM_ARGS))
def algorithm(request):
    return request.param


@pytest.fixture(scope="module")
def reference(algorithm, data_root, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("reference")
    result = run_cli([f"data.root={data_root}", *ALGORITHM_ARGS[algorithm], *LONG, "hydra.run.dir=job"], cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "job"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_and_resumed_run_equals_uninterrupted_run(sig, algorithm, reference, data_root, tmp_path):
    args = [f"data.root={data_root}", *ALGORITHM_ARGS[algorithm], *LONG, "hydra.run.dir=job"]
    job = tmp_path / "job"
    process = start(args, tmp_path)
    wait_for_checkpoint(job, process)
    process.send_signal(sig)
    process.wait(timeout=60)
    assert process.returncode == -sig
    summary = json.loads((job / "summary.json").read_text())
    assert 0 < summary["samples"] < 100_000
    if sig == signal.SIGTERM:  # a polite stop checkpoints where it stands
        assert summary["status"] == "interrupted" and summary["message"].endswith("samples; checkpoint saved")
        checkpoint = torch.load(job / "checkpoint.pt", weights_only=True)
        assert checkpoint["state"]["samples"] == summary["samples"]

    result = run_cli(args, tmp_path)  # the same command again
    assert result.returncode == 0, result.stderr
    assert rows_without_wall_time(job) == rows_without_wall_time(reference)
    resumed = torch.load(job / "model.pt", weights_only=True)["state_dict"]
    uninterrupted = torch.load(reference / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    assert json.loads((job / "summary.json").read_text())["status"] == "completed"


def test_resume_refuses_other_settings(algorithm, reference, data_root, tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    (job / "checkpoint.pt").write_bytes((reference / "checkpoint.pt").read_bytes())
    other = "wake_sleep" if algorithm == "aevb" else "aevb"
    changed = "algorithm.beta, algorithm.name" if algorithm.startswith("beta_vae") else "algorithm.name"  # beta: 4 to 1
    for overrides, keys in (([*ALGORITHM_ARGS[algorithm], "latent_dim=7"], "latent_dim"),
                            ([f"algorithm={other}", *ALGORITHM_ARGS[algorithm][1:]], changed)):
        result = run_cli([f"data.root={data_root}", *LONG, *overrides, "hydra.run.dir=job"], tmp_path)
        assert result.returncode == 2
        assert result.stderr == (f"error: {job} holds a run with other settings ({keys}); resume it with the same "
                                 "settings or choose another output dir\n")
    assert sorted(p.name for p in job.iterdir()) == ["checkpoint.pt"]  # refused before Hydra wrote anything
    # In a sweep, every job's dir is checked before any job starts.
    (tmp_path / "sweep" / "1").mkdir(parents=True)
    (tmp_path / "sweep" / "1" / "checkpoint.pt").write_bytes((reference / "checkpoint.pt").read_bytes())
    sweep = run_cli(["-m", f"data.root={data_root}", *LONG, *ALGORITHM_ARGS[algorithm], "latent_dim=5,7",
                     "hydra.sweep.dir=sweep"], tmp_path)
    assert sweep.returncode == 2
    assert sweep.stderr == (f"error: {tmp_path / 'sweep' / '1'} holds a run with other settings (latent_dim); resume "
                            "it with the same settings or choose another output dir\n")
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["1"]


def test_threads_may_change_on_resume(reference, algorithm, data_root, tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    for name in ("checkpoint.pt", "metrics.csv"):
        (job / name).write_bytes((reference / name).read_bytes())
    result = run_cli([f"data.root={data_root}", *ALGORITHM_ARGS[algorithm], *LONG, "threads=1", "hydra.run.dir=job"],
                     tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((job / "summary.json").read_text())["threads"] == 1


def test_a_checkpoint_from_another_kind_of_device_is_refused_with_a_reason(data_root, tmp_path):
    """device=auto on a GPU machine, then the same command where there is none: the generators'
    streams differ, so the run cannot go on as it would have (tests/test_cuda.py does it for real)."""
    args = [f"data.root={data_root}", *LONG, "hydra.run.dir=job"]
    assert run_cli([*args, "train.max_samples=1000"], tmp_path).returncode == 0
    checkpoint = torch.load(tmp_path / "job" / "checkpoint.pt", weights_only=True)
    checkpoint["rng"]["device"] = "cuda"
    torch.save(checkpoint, tmp_path / "job" / "checkpoint.pt")
    result = run_cli(args, tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (f"{tmp_path / 'job' / 'checkpoint.pt'}: written by a job on cuda, and this job runs on cpu: the random "
            "streams of the two differ, so it can resume only on cuda; or choose another output dir") in result.stderr


HANDED_ON = """
import signal, sys
from pathlib import Path

def requeue(signum, frame):  # stands for submitit's handler, which requeues the job and exits
    Path(sys.argv[2], "handed_on").write_text(signal.Signals(signum).name)
    sys.exit(3)

signal.signal(signal.SIGUSR2, requeue)
from vae_repro.config import Config, DataConfig, TrainConfig
from vae_repro.train import train
train(Config(device="cpu", data=DataConfig(root=sys.argv[1], download=False),
             train=TrainConfig(max_samples=1e6, eval_start=1000, checkpoint_every=1e4, progress=False)), sys.argv[2])
"""


def test_slurm_warning_signal_checkpoints_then_reaches_the_previous_handler(data_root, tmp_path):
    process = subprocess.Popen([sys.executable, "-c", HANDED_ON, str(data_root), str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(tmp_path, process)
    process.send_signal(signal.SIGUSR2)
    process.wait(timeout=60)
    assert process.returncode == 3, process.stderr.read()
    assert (tmp_path / "handed_on").read_text() == "SIGUSR2"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["state"]["samples"] == summary["samples"] > 10_000


def test_a_process_started_immune_to_ctrl_c_stays_so():
    """nohup and a shell's background jobs start a process with SIGINT ignored: a run there goes on."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopSignals() as stop:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
        assert stop.received is None and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def snapshot(run_dir):
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


@pytest.mark.parametrize("algorithm", ["aevb"], scope="module")
def test_a_second_command_into_a_busy_dir_is_refused_and_the_first_resumes_after_a_kill(algorithm, reference,
                                                                                        data_root, tmp_path):
    args = [f"data.root={data_root}", *ALGORITHM_ARGS[algorithm], *LONG, "hydra.run.dir=job"]
    job = tmp_path / "job"
    first = start(args, tmp_path)
    wait_for_checkpoint(job, first)
    first.send_signal(signal.SIGSTOP)  # holds the dir, writes nothing while the second command runs
    try:
        before = snapshot(job)
        second = run_cli(args, tmp_path)
        assert second.returncode == 2
        assert second.stderr == (f"error: {job}: a job (pid {first.pid}) is training in this dir right now; wait for "
                                 "it to end, stop it, or choose another output dir\n")
        assert snapshot(job) == before
        sweep = run_cli(["-m", "latent_dim=20,30", *args[:-1], "hydra.sweep.dir=.", "hydra.sweep.subdir=job"],
                        tmp_path)  # a sweep whose first job's dir is taken: refused before any job starts
        assert sweep.returncode == 2 and f"error: {job}: a job (pid {first.pid})" in sweep.stderr
        assert snapshot(job) == before
    finally:
        first.kill()
        first.wait(timeout=60)
    result = run_cli(args, tmp_path)  # the same command again, once the holder is dead
    assert result.returncode == 0, result.stderr
    assert rows_without_wall_time(job) == rows_without_wall_time(reference)
    resumed = torch.load(job / "model.pt", weights_only=True)["state_dict"]
    uninterrupted = torch.load(reference / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)


def limit_file_size(max_bytes):
    """For a child process: writing a file past `max_bytes` fails (EFBIG), as on a full disk."""
    def set_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error from write(), not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return set_limit


@pytest.mark.parametrize("algorithm", ["aevb"], scope="module")
def test_a_failed_checkpoint_write_keeps_the_previous_one_which_resumes(algorithm, reference, data_root, tmp_path):
    args = [f"data.root={data_root}", *ALGORITHM_ARGS[algorithm], *LONG, "hydra.run.dir=job"]
    job = tmp_path / "job"
    process = start(args, tmp_path)
    wait_for_checkpoint(job, process)
    process.kill()
    process.wait(timeout=60)
    kept = (job / "checkpoint.pt").read_bytes()
    samples = torch.load(job / "checkpoint.pt", weights_only=True)["state"]["samples"]

    result = subprocess.run([sys.executable, "-m", "vae_repro.run", *args], cwd=tmp_path, capture_output=True,
                            text=True, preexec_fn=limit_file_size(1_000_000))
    assert result.returncode == 1
    message = (f"{job}: failed: {job / 'checkpoint.pt'}: could not be written (File too large); the previous "
               f"checkpoint, at {samples} samples, is kept: run the same command to resume from it once there is room")
    assert message in result.stderr
    assert (job / "checkpoint.pt").read_bytes() == kept and not (job / "checkpoint.tmp").exists()
    assert json.loads((job / "summary.json").read_text())["status"] == "failed"

    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert rows_without_wall_time(job) == rows_without_wall_time(reference)
    resumed = torch.load(job / "model.pt", weights_only=True)["state_dict"]
    uninterrupted = torch.load(reference / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
