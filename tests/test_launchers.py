"""Sweeps through Hydra's launcher plugins (the `cluster` extra), for real, on this machine."""
import json
import os
import signal
import subprocess

import pytest
from helpers import QUICK, resume_line, run_cli, start_sweep, wait_for_checkpoints

from vae_repro.run import available_cores

pytestmark = pytest.mark.slow

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
pytest.importorskip("hydra_plugins.hydra_joblib_launcher")


@pytest.mark.parametrize("launcher", ["submitit_local", "joblib"])
def test_two_job_sweep_through_a_launcher(launcher, data_root, tmp_path):
    result = run_cli(["-m", f"hydra/launcher={launcher}", "latent_dim=2,3", f"data.root={data_root}", *QUICK,
                      "hydra.sweep.dir=sweep"], tmp_path)
    assert result.returncode == 0, result.stderr
    for num, latent_dim in ((0, 2), (1, 3)):
        job = tmp_path / "sweep" / str(num)
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["latent_dim"] == latent_dim
        assert summary["threads"] == max(1, available_cores() // 2)  # two jobs at once share the cores
        assert (job / "metrics.csv").read_text().count("\n") >= 4
    if launcher == "submitit_local":
        assert any((tmp_path / "sweep" / ".submitit").iterdir())


def test_slurm_preset_composes(data_root, tmp_path):
    result = run_cli(["hydra/launcher=slurm", "sweep=fig2", "--cfg", "hydra", "-p", "hydra.launcher"],
                     tmp_path)
    assert result.returncode == 0, result.stderr
    assert "SlurmLauncher" in result.stdout and "max_num_timeout: 10" in result.stdout
    assert "gpus_per_node: 1" in result.stdout


def test_jobs_one_after_the_other_take_all_cores_unless_told(data_root, tmp_path):
    result = run_cli(["-m", "latent_dim=2,3", f"data.root={data_root}", *QUICK, "hydra.sweep.dir=sweep"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "sweep" / "0" / "summary.json").read_text())["threads"] == available_cores()
    result = run_cli([f"data.root={data_root}", *QUICK, "threads=1", "hydra.run.dir=one"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["threads"] == 1


LONGER = ["train.max_samples=1e5", "train.checkpoint_every=1e4", "train.progress=false", "device=cpu"]


def test_submitit_waits_for_every_job_after_one_is_killed(data_root, tmp_path):
    process = start_sweep(["hydra/launcher=submitit_local", "latent_dim=2,3", f"data.root={data_root}", *LONGER],
                          tmp_path)
    wait_for_checkpoints(tmp_path / "sweep", 2, process)
    os.kill(int((tmp_path / "sweep" / "0" / ".lock").read_text()), signal.SIGKILL)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 1
    last = out.strip().splitlines()[-2]
    assert "1 of 2 jobs completed" in last and str(tmp_path / "sweep") in last
    assert f"{tmp_path / 'sweep' / '0'}: died" in err
    assert json.loads((tmp_path / "sweep" / "1" / "summary.json").read_text())["status"] == "completed"


def test_ctrl_c_on_a_joblib_sweep_checkpoints_every_job_and_the_same_command_resumes(data_root, tmp_path):
    args = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "latent_dim=2,3,4", f"data.root={data_root}", *LONGER]
    process = start_sweep(args, tmp_path)
    wait_for_checkpoints(tmp_path / "sweep", 2, process)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: to every process of the terminal's group
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    sweep = tmp_path / "sweep"
    for job in ("0", "1"):
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["status"] == "interrupted" and "checkpoint saved" in summary["message"]
        assert f"{sweep / job}: interrupted: stopped by" in err
    assert f"{sweep / '2'}: not started" in err  # the third job found its command stopped
    last = out.strip().splitlines()[-2]
    assert "0 of 3 jobs completed" in last and str(sweep) in last
    resume = resume_line(out)
    assert resume[3:] == [*args, "hydra.sweep.dir=sweep", "-m"]  # as typed
    result = subprocess.run(resume, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "3 of 3 jobs completed" in result.stdout
    assert "resuming from" in (sweep / "0" / "run.log").read_text()
