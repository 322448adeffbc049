"""Times the project's training path against a textbook PyTorch VAE loop, in one process.

    python scripts/benchmark.py [--data-root DIR] [--dataset mnist] [--device cpu|cuda]

Measures, on the same data and machine, one after the other:
  matmul     a large fp32 matmul, the machine's practical peak
  textbook   torchvision dataset with a per-image ToTensor, DataLoader(batch 100), an nn.Module
             VAE, Adagrad, full train+test evaluation every 1e5 samples
  project    vae_repro.train's job on the dataset held as one tensor: its AEVB step, its
             wake-sleep step, and its evaluation
  job        one real `python -m vae_repro.run` job in a subprocess, for its peak memory
  frey       the Frey Face setup (Gaussian decoder, 200 hidden units, N_z = 5), the project's step
             against a textbook loop of the same model over a TensorDataset, and against the
             step's matrix products alone: the most any fp32 step of this model can do
  fig3       Figure 3's setup (N_z = 3, H = 100, 1,000 training images): the step of each algorithm,
             Monte Carlo EM's against the same step on a model too small to cost anything but
             Python and dispatch, and the HMC marginal likelihood estimate of 1,000 images, as a
             share of the wall time of runs with sweep=fig3's evaluation schedule
  curve      both loops trained for --curve-samples with the same settings, ELBO side by side
and prints a table. Without the dataset's files under --data-root it makes random full-size
IDX files, and without <data-root>/FreyFace/frey_rawface.mat random frames.
"""
import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vae_repro.config import AlgorithmConfig, Config, ConfigError, DataConfig, EvalConfig, ModelConfig, OptimizerConfig
from vae_repro.data import DATASETS, DataError, load_dataset, load_frey_face, write_idx
from vae_repro.metrics import eval_schedule, evaluate, evaluate_marginal
from vae_repro.train import Job, resolve_device

LATENT, HIDDEN, INPUT, BATCH, LR = 20, 500, 784, 100, 0.02
FREY_LATENT, FREY_HIDDEN, FREY_INPUT = 5, 200, 560  # the paper's Frey Face model, N_z = 5
FIG3_LATENT, FIG3_HIDDEN, FIG3_TRAIN = 3, 100, 1000  # Figure 3's model and its small training set
FIG3_EVALS_PER_DECADE, FIG3_RUN_SAMPLES = 2, (10_000_000, 60_000_000)  # sweep=fig3's schedule; run lengths
TEXTBOOK_EVAL_EVERY = 100_000
PAPER_SAMPLES = 100_000_000


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


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


