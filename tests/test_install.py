"""The package as a user installs it from a wheel: the configs ship inside it, and the command and a
short job run from a copy outside the repository."""
import subprocess
import sys

import pytest
from helpers import QUICK, REPO

pytestmark = pytest.mark.slow


def test_an_installed_wheel_runs_help_and_a_job_outside_the_repository(data_root, tmp_path):
    dist, site, elsewhere = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    # No build isolation: the build needs setuptools alone, which the test's environment has.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(REPO)], check=True, capture_output=True)
    (wheel,) = dist.glob("vae_repro-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HYDRA_FULL_ERROR": "0"}  # the installed copy first

    def run(*args):
        return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=300)

    where = run("-c", "import vae_repro.run as r; print(r.__file__); print(r.CONF_DIR)").stdout.split()
    assert where[0].startswith(str(site)) and where[1] == str(site / "vae_repro" / "conf")
    help_text = run("-m", "vae_repro.run", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "== Config groups" in help_text.stdout and "algorithm: aevb, beta_vae, iwae, mcem, wake_sleep" in help_text.stdout
    job = run("-m", "vae_repro.run", "latent_dim=2,3", "-m", f"data.root={data_root}", *QUICK, "hydra/launcher=stack",
              "hydra.sweep.dir=sweep")
    assert job.returncode == 0, job.stderr
    assert job.stdout.strip().splitlines()[-1] == f"2 of 2 jobs completed; outputs in {elsewhere / 'sweep'}"
    assert (elsewhere / "sweep" / "1" / "model.pt").exists()
