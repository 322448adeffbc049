"""`hydra/launcher=stack` for real: a sweep trained as stacks in the command's process, each
model still a job of its own (its dir, files, status), resumed like any sweep."""
import json
import os
import signal

import pytest
from helpers import QUICK, resume_line, rows_without_wall_time, run_cli, start_sweep, wait_for_checkpoints

pytestmark = pytest.mark.slow


def job_dir(tmp_path, sweep, num):
    return tmp_path / sweep / str(num)


def test_a_stacked_sweep_equals_the_basic_launchers(data_root, tmp_path):
    # The paper's step sizes: models that train smoothly (a step size that wrecks a model, 0.05 here with an
    # ELBO of -3e9, would amplify the rounding below without bound).
    sweep = ["-m", "latent_dim=2,3", "seed=0,1", "optimizer.lr=0.01,0.02", f"data.root={data_root}", *QUICK]
    stacked = run_cli([*sweep, "hydra/launcher=stack", "hydra.sweep.dir=stacked"], tmp_path)
    assert stacked.returncode == 0, stacked.stderr
    assert stacked.stdout.strip().splitlines()[-1] == f"8 of 8 jobs completed; outputs in {tmp_path / 'stacked'}"
    assert "Training 8 jobs as 1 stack" in stacked.stderr
    basic = run_cli([*sweep, "hydra.sweep.dir=basic"], tmp_path)
    assert basic.returncode == 0, basic.stderr
    for num in range(8):
        job = job_dir(tmp_path, "stacked", num)
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["stack"] == 8
        config = (job / ".hydra" / "config.yaml").read_text()
        assert f"latent_dim: {summary['latent_dim']}" in config and f"lr: {summary['lr']}" in config
        assert "300 training images" in (job / "run.log").read_text()
        got, expected = rows_without_wall_time(job), rows_without_wall_time(job_dir(tmp_path, "basic", num))
        if summary["latent_dim"] == 3:  # the stack's largest N_z: as alone, to the bit
            assert got == expected
        else:  # padded: zero columns change the order in which a product's kernel sums, so each result
            # differs in its last bits (~1e-7); 30 steps grew that to 4.5e-7 of the ELBO on one CPU. 1e-5 leaves
            # room for other CPUs' kernels, and is far below what any change in the computation would move.
            for column in ("train_elbo", "test_elbo"):
                assert [float(r[column]) for r in got] == pytest.approx([float(r[column]) for r in expected], rel=1e-5)


def test_a_diverging_model_fails_alone_and_the_command_says_so(data_root, tmp_path):
    result = run_cli(["-m", "optimizer.lr=100,0.02", "hydra/launcher=stack", f"data.root={data_root}", *QUICK,
                      "hydra.sweep.dir=sweep"], tmp_path)
    assert result.returncode == 1
    assert f"{tmp_path / 'sweep' / '0'}: diverged: the weights became NaN or infinite by step" in result.stderr
    assert json.loads((tmp_path / "sweep" / "1" / "summary.json").read_text())["status"] == "completed"
    assert result.stdout.strip().splitlines()[-1] == f"1 of 2 jobs completed; outputs in {tmp_path / 'sweep'}"


LONGER = ["train.max_samples=1e5", "train.checkpoint_every=1e4", "train.eval_points_per_decade=4",
          "train.progress=false", "device=cpu"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_stopped_stacked_sweep_resumes_to_the_bit(sig, data_root, tmp_path):
    args = ["hydra/launcher=stack", "latent_dim=2,3", f"data.root={data_root}", *LONGER]
    reference = start_sweep(args, tmp_path, "reference")
    process = start_sweep(args, tmp_path, "sweep")
    wait_for_checkpoints(tmp_path / "sweep", 2, process, settle_s=0.5)  # to train and evaluate past it
    os.killpg(process.pid, sig)  # SIGINT: Ctrl-C, to every process of the terminal's group
    out, err = process.communicate(timeout=120)
    if sig == signal.SIGINT:  # each model checkpointed where it stood, and the command says how to resume
        assert process.returncode == 130, err
        for num in ("0", "1"):
            assert json.loads((tmp_path / "sweep" / num / "summary.json").read_text())["status"] == "interrupted"
        assert resume_line(out)[3:] == [*args, "hydra.sweep.dir=sweep", "-m"]  # as typed
    assert reference.wait(timeout=300) == 0
    result = run_cli([*args, "hydra.sweep.dir=sweep", "-m"], tmp_path)  # the same command again
    assert result.returncode == 0, result.stderr
    assert "2 of 2 jobs completed" in result.stdout
    for num in ("0", "1"):
        done, ref = tmp_path / "sweep" / num, tmp_path / "reference" / num
        assert "resuming from" in (done / "run.log").read_text()
        assert rows_without_wall_time(done) == rows_without_wall_time(ref)
        assert (done / "model.pt").read_bytes() == (ref / "model.pt").read_bytes()


def test_the_stack_presets_compose(tmp_path):
    result = run_cli(["hydra/launcher=stack_slurm", "--cfg", "hydra", "-p", "hydra.launcher"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "StackLauncher" in result.stdout and "max_models: 16" in result.stdout
    assert "max_num_timeout: 10" in result.stdout and "gpus_per_node: 1" in result.stdout
