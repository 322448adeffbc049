"""Sweeps through Hydra's launcher plugins (the `cluster` extra), for real, on this machine."""
import json

import pytest
from conftest import QUICK, run_cli

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
        assert (job / "metrics.csv").read_text().count("\n") >= 4
    if launcher == "submitit_local":
        assert any((tmp_path / "sweep" / ".submitit").iterdir())


def test_slurm_preset_composes(data_root, tmp_path):
    result = run_cli(["hydra/launcher=slurm", "sweep=fig2", "--cfg", "hydra", "-p", "hydra.launcher"],
                     tmp_path)
    assert result.returncode == 0, result.stderr
    assert "SlurmLauncher" in result.stdout and "max_num_timeout: 10" in result.stdout
    assert "gpus_per_node: 1" in result.stdout
