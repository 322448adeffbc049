"""Files from elsewhere and failures: no code runs from a model or checkpoint, damaged files and
job errors are told in one line, a dead job is not reported as running."""
import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import QUICK, REPO, assert_one_line, run_cli

from vae_repro.checkpoint import CheckpointError, load_run
from vae_repro.config import Config, DataConfig, TrainConfig
from vae_repro.run import _job_outcome
from vae_repro.train import train

sys.path.insert(0, str(REPO / "scripts"))
import plot_samples  # noqa: E402


class CreatesAFile:
    """Unpickled, it would create a file: what a malicious model or checkpoint does."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def snapshot(run_dir):
    """Every file below `run_dir` and a hash of its bytes."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(data_root, tmp_path_factory):
    """A run as the command line with QUICK's settings makes it."""
    out = tmp_path_factory.mktemp("finished") / "job"
    cfg = Config(device="cpu", data=DataConfig(root=str(data_root)),
                 train=TrainConfig(max_samples=3000, eval_start=500, eval_points_per_decade=2, progress=False))
    assert train(cfg, out).status == "completed"
    return out


def copy_run(src, dst):
    dst.mkdir()
    for path in src.rglob("*"):
        if path.is_file():
            (dst / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dst / path.relative_to(src)).write_bytes(path.read_bytes())
    return dst


def test_a_crafted_model_file_is_refused_and_runs_nothing(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    marker = tmp_path / "code_ran"
    torch.save({"config": {}, "input_dim": 784, "state_dict": CreatesAFile(marker)}, run / "model.pt")
    with pytest.raises(CheckpointError, match=r"model\.pt: refused to load: it asks for posix\.system"):
        load_run(run)
    assert plot_samples.main([str(run)]) == 2
    assert_one_line(capsys.readouterr().err, str(run / "model.pt"), "refused to load")
    assert not marker.exists()


def test_a_crafted_checkpoint_is_refused_before_anything_is_written(finished_run, data_root, tmp_path, main_cli):
    run = copy_run(finished_run, tmp_path / "run")
    marker = tmp_path / "code_ran"
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    checkpoint["state"]["last"] = CreatesAFile(marker)
    torch.save(checkpoint, run / "checkpoint.pt")
    before = snapshot(run)
    status, _, err = main_cli([f"data.root={data_root}", *QUICK, "hydra.run.dir=run"], tmp_path)
    assert status == 2
    assert_one_line(err, str(run / "checkpoint.pt"), "refused to load", "posix.system", "nothing in it was run")
    assert snapshot(run) == before and not marker.exists()


@pytest.mark.parametrize("damage,detail", [
    ("truncated", "truncated or corrupt: PytorchStreamReader failed reading zip archive: failed finding central "
                  "directory"),
    ("garbage", "not a file of tensors and plain data written by torch.save"),
    ("wrong keys", "missing config, optimizer, rng, state"),
])
def test_a_damaged_checkpoint_is_one_line_and_the_dir_is_unchanged(damage, detail, finished_run, data_root, tmp_path,
                                                                   main_cli):
    run = copy_run(finished_run, tmp_path / "run")
    path = run / "checkpoint.pt"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint\n" * 300)  # random bytes may happen to read as a truncated file
    else:
        torch.save({"model": {}}, path)
    before = snapshot(run)
    status, _, err = main_cli([f"data.root={data_root}", *QUICK, "hydra.run.dir=run"], tmp_path)
    assert status == 2
    assert_one_line(err, str(path), "damaged", detail, "delete it")
    assert snapshot(run) == before


@pytest.mark.slow
def test_a_checkpoint_of_the_previous_format_still_resumes(finished_run, data_root, tmp_path):
    """Before the random states were plain data, numpy's was kept as its own array type."""
    import numpy as np
    run = copy_run(finished_run, tmp_path / "run")
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    name, keys, *rest = checkpoint["rng"]["numpy"]
    checkpoint["rng"]["numpy"] = (name, np.array(keys, dtype=np.uint32), *rest)
    torch.save(checkpoint, run / "checkpoint.pt")
    result = run_cli([f"data.root={data_root}", *QUICK, "train.max_samples=4000", "hydra.run.dir=run"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((run / "summary.json").read_text())["samples"] == 4000


# The real command line, with one job's evaluation made to fail.
FAULTY_EVALUATION = """
import sys
from vae_repro import run, train

def evaluate(self):
    if self.cfg.latent_dim == 3:
        raise ValueError("injected fault in the evaluation")
    return evaluate_for_real(self)

evaluate_for_real, train.Job.evaluate = train.Job.evaluate, evaluate
sys.argv = ["vae_repro.run", *sys.argv[1:]]
run.main()
"""


@pytest.mark.slow
def test_an_error_inside_a_job_is_recorded_told_and_the_sweep_goes_on(data_root, tmp_path):
    result = subprocess.run([sys.executable, "-c", FAULTY_EVALUATION, "-m", "latent_dim=2,3", f"data.root={data_root}",
                             *QUICK, "hydra.sweep.dir=sweep"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1
    failed, other = tmp_path / "sweep" / "1", tmp_path / "sweep" / "0"
    summary = json.loads((failed / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["message"] == "ValueError: injected fault in the evaluation"
    assert json.loads((other / "summary.json").read_text())["status"] == "completed"
    assert f"{failed}: failed: ValueError: injected fault in the evaluation" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"{failed}: failed: ValueError: injected fault in the evaluation"
    assert result.stdout.strip().splitlines()[-1] == f"1 of 2 jobs completed; outputs in {tmp_path / 'sweep'}"
    log = (failed / "run.log").read_text()
    assert "Traceback" in log and 'in evaluate' in log and log.endswith("ValueError: injected fault in the evaluation\n")


def test_a_job_that_died_without_a_word_is_not_reported_as_running(data_root, tmp_path):
    cfg = Config(device="cpu", data=DataConfig(root=str(data_root), download=False),
                 train=TrainConfig(max_samples=1000, eval_start=1000, progress=False))
    train(cfg, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    (tmp_path / "summary.json").write_text(json.dumps({**summary, "status": "running"}))  # as SIGKILL leaves it
    status, message, _ = _job_outcome(tmp_path)
    assert status == "died" and message.startswith("ended without a word at or after 1000 samples")


@pytest.mark.slow
def test_a_failed_single_run_says_so_once(data_root, tmp_path):
    result = subprocess.run([sys.executable, "-c", FAULTY_EVALUATION, "latent_dim=3", f"data.root={data_root}", *QUICK,
                             "hydra.run.dir=run"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.count("injected fault in the evaluation") == 1
    assert result.stderr.strip().splitlines()[-1] == f"{tmp_path / 'run'}: failed: ValueError: injected fault in the evaluation"
    assert "injected fault in the evaluation" in (tmp_path / "run" / "run.log").read_text()
