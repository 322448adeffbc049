"""What several test files share: small synthetic MNIST-format and Frey Face data (so that no test
needs the network or the real files), the real command line in a subprocess, and the one reader
of a job's metrics.csv. The fixtures built on them are in conftest.py."""
import csv
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.io

from vae_repro.data import write_idx

REPO = Path(__file__).resolve().parents[1]


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 images with a bar whose position encodes the label, plus noise: easy structure to learn."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 40, (n, 28, 28))
    for image, label in zip(images, labels):
        image[4 + 2 * label: 7 + 2 * label, 4:24] = 255
        image[4:24, 4 + 2 * label: 6 + 2 * label] = 200
    return images, labels


def make_mnist_root(root: Path, n_train: int = 300, n_test: int = 100) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = synthetic_digits(n, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


# Small and quick: 300 training images, a handful of evaluations.
QUICK = ["train.max_samples=3000", "train.eval_start=500", "train.eval_points_per_decade=2",
         "train.progress=false", "device=cpu"]


def run_cli(args: list[str], cwd: Path, timeout: int = 300, **env_vars: str) -> subprocess.CompletedProcess:
    """The real command line, in a subprocess, as a user would type it."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", **env_vars}
    return subprocess.run([sys.executable, "-m", "vae_repro.run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def default_ctrl_c() -> None:
    """In a child before it starts: Ctrl-C's default action, as a terminal gives a command, even
    where the tests run with SIGINT ignored (a shell's background job, nohup), which children
    would inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_sweep(args: list[str], cwd: Path, sweep_dir: str = "sweep") -> subprocess.Popen:
    """A sweep in a process group of its own, as a terminal starts a command; `-m` last, as users type it."""
    return subprocess.Popen([sys.executable, "-m", "vae_repro.run", *args, f"hydra.sweep.dir={sweep_dir}", "-m"],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=default_ctrl_c)


def wait_for_checkpoints(sweep_dir: Path, n: int, process: subprocess.Popen, settle_s: float = 0.0) -> None:
    """Until `n` jobs of the sweep have checkpointed, then `settle_s` more seconds."""
    deadline = time.time() + 120
    while len(list(sweep_dir.glob("*/checkpoint.pt"))) < n:
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.05)
    time.sleep(settle_s)


def make_frey_root(root: Path, frames=None) -> Path:
    """A synthetic frey_rawface.mat in the real layout: 'ff', uint8, 560 x 1965, column i = frame i
    as 28 rows of 20 pixels. Frames are a bright disc that drifts, over noise."""
    if frames is None:
        rng = np.random.default_rng(0)
        rows, cols = np.mgrid[0:28, 0:20]
        frames = np.empty((560, 1965), dtype=np.uint8)
        for i in range(1965):
            centre_r, centre_c = 14 + 6 * np.sin(i / 50), 10 + 4 * np.cos(i / 70)
            disc = ((rows - centre_r) ** 2 + (cols - centre_c) ** 2 < 30) * 150
            frames[:, i] = (disc + rng.integers(40, 90, (28, 20))).reshape(-1)
    (root / "FreyFace").mkdir(parents=True)
    scipy.io.savemat(root / "FreyFace" / "frey_rawface.mat", {"ff": frames})
    return root


def metrics_rows(job_dir: Path) -> list[dict]:
    """A job's metrics.csv, a dict of strings per row."""
    with open(job_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def rows_without_wall_time(job_dir: Path) -> list[dict]:
    """A job's metrics.csv, less the one column that differs between identical runs."""
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in metrics_rows(job_dir)]


def resume_line(out: str) -> list[str]:
    """The command that a stopped command's last line of stdout says resumes it, ready to run."""
    last = out.strip().splitlines()[-1]
    assert last.startswith("to resume: python -m vae_repro.run "), last
    return [sys.executable, *shlex.split(last.removeprefix("to resume: python"))]


def assert_one_line(stderr: str, *facts: str) -> None:
    """A one-line error that names each of `facts` (a key, a value, a file), however it is worded."""
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    for fact in facts:
        assert fact in stderr, (fact, stderr)
    assert "Traceback" not in stderr


# Long enough to stop a job between checkpoints: 1e5 samples, a checkpoint every 1e4.
LONG = ["train.max_samples=1e5", "train.eval_start=1000", "train.eval_points_per_decade=4",
        "train.checkpoint_every=1e4", "train.progress=false", "device=cpu"]


def start(args, cwd):
    """A run in the background, its stderr kept."""
    return subprocess.Popen([sys.executable, "-m", "vae_repro.run", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(job_dir, process, timeout=120, settle_s=0.5):
    """Until the job's first checkpoint, then `settle_s` more seconds."""
    deadline = time.time() + timeout
    while not (job_dir / "checkpoint.pt").exists():
        assert process.poll() is None, process.stderr.read()
        assert time.time() < deadline
        time.sleep(0.02)
    time.sleep(settle_s)  # let it train and evaluate past the checkpoint
