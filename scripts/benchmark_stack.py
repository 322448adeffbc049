"""Stacks of models (hydra/launcher=stack) against the same models trained one by one.

    python scripts/benchmark_stack.py [--data-root DIR] [--dataset mnist] [--frey-root DIR] [--device cpu|cuda]

Measures, on the same data and machine, in one process:
  steps     per setup (MNIST's: H=500, N_z 3,5,10,20; Frey Face's: H=200, N_z 2,5,10,20; Figure
            3's: H=100, N_z=3, seeds 0-3, 1,000 images), the AEVB step of a stack of the four
            models against the four models' own steps, in model-samples/s
  paper     what the training steps of a paper-length Figure 2 (18 models x 1e8 samples) take, in
            the stacks the launcher plans and one model at a time, from the measured steps
  commands  whole sweeps, `python -m vae_repro.run -m ...` (start-up, evaluations, checkpoints
            included) through the basic launcher, joblib with 2 jobs and the stack launcher
            (--command-samples per model; --mnist-command-samples for MNIST's setup)
--only SECTION ... runs some of them. Without the dataset's files under --data-root it makes
random full-size IDX files, and without <frey-root>/FreyFace/frey_rawface.mat random frames.
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io
import torch
from benchmark import (BATCH, FIG3_TRAIN, PAPER_SAMPLES, benchmark_data, best_in_turns, frey_frames, parsed,
                       setup_config)

from vae_repro.data import DATASETS, Images
from vae_repro.jobs import prepare
from vae_repro.stacks import plan_stacks
from vae_repro.train import Job

SECTIONS = ["steps", "paper", "commands"]
SETUPS = {"MNIST, H=500, N_z 3,5,10,20": ("mnist", [3, 5, 10, 20], [0, 0, 0, 0]),
          "Frey Face, H=200, N_z 2,5,10,20": ("frey", [2, 5, 10, 20], [0, 0, 0, 0]),
          "Figure 3, H=100, N_z 3, seeds 0-3": ("fig3", [3, 3, 3, 3], [0, 1, 2, 3])}
FIG2 = {"mnist": [3, 5, 10, 20, 200], "frey": [2, 5, 10, 20]}  # the paper's N_z of each row of Figure 2


def stack_train(setup: str, latent_dims: list[int], seeds: list[int], data, device, algorithm="aevb"):
    """A function that trains the stack of these models for a number of samples per model."""
    cfgs = []
    for latent_dim, seed in zip(latent_dims, seeds):
        cfg = setup_config(setup, device, algorithm)
        cfg.latent_dim, cfg.seed = latent_dim, seed
        cfgs.append(cfg)
    images = Images(*data, None)
    job = Job([prepare(cfg, tempfile.mkdtemp(), images) for cfg in cfgs], images)

    def train(samples):
        job.train_steps(samples // BATCH, StopNever())
        if device.type == "cuda":
            torch.cuda.synchronize()
    return train


class StopNever:
    received = None


def print_steps(args, device, data_of) -> None:
    print(f"\nA stack of 4 models' AEVB step against the 4 models' own steps, model-samples/s (best of "
          f"{args.rounds}, {args.step_samples:,} samples per model each):")
    print(f"{'':36}{'stack':>10}{'one by one':>12}{'ratio':>8}")
    for name, (setup, latent_dims, seeds) in SETUPS.items():
        loops = {"stack": stack_train(setup, latent_dims, seeds, data_of[setup], device)}
        for k, (latent_dim, seed) in enumerate(zip(latent_dims, seeds)):
            loops[k] = stack_train(setup, [latent_dim], [seed], data_of[setup], device)
        best = best_in_turns(loops, args.step_samples, args.rounds)
        stacked, alone = len(latent_dims) / best["stack"], len(latent_dims) / sum(best[k] for k in range(4))
        print(f"{name:36}{stacked:>10,.0f}{alone:>12,.0f}{stacked / alone:>8.2f}")


def print_paper(args, device, data_of) -> None:
    """Seconds per step of each stack of Figure 2 as the launcher plans it, and of each model alone."""
    print(f"\nA paper-length Figure 2 (AEVB and wake-sleep, 18 models x {PAPER_SAMPLES:.0e} samples), training steps "
          "only, from each stack's step and each model's own:")
    steps = PAPER_SAMPLES // BATCH
    total_stacked = total_alone = 0.0
    for setup, latent_dims in FIG2.items():
        cfgs = [setup_config(setup, device) for _ in latent_dims]
        for cfg, latent_dim in zip(cfgs, latent_dims):
            cfg.latent_dim = latent_dim
        input_dim = data_of[setup][0].shape[1]
        plan = plan_stacks(cfgs, [0] * len(cfgs), [input_dim] * len(cfgs), max_models=16, max_padding=0.25)
        for algorithm in ("aevb", "wake_sleep"):
            for stack in plan:
                dims = [latent_dims[i] for i in stack]
                loops = {"stack": stack_train(setup, dims, [0] * len(dims), data_of[setup], device, algorithm)}
                loops.update({d: stack_train(setup, [d], [0], data_of[setup], device, algorithm) for d in dims})
                best = best_in_turns(loops, args.step_samples, args.rounds)
                stacked = best["stack"] * BATCH * steps
                alone = sum(best[d] for d in dims) * BATCH * steps
                total_stacked, total_alone = total_stacked + stacked, total_alone + alone
                print(f"  {setup:6}{algorithm:11}N_z {','.join(map(str, dims)):14}{stacked / 3600:8.2f} h stacked"
                      f"{alone / 3600:8.2f} h one by one")
    print(f"{'Figure 2':29}{total_stacked / 3600:8.2f} h stacked{total_alone / 3600:8.2f} h one by one "
          f"({total_alone / total_stacked:.2f}x)")


def command_seconds(args: list[str], cwd: Path, n_jobs: int) -> float:
    """Wall seconds of a whole sweep, `python -m vae_repro.run -m ARGS`; checks that every job completed."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "vae_repro.run", "-m", *args, "train.progress=false",
                           f"hydra.sweep.dir={tempfile.mkdtemp(dir=cwd)}"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if f"{n_jobs} of {n_jobs} jobs completed" not in done.stdout:
        raise RuntimeError(f"the sweep {' '.join(args)} did not complete: {done.stderr[-500:]}")
    return seconds


