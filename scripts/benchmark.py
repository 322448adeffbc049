"""Times the project's training path against a textbook PyTorch VAE loop and against its own
floor, the matrix products of its step, in one process.

    python scripts/benchmark.py [--data-root DIR] [--dataset mnist] [--device cpu|cuda]

Measures, on the same data and machine:
  matmul     a large fp32 matmul, the machine's practical peak
  textbook   torchvision dataset with a per-image ToTensor, DataLoader(batch 100), an nn.Module
             VAE, Adagrad, full train+test evaluation every 1e5 samples (scripts/textbook.py)
  project    vae_repro.train's job on the dataset held as one tensor: its AEVB step, its
             wake-sleep step, and its evaluation
  memory     one real `python -m vae_repro.run` job in a subprocess, for its peak memory
  frey       the Frey Face setup (Gaussian decoder, 200 hidden units, N_z = 5): the project's step
             against a textbook loop of the same model over a TensorDataset
  fig3       Figure 3's setup (N_z = 3, H = 100, 1,000 training images): the step of each algorithm,
             Monte Carlo EM's against the same step on a model too small to cost anything but
             Python and dispatch, and the HMC marginal likelihood estimate of 1,000 images, as a
             share of the wall time of runs with sweep=fig3's evaluation schedule
  floor      for the MNIST, Frey Face and Figure 3 setups: the AEVB step against its matrix
             products alone (the most any fp32 step of that model can do), the time per step
             outside them, and a whole job of --job-samples (evaluations and checkpoints
             included), each as a share of the large matmul's rate; with --compile the same
             with train.compile (its compiling counted in the job); on CUDA the same with
             train.cuda_graph=false
  share      a whole command (MNIST's setup, --share-samples) alone and beside one busy process per
             core (`yes`), with the default threads=0 (the count chosen while it trains), one
             thread, and all cores fixed: what a job keeps of its speed on a shared machine
  curve      both loops trained for --curve-samples with the same settings, ELBO side by side
  depth      two hidden layers of 200 and N_z = 50 (the IWAE paper's model), AEVB: the hand-written
             step, the autograd path (train.gradients=autograd) and the textbook loop of the same
             model (as above, and over a TensorDataset); then the paper's model with Adam against Adagrad, and
             its autograd path
  before     with --before DIR (a checkout of the code before a change): the jobs of
             scripts/same_results.sh, each timed with that code and this, in turns
--only SECTION ... runs some of them (textbook, frey, fig3, floor, share, curve, depth, before).
Without the dataset's files under --data-root it makes random full-size IDX files, and
without <data-root>/FreyFace/frey_rawface.mat random frames.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from textbook import BATCH, LR, TextbookVAE, textbook_frey, textbook_mnist

from vae_repro.checkpoint import StopSignals
from vae_repro.config import (AlgorithmConfig, Config, ConfigError, DataConfig, EvalConfig, ModelConfig,
                              OptimizerConfig, TrainConfig)
from vae_repro.data import DATASETS, DataError, Images, load_dataset, load_frey_face, write_idx
from vae_repro.jobs import prepare
from vae_repro.machine import resolve_device
from vae_repro.metrics import evaluate, evaluate_marginal
from vae_repro.noise import Noise
from vae_repro.schedule import eval_schedule
from vae_repro.train import Job

MNIST_LATENT, MNIST_HIDDEN = 20, 500
FREY_LATENT, FREY_HIDDEN = 5, 200  # the paper's Frey Face model, N_z = 5
FIG3_LATENT, FIG3_HIDDEN, FIG3_TRAIN = 3, 100, 1000  # Figure 3's model and its small training set
FIG3_EVALS_PER_DECADE, FIG3_RUN_SAMPLES = 2, (10_000_000, 60_000_000)  # sweep=fig3's schedule; run lengths
TEXTBOOK_EVAL_EVERY = 100_000
PAPER_SAMPLES = 100_000_000
DEEP_LATENT, DEEP_HIDDEN = 50, [200, 200]  # the IWAE paper's model
SECTIONS = ["textbook", "frey", "fig3", "floor", "share", "curve", "depth", "before"]
REPO = Path(__file__).resolve().parents[1]
PROBE_S, PROBE_EVERY_S = 0.3, 10.0  # the large matmul's measurements within a job: length, interval


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def matmul_gflops(device, size=2048, seconds=2.0):
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    sync(device)
    return 2 * size ** 3 * n / (time.perf_counter() - start) / 1e9


def setup_config(setup: str, device: torch.device, algorithm: str = "aevb", **train) -> Config:
    """The config of a benchmark setup: "mnist", "frey" or "fig3" (whose callers pass it the first
    FIG3_TRAIN training images)."""
    if setup == "frey":
        # The floor on the log variance keeps a run on frames whose background never varies finite.
        model, latent, data, evaluation = ModelConfig(hidden_size=FREY_HIDDEN, likelihood="gaussian",
                                                      decoder_logvar_min=-10.0), FREY_LATENT, \
            DataConfig(name="frey_face"), EvalConfig()
    elif setup == "fig3":
        model, latent, data, evaluation = ModelConfig(hidden_size=FIG3_HIDDEN), FIG3_LATENT, DataConfig(), \
            EvalConfig(marginal="hmc")
        train.setdefault("eval_points_per_decade", FIG3_EVALS_PER_DECADE)
    else:
        model, latent, data, evaluation = ModelConfig(hidden_size=MNIST_HIDDEN), MNIST_LATENT, DataConfig(), EvalConfig()
    return Config(latent_dim=latent, seed=0, device=device.type, algorithm=AlgorithmConfig(algorithm), model=model,
                  data=data, optimizer=OptimizerConfig(lr=LR), eval=evaluation,
                  train=TrainConfig(progress=False, **train))


class Project:
    """This project's job, driven step by step: its batches, its step function, its evaluation."""

    def __init__(self, cfg: Config, train_x, test_x):
        data = Images(train_x, test_x, None)
        self.job = Job([prepare(cfg, tempfile.mkdtemp(), data)], data)

    def train(self, samples):
        self.job.train_steps(samples // BATCH, StopSignals())  # the runner's own loop, with no signal handlers set
        sync(self.job.device)

    def evaluate(self):
        model, device = self.job.model, self.job.device
        return [evaluate(model, x, 1, Noise.seeded([1], model.latent_dims, device), binarize_dynamic=False)[0][0]
                for x in (self.job.train_x, self.job.test_x)]


def products_only(model, device):
    """A step of nothing but the matrix products of an AEVB step of `model`, on random operands:
    each layer's forward product and its weight gradient, and the gradient of its input for all
    but the first layer (whose input is the data). On a CUDA device they are replayed as one
    CUDA graph, as the step is: launched one by one, they would time the launches."""
    layers = [*model.enc_layers, *model.dec_layers]
    stack = len(model.latent_dims)
    inputs = [torch.rand(stack, BATCH, layer.weight.shape[2], device=device) for layer in layers]
    output_grads = [torch.rand(stack, BATCH, layer.weight.shape[1], device=device) for layer in layers]

    @torch.no_grad()
    def products():
        for i, (layer, layer_input, d_output) in enumerate(zip(layers, inputs, output_grads)):
            torch.baddbmm(layer.bias.unsqueeze(1), layer_input, layer.weight.mT)
            d_output.mT.bmm(layer_input)
            if i > 0:
                d_output.bmm(layer.weight)
    if device.type == "cuda":
        products()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            products()
        products = graph.replay

    def train(samples):
        for _ in range(samples // BATCH):
            products()
        sync(device)
    return train


def flops_per_sample(model) -> int:
    """Three products per layer (forward, weight and input gradient), as the utilization figures count them."""
    return 3 * 2 * sum(layer.weight.shape[1] * layer.weight.shape[2]
                       for layer in (*model.enc_layers, *model.dec_layers))


def warm_up(loops: dict) -> None:
    for train in loops.values():
        train(10 * BATCH)


def best_in_turns(loops: dict, samples: int, rounds: int) -> dict:
    """Seconds per sample of each loop (a function of a sample count), best of `rounds` windows
    taken in turns, so that all meet the same neighbours on a shared machine."""
    warm_up(loops)
    best = {name: math.inf for name in loops}
    for _ in range(rounds):
        for name, train in loops.items():
            best[name] = min(best[name], timed(train, samples)[0] / samples)
    return best


def job_samples_per_s(cfg: Config, train_x, test_x, device) -> tuple[float, float]:
    """Samples per second of a whole job as the runner trains it, evaluations and checkpoints
    included, start-up not; and the large matmul's GFLOP/s over the same time. The machine's
    speed drifts within a job, so the matmul is measured before and after it and, between its
    steps, every PROBE_EVERY_S seconds; the probes' time is taken out of the job's."""
    rates, probe_s = [matmul_gflops(device, seconds=PROBE_S)], 0.0
    with tempfile.TemporaryDirectory() as out:
        data = Images(train_x, test_x, None)
        job = Job([prepare(cfg, out, data)], data)
        train_steps, last_probe = job.train_steps, time.perf_counter()

        def train_steps_and_probe(n, stop):
            nonlocal probe_s, last_probe
            done = train_steps(n, stop)
            if time.perf_counter() - last_probe > PROBE_EVERY_S:
                start = time.perf_counter()
                rates.append(matmul_gflops(device, seconds=PROBE_S))
                last_probe = time.perf_counter()
                probe_s += last_probe - start
            return done
        job.train_steps = train_steps_and_probe
        summary = job.run()[0]
    rates.append(matmul_gflops(device, seconds=PROBE_S))
    return summary.samples / (summary.wall_s - probe_s), sum(rates) / len(rates)


def job_peak_memory_mib(dataset, root):
    """Peak memory of one real training job with evaluation, as the runner starts it: peak RSS,
    and peak private memory (RSS less the pages of shared libraries, sampled every 5 ms)."""
    with tempfile.TemporaryDirectory() as out:
        job = subprocess.Popen([sys.executable, "-m", "vae_repro.run", f"data={dataset}", f"data.root={root}",
                                "data.download=false", "device=cpu", "train.max_samples=3e4",
                                "train.progress=false", f"hydra.run.dir={out}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak_rss = peak_private = 0
        while job.poll() is None:
            try:
                status = dict(line.split(":", 1) for line in Path(f"/proc/{job.pid}/status").read_text().splitlines())
            except (OSError, ValueError):
                break
            peak_rss = max(peak_rss, int(status.get("VmHWM", "0").split()[0]))
            peak_private = max(peak_private, int(status.get("RssAnon", "0").split()[0]))
            time.sleep(0.005)
        if job.wait() != 0:
            raise RuntimeError("the benchmark's training job failed")
    return peak_rss / 1024, peak_private / 1024


def command_samples_per_s(dataset: str, root: Path, samples: float, threads: int, busy: int) -> float:
    """Samples per second of a real `python -m vae_repro.run` job of MNIST's setup, as its summary.json
    gives them, beside `busy` processes that spin (`yes > /dev/null`)."""
    spinners = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(busy)]
    try:
        with tempfile.TemporaryDirectory() as out:
            subprocess.run([sys.executable, "-m", "vae_repro.run", f"data={dataset}", f"data.root={root}",
                            "data.download=false", "device=cpu", f"threads={threads}", f"train.max_samples={samples}",
                            "train.progress=false", f"hydra.run.dir={out}"], check=True, capture_output=True)
            return json.loads((Path(out) / "summary.json").read_text())["samples_per_s"]
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


# The jobs of scripts/same_results.sh, timed against the code of another checkout (--before).
BEFORE_JOBS = {"aevb": ["algorithm=aevb"], "wake_sleep": ["algorithm=wake_sleep"], "iwae": ["algorithm=iwae"],
               "mcem": ["algorithm=mcem", "latent_dim=3", "model.hidden_size=100", "eval.marginal_points=100"],
               "stack of 4": ["-m", "latent_dim=2,3", "seed=0,1", "hydra/launcher=stack"]}


def job_wall_s(code: Path, args: list[str], root: Path, samples: float) -> float:
    """The training wall time (summary.json) of a `python -m vae_repro.run` job run by the code under
    `code`; of a sweep's first job, which for a stack is the stack's. One thread: the rest of the machine
    has a core of its own, which steadies the times (with all cores, the same code's varied by 20%)."""
    env = os.environ | {"PYTHONPATH": str(code / "src")}
    with tempfile.TemporaryDirectory() as out:
        dir_key = "hydra.sweep.dir" if "-m" in args else "hydra.run.dir"
        job = subprocess.run([sys.executable, "-m", "vae_repro.run", *args, f"data.root={root}", "data.download=false",
                              "device=cpu", "threads=1", f"train.max_samples={samples}",
                              "train.progress=false", f"{dir_key}={out}"], capture_output=True, text=True, env=env)
        if job.returncode != 0:
            last = (job.stderr.strip() or "no output").splitlines()[-1]
            raise SystemExit(f"error: {' '.join(args)} with the code in {code} failed: {last}")
        return json.loads(next(Path(out).glob("**/summary.json")).read_text())["wall_s"]


def print_before(args, root: Path) -> None:
    print(f"\nAgainst the code in {args.before}: each job's training wall time at {args.before_samples:.0e} samples "
          f"(summary.json), the two taken in turns, best of {args.rounds}")
    print(f"{'job':<14}{'before':>10}{'now':>10}{'now/before':>12}")
    for name, job in BEFORE_JOBS.items():
        best = {"before": math.inf, "now": math.inf}
        for _ in range(args.rounds):
            for side, code in (("before", args.before), ("now", REPO)):
                best[side] = min(best[side], job_wall_s(code, job, root, args.before_samples))
        print(f"{name:<14}{best['before']:>9.2f}s{best['now']:>9.2f}s{best['now'] / best['before']:>12.2f}")


def print_fair_share(args, dataset, root) -> None:
    cores = len(os.sched_getaffinity(0))
    print(f"\nA shared machine: one {args.share_samples:.0e}-sample command (MNIST's setup) alone and beside {cores} "
          f"busy processes on {cores} cores (samples/s, summary.json)")
    print(f"{'threads':<34}{'alone':>10}{'busy':>10}{'kept':>8}")
    for threads, label in ((0, "0 (default: chosen as it trains)"), (1, "1"), (cores, f"{cores} (fixed)")):
        alone = command_samples_per_s(dataset, root, args.share_samples, threads, busy=0)
        # All cores fixed crawls beside busy processes; a tenth of the samples measures it as well.
        busy_samples = args.share_samples / 10 if threads > 1 else args.share_samples
        busy = command_samples_per_s(dataset, root, busy_samples, threads, busy=cores)
        print(f"{label:<34}{alone:>10,.0f}{busy:>10,.0f}{busy / alone:>8.0%}")


def synthetic_root(root: Path) -> Path:
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 60_000), ("t10k", 10_000)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return root


def parsed(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, torch.device]:
    """The arguments, and the device they name; one line and exit status 2 where it is not available."""
    args = parser.parse_args()
    try:
        return args, resolve_device(args.device)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def benchmark_data(args, tmp: Path) -> tuple[Path, str, torch.Tensor, torch.Tensor]:
    """The root, name and (train, test) images of --dataset under --data-root, or random full-size
    synthetic MNIST files under `tmp` where they are missing."""
    root, dataset = args.data_root.resolve(), args.dataset
    try:
        return (root, dataset, *load_dataset(dataset, root, download=False)[:2])
    except DataError:
        print(f"no {args.dataset} files under {args.data_root}: using random full-size synthetic data")
        root = synthetic_root(tmp / "synthetic")
        return (root, "mnist", *load_dataset("mnist", root, download=False)[:2])


def frey_frames(root: Path):
    try:
        return load_frey_face(root, download=False)
    except DataError:
        print(f"no Frey Face file under {root}: using random frames")
        frames = torch.randint(0, 256, (1965, 560), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
        return frames[:1600], frames[1600:]


def fig3_costs(train_x, test_x, device, rounds):
    """Seconds per training step of each algorithm in Figure 3's setup, Monte Carlo EM's step on
    a 2-pixel model with 1 hidden unit (what is left is Python and dispatch), and seconds per
    HMC marginal estimate of one split's first 1,000 images."""
    train_x = train_x[:FIG3_TRAIN]
    projects = {name: Project(setup_config("fig3", device, name), train_x, test_x)
                for name in ("aevb", "wake_sleep", "mcem")}
    tiny = torch.randint(0, 256, (FIG3_TRAIN, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    tiny_cfg = setup_config("fig3", device, "mcem")
    tiny_cfg.model.hidden_size = 1
    projects["tiny mcem"] = Project(tiny_cfg, tiny, tiny[:100])
    step_s = {name: BATCH * s for name, s in
              best_in_turns({name: p.train for name, p in projects.items()}, 30 * BATCH, rounds).items()}
    job = projects["aevb"].job
    noise = Noise.seeded([1], job.model.latent_dims, job.device)
    marginal_s = min(timed(evaluate_marginal, job.evaluation.marginal, job.model, job.test_x[:1000], noise, False)[0]
                     for _ in range(2))
    elbo_s = sum(timed(evaluate, job.model, x, 1, noise, False)[0] for x in (job.train_x, job.test_x))
    return step_s, marginal_s, elbo_s


def print_fig3(step_s, marginal_s, elbo_s):
    print(f"\nFigure 3 setup (N_z={FIG3_LATENT}, H={FIG3_HIDDEN}, {FIG3_TRAIN:,} training images):")
    tiny_s = step_s.pop("tiny mcem")
    for name, seconds in step_s.items():
        print(f"{name + ' step':34}{BATCH / seconds:12,.0f} samples/s   ({1e3 * seconds:.2f} ms per step)")
    print(f"{'mcem step, Python and dispatch':34}{1e3 * tiny_s:12.2f} ms per step "
          f"({100 * tiny_s / step_s['mcem']:.0f}% of the real step)")
    print(f"HMC marginal estimate, 1,000 images: {marginal_s:.2f} s per split (ELBO of both splits: {elbo_s:.2f} s)")
    for run_samples in FIG3_RUN_SAMPLES:
        n_evals = len(eval_schedule(10_000, FIG3_EVALS_PER_DECADE, run_samples, BATCH))
        shares = []
        for name, seconds in step_s.items():
            eval_s = n_evals * (2 * marginal_s + (elbo_s if name != "mcem" else 0.0))
            total_s = run_samples / BATCH * seconds + eval_s
            shares.append(f"{name} {100 * n_evals * 2 * marginal_s / total_s:.1f}% of {total_s / 60:.0f} min")
        print(f"marginal estimates' wall share, {run_samples:.0e} samples ({n_evals} evaluations): " + ", ".join(shares))


def floor_row(name, setup, device, train_x, test_x, rounds, samples, job_samples, **train):
    """One line of the floor table: the AEVB step of `setup`, its products alone, and a whole job,
    with the `train` settings given (with train.compile, its compiling included in the job's
    time). The machine's speed drifts from one minute to the next, so each share divides rates
    measured in the same window: per round a second of the large matmul, then the step and the
    products; for the job, the matmul's average over its run (`job_samples_per_s`). Each rate
    and share of the step printed is the best of the rounds."""
    project = Project(setup_config(setup, device, **train), train_x, test_x)
    flops = flops_per_sample(project.job.model)
    loops = {"step": project.train, "products": products_only(project.job.model, device)}
    warm_up(loops)
    step_s = products_s = math.inf
    of_bound = of_matmul = 0.0
    for _ in range(rounds):
        gflops = matmul_gflops(device, seconds=1.0)
        step, products = (timed(train, samples)[0] / samples for train in loops.values())
        step_s, products_s = min(step_s, step), min(products_s, products)
        of_bound, of_matmul = max(of_bound, products / step), max(of_matmul, flops / step / 1e9 / gflops)
    job_rate, job_gflops = job_samples_per_s(setup_config(setup, device, max_samples=job_samples, **train),
                                             train_x, test_x, device)
    print(f"{name:26}{1 / step_s:10,.0f}{1 / products_s:10,.0f}{100 * of_bound:9.0f}%{100 * of_matmul:10.0f}%"
          f"{1e3 * BATCH * (step_s - products_s):12.2f}{job_rate:10,.0f}{100 * job_rate * flops / 1e9 / job_gflops:10.0f}%")


def compare_with_textbook(args, device, dataset, root, train_x, test_x) -> float:
    """The MNIST-size model: the textbook loop against the project's steps, its evaluation, the
    FLOP utilization and one job's memory. Returns the AEVB step's samples/s."""
    gflops = max(matmul_gflops(device) for _ in range(args.rounds))
    textbook = textbook_mnist(dataset, root, device)
    project = Project(setup_config("mnist", device), train_x, test_x)
    wake_sleep = Project(setup_config("mnist", device, "wake_sleep"), train_x, test_x)
    textbook.train(2 * BATCH)  # warm-up
    tb_train_s = min(timed(textbook.train, args.textbook_samples)[0] for _ in range(args.rounds))
    best = best_in_turns({"aevb": project.train, "wake_sleep": wake_sleep.train}, args.project_samples // 3,
                         3 * args.rounds)
    tb_eval_s, _ = timed(textbook.evaluate)
    pr_eval_s = min(timed(project.evaluate)[0] for _ in range(2))
    peak_rss, peak_private = job_peak_memory_mib(dataset, root) if device.type == "cpu" else (math.nan,) * 2

    tb_rate, pr_rate, ws_rate = args.textbook_samples / tb_train_s, 1 / best["aevb"], 1 / best["wake_sleep"]
    # End to end: training plus each loop's evaluation policy, per sample.
    tb_e2e = 1 / (1 / tb_rate + tb_eval_s / TEXTBOOK_EVAL_EVERY)
    n_evals = len(eval_schedule(10_000, 5, PAPER_SAMPLES, BATCH))
    pr_paper_s = PAPER_SAMPLES / pr_rate + n_evals * pr_eval_s
    pr_e2e = PAPER_SAMPLES / pr_paper_s
    flops = flops_per_sample(project.job.model)

    print()
    print(f"{'':34}{'samples/s':>12}")
    print(f"{'textbook loop, training only':34}{tb_rate:12,.0f}")
    print(f"{'textbook loop, with its eval':34}{tb_e2e:12,.0f}   (full eval every 1e5 samples: {tb_eval_s:.2f} s)")
    print(f"{'project step, training only':34}{pr_rate:12,.0f}")
    print(f"{'project, with its eval schedule':34}{pr_e2e:12,.0f}   ({n_evals} evals to 1e8 samples: {pr_eval_s:.2f} s each)")
    print(f"{'wake-sleep step, training only':34}{ws_rate:12,.0f}   ({ws_rate / pr_rate:.2f}x the AEVB step)")
    print()
    print(f"speed-up, end to end:               {pr_e2e / tb_e2e:6.2f}x")
    print(f"speed-up, training step only:       {pr_rate / tb_rate:6.2f}x")
    print(f"large matmul ({device.type}):           {gflops:8.1f} GFLOP/s")
    print(f"project step:                       {pr_rate * flops / 1e9:8.1f} GFLOP/s "
          f"({flops / 1e6:.2f} MFLOP per sample)")
    print(f"FLOP utilization of the step:       {100 * pr_rate * flops / 1e9 / gflops:6.1f} %")
    print(f"evaluation share of a 1e8 run:      {100 * n_evals * pr_eval_s / pr_paper_s:6.2f} %")
    print(f"paper-length run (1e8 samples):     {pr_paper_s / 3600:6.2f} h per model")
    print(f"peak memory of one job:             {peak_private:6.0f} MiB private, {peak_rss:.0f} MiB RSS "
          "with shared libraries")
    return pr_rate


def compare_frey_with_textbook(args, device, frey_train, frey_test) -> None:
    frey_textbook = textbook_frey(frey_train, frey_test, device, FREY_HIDDEN, FREY_LATENT)
    frey_project = Project(setup_config("frey", device), frey_train, frey_test)
    frey_best = best_in_turns({"textbook": frey_textbook.train, "project": frey_project.train},
                              args.textbook_samples, args.rounds)
    print(f"\nFrey Face setup (Gaussian decoder, H={FREY_HIDDEN}, N_z={FREY_LATENT}), training only:")
    print(f"{'textbook loop':34}{1 / frey_best['textbook']:12,.0f}")
    print(f"{'project step':34}{1 / frey_best['project']:12,.0f}   "
          f"({frey_best['textbook'] / frey_best['project']:.2f}x the textbook loop)")


def compare_depths_and_optimizers(args, device, dataset, root, train_x, test_x) -> None:
    """Steps per second, training only, of the IWAE paper's model (AEVB) by its hand-written step, the
    autograd path and a textbook loop; of the paper's model with Adam, Adagrad and autograd."""
    def project(gradients="auto", optimizer="adagrad", deep=True):
        cfg = setup_config("mnist", device)
        cfg.train.gradients, cfg.optimizer.name = gradients, optimizer
        if deep:
            cfg.latent_dim, cfg.model.hidden_sizes = DEEP_LATENT, DEEP_HIDDEN
        return Project(cfg, train_x, test_x).train
    textbook = textbook_mnist(dataset, root, device, TextbookVAE(train_x.shape[1], DEEP_HIDDEN, DEEP_LATENT))
    tensor_textbook = textbook_frey(train_x, test_x, device, DEEP_HIDDEN, DEEP_LATENT, gaussian=False)
    loops = {"deep: hand-written step": project(), "deep: autograd path": project("autograd"),
             "deep: textbook loop": textbook.train, "deep: textbook, TensorDataset": tensor_textbook.train,
             "paper's: Adagrad": project(deep=False),
             "paper's: Adam": project(optimizer="adam", deep=False),
             "paper's: autograd path": project("autograd", deep=False)}
    best = best_in_turns(loops, args.project_samples, args.rounds)
    print(f"\nThe IWAE paper's model (H={DEEP_HIDDEN}, N_z={DEEP_LATENT}) and the paper's (H={MNIST_HIDDEN}, "
          f"N_z={MNIST_LATENT}), AEVB, training only:")
    for name, s in best.items():
        print(f"{name:34}{1 / s:12,.0f} samples/s")
    hand = best["deep: hand-written step"]
    print(f"deep, hand-written step:            {best['deep: autograd path'] / hand:6.2f}x the autograd path, "
          f"{best['deep: textbook loop'] / hand:.2f}x the textbook loop, "
          f"{best['deep: textbook, TensorDataset'] / hand:.2f}x it over a TensorDataset")
    adam, adagrad = best["paper's: Adam"], best["paper's: Adagrad"]
    print(f"paper's model, Adam's step:         {adam / adagrad:6.2f}x Adagrad's time per sample")


def print_floor_table(args, device, setups) -> None:
    """`setups`: (name, setup, (train_x, test_x)) of each row."""
    print(f"\nDistance to the floor: the AEVB step against its matrix products alone, and a whole job of "
          f"{args.job_samples:.0e} samples (evaluations included), samples/s and shares of the large matmul's "
          "rate measured beside each:")
    print(f"{'':26}{'step':>10}{'products':>10}{'of bound':>10}{'of matmul':>11}{'ms outside':>12}"
          f"{'job':>10}{'of matmul':>11}")
    # Variants beside the default: torch.compile'd passes (which a CUDA graph cannot capture), and on
    # CUDA the kernels launched one by one.
    variants = [("", {})] + [(", compiled", {"compile": True, "cuda_graph": False})] * args.compile + \
        [(", eager launches", {"cuda_graph": False})] * (device.type == "cuda")
    for suffix, train in variants:
        for name, setup, data in setups:
            floor_row(name.split(",")[0] + suffix if suffix else name, setup, device, *data,
                      args.rounds, args.project_samples, args.job_samples, **train)


def print_curves(args, device, dataset, root, train_x, test_x) -> None:
    print(f"\nELBO after the same training (N_z={MNIST_LATENT}, lr={LR}, batch {BATCH}), train / test:")
    textbook, project = textbook_mnist(dataset, root, device), Project(setup_config("mnist", device), train_x, test_x)
    seen = 0
    print(f"{'samples':>10}{'textbook':>22}{'project':>22}")
    for point in eval_schedule(10_000, 2, args.curve_samples, BATCH):
        textbook.train(point - seen)
        project.train(point - seen)
        seen = point
        (tb_tr, tb_te), (pr_tr, pr_te) = textbook.evaluate(), project.evaluate()
        print(f"{point:>10,}{tb_tr:>11.2f}{tb_te:>11.2f}{pr_tr:>11.2f}{pr_te:>11.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--dataset", choices=list(DATASETS), default="mnist")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--textbook-samples", type=int, default=10_000, help="per round")
    parser.add_argument("--project-samples", type=int, default=30_000, help="per round, for each algorithm")
    parser.add_argument("--job-samples", type=int, default=1_000_000, help="of each whole job in the floor table")
    parser.add_argument("--curve-samples", type=int, default=100_000, help="0 skips the side-by-side curve")
    parser.add_argument("--compile", action="store_true", help="add the floor table's rows with train.compile")
    parser.add_argument("--share-samples", type=float, default=3e5, help="of each command in the share table")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS, help="run these sections alone")
    parser.add_argument("--before", type=Path, help="a checkout of the code before a change: time its jobs against "
                        "this one's (git worktree add DIR REV)")
    parser.add_argument("--before-samples", type=float, default=1e5, help="of each job timed against --before")
    args, device = parsed(parser)

    with tempfile.TemporaryDirectory() as tmp:
        root, dataset, train_x, test_x = benchmark_data(args, Path(tmp))
        frey_train, frey_test = frey_frames(args.data_root.resolve())
        print(f"data: {dataset} under {root}; device: {device}; torch threads: {torch.get_num_threads()}")

        step_rate = 0.0
        if "textbook" in args.only:
            step_rate = compare_with_textbook(args, device, dataset, root, train_x, test_x)
        if "frey" in args.only:
            compare_frey_with_textbook(args, device, frey_train, frey_test)
        if "fig3" in args.only:
            print_fig3(*fig3_costs(train_x, test_x, device, args.rounds))
        if "floor" in args.only:
            print_floor_table(args, device, (("MNIST, H=500, N_z=20", "mnist", (train_x, test_x)),
                                             ("Frey Face, H=200, N_z=5", "frey", (frey_train, frey_test)),
                                             ("Figure 3, H=100, N_z=3", "fig3", (train_x[:FIG3_TRAIN], test_x))))
        if "share" in args.only and device.type == "cpu":
            print_fair_share(args, dataset, root)
        if "curve" in args.only and args.curve_samples:
            print_curves(args, device, dataset, root, train_x, test_x)
        if "depth" in args.only:
            compare_depths_and_optimizers(args, device, dataset, root, train_x, test_x)
        if "before" in args.only and args.before is not None:
            print_before(args, root)
    return 0 if math.isfinite(step_rate) else 1


if __name__ == "__main__":
    sys.exit(main())
