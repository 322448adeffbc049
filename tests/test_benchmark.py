"""The benchmark script still runs end to end (tiny settings: this checks its output, not speed)."""
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

pytestmark = pytest.mark.slow


def test_benchmark_prints_its_table(data_root):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "--data-root", str(data_root),
                             "--rounds", "1", "--textbook-samples", "200", "--project-samples", "3000",
                             "--job-samples", "3000", "--curve-samples", "1000", "--share-samples", "3000"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    for line in ("textbook loop, with its eval", "project, with its eval schedule", "wake-sleep step, training only",
                 "speed-up, end to end:",
                 "FLOP utilization of the step:", "evaluation share of a 1e8 run:", "peak memory of one job:",
                 "Frey Face setup (Gaussian decoder, H=200, N_z=5)", "x the textbook loop)",
                 "mcem step, Python and dispatch", "HMC marginal estimate, 1,000 images:",
                 "marginal estimates' wall share, 1e+07 samples",
                 "Distance to the floor: the AEVB step against its matrix products alone, and a whole job of 3e+03"):
        assert line in result.stdout
    assert "4.88 MFLOP per sample" in result.stdout  # 3 x 2 x multiply-adds of the four layers at N_z = 20
    table = result.stdout.split("Distance to the floor")[1].splitlines()
    assert table[1].split()[:8] == ["step", "products", "of", "bound", "of", "matmul", "ms", "outside"]
    for row, name in zip(table[2:5], ("MNIST, H=500, N_z=20", "Frey Face, H=200, N_z=5", "Figure 3, H=100, N_z=3")):
        assert row.startswith(name) and row.count("%") == 3
    share = result.stdout.split("A shared machine: one 3e+03-sample command")[1].splitlines()
    assert share[1].split() == ["threads", "alone", "busy", "kept"]
    for row, name in zip(share[2:5], ("0 (default: chosen as it trains)", "1 ",
                                      f"{len(os.sched_getaffinity(0))} (fixed)")):
        assert row.startswith(name) and row.endswith("%")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_benchmark_without_cuda_says_so():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "--device", "cuda"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: device=cuda: CUDA is not available")