def print_commands(args, device, roots, fig3_train: int) -> None:
    samples, mnist_samples = f"train.max_samples={args.command_samples:g}", f"train.max_samples={args.mnist_command_samples:g}"
    sweeps = {
        f"Frey Face, AEVB, N_z 2,5,10,20, {args.command_samples:.0e} each":
            ["data=frey_face", f"data.root={roots['frey']}", "model.decoder_logvar_min=-10", "latent_dim=2,5,10,20",
             samples],
        f"Figure 3's setup, AEVB, seeds 0-3, {args.command_samples:.0e} each":
            [f"data={roots['dataset']}", f"data.root={roots['mnist']}", f"data.train_size={fig3_train}",
             "model.hidden_size=100", "latent_dim=3", "eval.marginal=hmc", "train.eval_points_per_decade=2",
             "seed=0,1,2,3", samples],
        f"MNIST's setup, AEVB, N_z 3,5,10,20, {args.mnist_command_samples:.0e} each":
            [f"data={roots['dataset']}", f"data.root={roots['mnist']}", "latent_dim=3,5,10,20", mnist_samples],
    }
    launchers = {"basic": [], "joblib, 2 jobs": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                 "stack": ["hydra/launcher=stack"]}
    print(f"\nWhole sweeps (python -m vae_repro.run -m ...), wall seconds, device={device.type}:")
    print(f"{'':50}" + "".join(f"{name:>16}" for name in launchers) + f"{'stack vs basic':>16}{'vs joblib':>11}")
    with tempfile.TemporaryDirectory() as cwd:
        for name, sweep in sweeps.items():
            seconds = {launcher: command_seconds([*sweep, f"device={device.type}", *extra], Path(cwd), 4)
                       for launcher, extra in launchers.items()}
            print(f"{name:50}" + "".join(f"{s:>16.1f}" for s in seconds.values()) +
                  f"{seconds['basic'] / seconds['stack']:>15.2f}x{seconds['joblib, 2 jobs'] / seconds['stack']:>10.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--dataset", choices=list(DATASETS), default="mnist")
    parser.add_argument("--frey-root", type=Path, help="where FreyFace/frey_rawface.mat is (default: --data-root)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--step-samples", type=int, default=20_000, help="per model and round")
    parser.add_argument("--command-samples", type=float, default=1e6, help="per model, Frey Face and Figure 3")
    parser.add_argument("--mnist-command-samples", type=float, default=3e5, help="per model, MNIST's setup")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS, help="run these sections alone")
    args, device = parsed(parser)
    with tempfile.TemporaryDirectory() as tmp:
        root, dataset, train_x, test_x = benchmark_data(args, Path(tmp))
        frey_root = (args.frey_root or args.data_root).resolve()
        frey_train, frey_test = frey_frames(frey_root)
        if not (frey_root / "FreyFace" / "frey_rawface.mat").exists():  # the commands read the file
            frey_root = Path(tmp) / "frey"
            (frey_root / "FreyFace").mkdir(parents=True)
            frames = torch.cat([frey_train, frey_test]).numpy()
            scipy.io.savemat(frey_root / "FreyFace" / "frey_rawface.mat", {"ff": np.ascontiguousarray(frames.T)})
        print(f"data: {dataset} under {root}; device: {device}; torch threads: {torch.get_num_threads()}")
        data_of = {"mnist": (train_x, test_x), "frey": (frey_train, frey_test), "fig3": (train_x[:FIG3_TRAIN], test_x)}
        if "steps" in args.only:
            print_steps(args, device, data_of)
        if "paper" in args.only:
            print_paper(args, device, data_of)
        if "commands" in args.only:
            print_commands(args, device, {"mnist": root, "dataset": dataset, "frey": frey_root},
                           len(data_of["fig3"][0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
