"""Small synthetic MNIST-format data, so that no test needs the network or the real files."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return make_mnist_root(tmp_path_factory.mktemp("data"))


# Small and quick: 300 training images, a handful of evaluations.
QUICK = ["train.max_samples=3000", "train.eval_start=500", "train.eval_points_per_decade=2",
         "train.progress=false", "device=cpu"]


def run_cli(args: list[str], cwd: Path, timeout: int = 300, **env_vars: str) -> subprocess.CompletedProcess:
    """The real command line, in a subprocess, as a user would type it."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", **env_vars}
    return subprocess.run([sys.executable, "-m", "vae_repro.run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
