"""Sweeps through Hydra's launcher plugins (the `cluster` extra), for real, on this machine."""
import json

import pytest
from conftest import QUICK, run_cli

from vae_repro.run import available_cores

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
