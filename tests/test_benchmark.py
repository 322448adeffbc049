"""The benchmark script still runs end to end (tiny settings: this checks its output, not speed)."""
import os
import subprocess
import sys

import pytest
import torch
from helpers import REPO, assert_one_line

pytestmark = pytest.mark.slow


def test_benchmark_prints_its_table(data_root):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "--data-root", str(data_root),
                             "--rounds", "1", "--textbook-samples", "200", "--project-samples", "3000",
                             "--job-samples", "3000", "--curve-samples", "1000", "--share-samples", "3000",
                             "--before", str(REPO), "--before-samples", "1000"],  # this code against itself
                            capture_output=True, text=True, timeout=900)
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
    assert len(table) >= 5, table  # a header and a row per setup: else the loop below checks nothing
    assert table[1].split()[:8] == ["step", "products", "of", "bound", "of", "matmul", "ms", "outside"]
    for row, name in zip(table[2:5], ("MNIST, H=500, N_z=20", "Frey Face, H=200, N_z=5", "Figure 3, H=100, N_z=3")):
        assert row.startswith(name) and row.count("%") == 3
    share = result.stdout.split("A shared machine: one 3e+03-sample command")[1].splitlines()
    assert len(share) >= 5, share
    assert share[1].split() == ["threads", "alone", "busy", "kept"]
    for row, name in zip(share[2:5], ("0 (default: chosen as it trains)", "1 ",
                                      f"{len(os.sched_getaffinity(0))} (fixed)")):
        assert row.startswith(name) and row.endswith("%")
    before = result.stdout.split(f"Against the code in {REPO}")[1].splitlines()
    assert len(before) >= 7, before
    assert before[1].split() == ["job", "before", "now", "now/before"]
    for row, name in zip(before[2:7], ("aevb", "wake_sleep", "iwae", "mcem", "stack of 4")):
        assert row.startswith(name) and float(row.split()[-1]) > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_benchmark_without_cuda_says_so():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "--device", "cuda"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert_one_line(result.stderr, "device=cuda", "CUDA is not available")


def test_stack_benchmark_prints_its_tables(data_root, frey_root):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark_stack.py"), "--data-root", str(data_root),
                             "--frey-root", str(frey_root), "--rounds", "1", "--step-samples", "300",
                             "--command-samples", "2000", "--mnist-command-samples", "2000"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    steps = result.stdout.split("A stack of 4 models' AEVB step")[1].splitlines()
    assert len(steps) >= 5, steps
    assert steps[1].split() == ["stack", "one", "by", "one", "ratio"]
    for row, name in zip(steps[2:5], ("MNIST, H=500", "Frey Face, H=200", "Figure 3, H=100")):
        assert row.startswith(name) and len(row.split()) >= 6
    paper = result.stdout.split("A paper-length Figure 2")[1]
    plans = [line.split() for line in paper.splitlines()]  # as planned: the stacks of each dataset and algorithm
    assert ["mnist", "aevb", "N_z", "3,5,10,20"] in [plan[:4] for plan in plans]
    assert ["mnist", "aevb", "N_z", "200"] in [plan[:4] for plan in plans]
    assert ["frey", "wake_sleep", "N_z", "2,5,10,20"] in [plan[:4] for plan in plans]
    assert sum(" h stacked" in line for line in paper.splitlines()) == 7
    commands = result.stdout.split("Whole sweeps")[1].splitlines()
    assert len(commands) >= 5, commands
    assert commands[1].split()[:4] == ["basic", "joblib,", "2", "jobs"]
    assert [row.split(",")[0] for row in commands[2:5]] == ["Frey Face", "Figure 3's setup", "MNIST's setup"]