class TextbookVAE(nn.Module):
    """The VAE as tutorials write it (pytorch/examples vae/main.py), with the paper's sizes and init;
    `gaussian` gives the Frey Face decoder (sigmoid means and a log variance per pixel)."""

    def __init__(self, input_dim=INPUT, hidden=HIDDEN, latent=LATENT, gaussian=False):
        super().__init__()
        self.input_dim, self.gaussian = input_dim, gaussian
        self.fc1, self.fc21, self.fc22 = nn.Linear(input_dim, hidden), nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.fc3, self.fc4 = nn.Linear(latent, hidden), nn.Linear(hidden, input_dim * (2 if gaussian else 1))
        for layer in (self.fc1, self.fc21, self.fc22, self.fc3, self.fc4):
            nn.init.normal_(layer.weight, 0, 0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        h = torch.tanh(self.fc1(x.view(-1, self.input_dim)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        out = self.fc4(torch.tanh(self.fc3(z)))
        if self.gaussian:
            mean, x_logvar = out.chunk(2, dim=-1)
            return (torch.sigmoid(mean), x_logvar), mu, logvar
        return torch.sigmoid(out), mu, logvar


def textbook_loss(recon, mu, logvar, x):
    x = x.view(len(x), -1)
    if isinstance(recon, tuple):  # Gaussian decoder
        nll = -torch.distributions.Normal(recon[0], torch.exp(0.5 * recon[1])).log_prob(x).sum()
    else:
        nll = F.binary_cross_entropy(recon, x, reduction="sum")
    return nll - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


class Textbook:
    def __init__(self, train_set, test_set, device, model=None):
        self.train_set, self.test_set = train_set, test_set
        self.loader = DataLoader(self.train_set, batch_size=BATCH, shuffle=True)
        self.device = device
        torch.manual_seed(0)
        self.model = (model or TextbookVAE()).to(device)
        weight_decay = 1 / len(train_set)  # the N(0, I) weight prior per datapoint
        self.optimizer = torch.optim.Adagrad(self.model.parameters(), lr=LR, weight_decay=weight_decay)

    def train(self, samples):
        seen, train_loss = 0, 0.0
        while seen < samples:
            for x, _ in self.loader:
                x = x.to(self.device)
                self.optimizer.zero_grad()
                loss = textbook_loss(*self.model(x), x) / len(x)
                loss.backward()
                train_loss += loss.item()
                self.optimizer.step()
                seen += len(x)
                if seen >= samples:
                    break

    def evaluate(self):
        elbos = []
        with torch.no_grad():
            for dataset in (self.train_set, self.test_set):
                total = 0.0
                for x, _ in DataLoader(dataset, batch_size=BATCH):
                    x = x.to(self.device)
                    total -= textbook_loss(*self.model(x), x).item()
                elbos.append(total / len(dataset))
        return elbos


def textbook_mnist(dataset, root, device):
    """torchvision's dataset with a per-image ToTensor, as tutorials load MNIST."""
    transform, dataset_cls = torchvision.transforms.ToTensor(), getattr(torchvision.datasets, DATASETS[dataset])
    return Textbook(*(dataset_cls(root, train=train, download=False, transform=transform) for train in (True, False)),
                    device)


def textbook_frey(train_x, test_x, device):
    """The frames as one float tensor in a TensorDataset, as tutorials load a .mat file."""
    sets = [TensorDataset(x.float() / 255, torch.zeros(len(x))) for x in (train_x, test_x)]
    return Textbook(*sets, device, TextbookVAE(FREY_INPUT, FREY_HIDDEN, FREY_LATENT, gaussian=True))


class Project:
    """This project's job, driven step by step: its batches, its step function, its evaluation."""

    def __init__(self, train_x, test_x, device, algorithm="aevb", frey=False):
        model = ModelConfig(hidden_size=FREY_HIDDEN, likelihood="gaussian") if frey else ModelConfig(hidden_size=HIDDEN)
        cfg = Config(latent_dim=FREY_LATENT if frey else LATENT, seed=0, device=device.type,
                     algorithm=AlgorithmConfig(algorithm), model=model, optimizer=OptimizerConfig(lr=LR))
        self.job = Job(cfg, Path(tempfile.mkdtemp()), data=(train_x, test_x))
    def train(self, samples):
        job = self.job
        for _ in range(samples // BATCH):
            job.step(*job.next_batch(), job.gen)
        sync(job.device)

    def evaluate(self):
        return [evaluate(self.job.model, x, 1, seed=1, binarize_dynamic=False)[0]
                for x in (self.job.train_x, self.job.test_x)]


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


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


def synthetic_root(root: Path) -> Path:
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 60_000), ("t10k", 10_000)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return root


def fig3_job(train_x, test_x, algorithm, hidden=FIG3_HIDDEN):
    cfg = Config(latent_dim=FIG3_LATENT, seed=0, device="cpu", algorithm=AlgorithmConfig(algorithm),
                 model=ModelConfig(hidden_size=hidden), data=DataConfig(train_size=min(FIG3_TRAIN, len(train_x))),
                 eval=EvalConfig(marginal="hmc"))
    return Job(cfg, Path(tempfile.mkdtemp()), data=(train_x, test_x))


def step_seconds(job, steps=300):
    for _ in range(20):
        job.step(*job.next_batch(), job.gen)
    return timed(lambda: [job.step(*job.next_batch(), job.gen) for _ in range(steps)])[0] / steps


def fig3_costs(train_x, test_x, rounds):
    """Seconds per training step of each algorithm in Figure 3's setup, Monte Carlo EM's step on
    a 2-pixel model with 1 hidden unit (what is left is Python and dispatch), and seconds per
    HMC marginal estimate of one split's first 1,000 images (on the CPU)."""
    jobs = {name: fig3_job(train_x, test_x, name) for name in ("aevb", "wake_sleep", "mcem")}
    tiny = torch.randint(0, 256, (FIG3_TRAIN, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    tiny_mcem = fig3_job(tiny, tiny[:100], "mcem", hidden=1)
    step_s = {name: min(step_seconds(job) for _ in range(rounds)) for name, job in jobs.items()}
    tiny_s = min(step_seconds(tiny_mcem) for _ in range(rounds))
    job = jobs["aevb"]
    marginal_s = min(timed(evaluate_marginal, job.marginal, job.model, job.test_x[:1000], 1, False)[0]
                     for _ in range(2))
    elbo_s = sum(timed(evaluate, job.model, x, 1, 1, False)[0] for x in (job.train_x, job.test_x))
    return step_s, tiny_s, marginal_s, elbo_s


def products_only(model, device):
    """A step of nothing but the matrix products of an AEVB step of `model`, on random operands:
    each layer's forward product and its weight gradient, and the gradient of its input for all
    but the first layer (whose input is the data)."""
    layers = [model.enc_hidden, model.enc_out, model.dec_hidden, model.dec_out]
    inputs = [torch.rand(BATCH, layer.in_features, device=device) for layer in layers]
    output_grads = [torch.rand(BATCH, layer.out_features, device=device) for layer in layers]

    def train(samples):
        with torch.no_grad():
            for _ in range(samples // BATCH):
                for i, (layer, layer_input, d_output) in enumerate(zip(layers, inputs, output_grads)):
                    torch.addmm(layer.bias, layer_input, layer.weight.t())
                    d_output.t().mm(layer_input)
                    if i > 0:
                        d_output.mm(layer.weight)
        sync(device)
    return train


def frey_speed(root: Path, device: torch.device, rounds: int, textbook_samples: int, project_samples: int):
    """Samples/s of the Frey setup's training step, of a textbook loop of the same model and of the
    step's matrix products alone, in turns."""
    try:
        train_x, test_x = load_frey_face(root, download=False)
    except DataError:
        print(f"no Frey Face file under {root}: using random frames")
        frames = torch.randint(0, 256, (1965, FREY_INPUT), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
        train_x, test_x = frames[:1600], frames[1600:]
    textbook, project = textbook_frey(train_x, test_x, device), Project(train_x, test_x, device, frey=True)
    products = products_only(project.job.model, device)
    textbook.train(2 * BATCH)  # warm-up
    project.train(10 * BATCH)
    products(10 * BATCH)
    tb_s, pr_s, products_s = math.inf, math.inf, math.inf
    for _ in range(rounds):
        tb_s = min(tb_s, timed(textbook.train, textbook_samples)[0])
        pr_s = min(pr_s, timed(project.train, project_samples)[0])
        products_s = min(products_s, timed(products, project_samples)[0])
    return textbook_samples / tb_s, project_samples / pr_s, project_samples / products_s


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--dataset", choices=list(DATASETS), default="mnist")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--textbook-samples", type=int, default=10_000, help="per round")
    parser.add_argument("--project-samples", type=int, default=30_000, help="per round, for each algorithm")
    parser.add_argument("--curve-samples", type=int, default=100_000, help="0 skips the side-by-side curve")
    args = parser.parse_args()
    try:
        device = resolve_device(args.device)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp:
        root, dataset = args.data_root.resolve(), args.dataset
        try:
            train_x, test_x = load_dataset(dataset, root, download=False)
        except DataError:
            root, dataset = synthetic_root(Path(tmp)), "mnist"
            print(f"no {args.dataset} files under {args.data_root}: using random full-size synthetic data")
            train_x, test_x = load_dataset(dataset, root, download=False)
        print(f"data: {dataset} under {root}; device: {device}; torch threads: {torch.get_num_threads()}")

        textbook, project = textbook_mnist(dataset, root, device), Project(train_x, test_x, device)
        wake_sleep = Project(train_x, test_x, device, "wake_sleep")
        textbook.train(2 * BATCH)  # warm-up
        project.train(10 * BATCH)
        wake_sleep.train(10 * BATCH)
        # Rounds taken in turn, best of each kept: this machine's speed drifts with its neighbours.
        gflops, tb_train_s, pr_train_s, ws_train_s = 0.0, math.inf, math.inf, math.inf
        window = args.project_samples // 3
        for _ in range(args.rounds):
            gflops = max(gflops, matmul_gflops(device))
            tb_train_s = min(tb_train_s, timed(textbook.train, args.textbook_samples)[0])
            for _ in range(3):  # short windows in turn, so that both steps meet the same neighbours
                pr_train_s = min(pr_train_s, timed(project.train, window)[0])
                ws_train_s = min(ws_train_s, timed(wake_sleep.train, window)[0])
        tb_eval_s, _ = timed(textbook.evaluate)
        pr_eval_s = min(timed(project.evaluate)[0] for _ in range(2))
        peak_rss, peak_private = job_peak_memory_mib(dataset, root) if device.type == "cpu" else (math.nan,) * 2
        frey_tb_rate, frey_pr_rate, frey_products_rate = frey_speed(args.data_root.resolve(), device, args.rounds,
                                                                    args.textbook_samples, args.project_samples)
        fig3_step_s, fig3_tiny_s, marginal_s, fig3_elbo_s = fig3_costs(train_x, test_x, args.rounds)

        tb_rate, pr_rate, ws_rate = args.textbook_samples / tb_train_s, window / pr_train_s, window / ws_train_s
        # End to end: training plus each loop's evaluation policy, per sample.
        tb_e2e = 1 / (1 / tb_rate + tb_eval_s / TEXTBOOK_EVAL_EVERY)
        n_evals = len(eval_schedule(10_000, 5, PAPER_SAMPLES, BATCH))
        pr_paper_s = PAPER_SAMPLES / pr_rate + n_evals * pr_eval_s
        pr_e2e = PAPER_SAMPLES / pr_paper_s
        flops_per_sample = 3 * 2 * (INPUT * HIDDEN + HIDDEN * 2 * LATENT + LATENT * HIDDEN + HIDDEN * INPUT)
        utilization = pr_rate * flops_per_sample / 1e9 / gflops

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
        print(f"project step:                       {pr_rate * flops_per_sample / 1e9:8.1f} GFLOP/s "
              f"({flops_per_sample / 1e6:.2f} MFLOP per sample)")
        print(f"FLOP utilization of the step:       {100 * utilization:6.1f} %")
        print(f"evaluation share of a 1e8 run:      {100 * n_evals * pr_eval_s / pr_paper_s:6.2f} %")
        print(f"paper-length run (1e8 samples):     {pr_paper_s / 3600:6.2f} h per model")
        print(f"peak memory of one job:             {peak_private:6.0f} MiB private, {peak_rss:.0f} MiB RSS "
              "with shared libraries")
        print(f"\nFrey Face setup (Gaussian decoder, H={FREY_HIDDEN}, N_z={FREY_LATENT}), training only:")
        print(f"{'textbook loop':34}{frey_tb_rate:12,.0f}")
        print(f"{'project step':34}{frey_pr_rate:12,.0f}   ({frey_pr_rate / frey_tb_rate:.2f}x the textbook loop)")
        print(f"{'its matrix products alone':34}{frey_products_rate:12,.0f}   ({frey_products_rate / frey_tb_rate:.2f}x "
              f"the textbook loop: the bound for an fp32 step; the project step is at "
              f"{100 * frey_pr_rate / frey_products_rate:.0f}% of it)")

        print(f"\nFigure 3 setup (N_z={FIG3_LATENT}, H={FIG3_HIDDEN}, {FIG3_TRAIN:,} training images), CPU:")
        for name, seconds in fig3_step_s.items():
            print(f"{name + ' step':34}{BATCH / seconds:12,.0f} samples/s   ({1e3 * seconds:.2f} ms per step)")
        print(f"{'mcem step, Python and dispatch':34}{1e3 * fig3_tiny_s:12.2f} ms per step "
              f"({100 * fig3_tiny_s / fig3_step_s['mcem']:.0f}% of the real step)")
        print(f"HMC marginal estimate, 1,000 images: {marginal_s:.2f} s per split "
              f"(ELBO of both splits: {fig3_elbo_s:.2f} s)")
        for run_samples in FIG3_RUN_SAMPLES:
            n_evals = len(eval_schedule(10_000, FIG3_EVALS_PER_DECADE, run_samples, BATCH))
            shares = []
            for name, seconds in fig3_step_s.items():
                eval_s = n_evals * (2 * marginal_s + (fig3_elbo_s if name != "mcem" else 0.0))
                total_s = run_samples / BATCH * seconds + eval_s
                shares.append(f"{name} {100 * n_evals * 2 * marginal_s / total_s:.1f}% of {total_s / 60:.0f} min")
            print(f"marginal estimates' wall share, {run_samples:.0e} samples ({n_evals} evaluations): "
                  + ", ".join(shares))

        if args.curve_samples:
            print(f"\nELBO after the same training (N_z={LATENT}, lr={LR}, batch {BATCH}), train / test:")
            textbook, project = textbook_mnist(dataset, root, device), Project(train_x, test_x, device)
            points = eval_schedule(10_000, 2, args.curve_samples, BATCH)
            seen = 0
            print(f"{'samples':>10}{'textbook':>22}{'project':>22}")
            for point in points:
                textbook.train(point - seen)
                project.train(point - seen)
                seen = point
                (tb_tr, tb_te), (pr_tr, pr_te) = textbook.evaluate(), project.evaluate()
                print(f"{point:>10,}{tb_tr:>11.2f}{tb_te:>11.2f}{pr_tr:>11.2f}{pr_te:>11.2f}")
    return 0 if math.isfinite(pr_rate) else 1


if __name__ == "__main__":
    sys.exit(main())
