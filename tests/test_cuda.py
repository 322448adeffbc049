"""The CUDA path: the same passes, updates and jobs as on the CPU. Skipped where there is no CUDA device."""
import copy
import json

import pytest
import torch
from helpers import QUICK, rows_without_wall_time, run_cli

from vae_repro.config import (AlgorithmConfig, Binarize, Config, DataConfig, EvalConfig, ModelConfig, OptimizerConfig,
                              TrainConfig)
from vae_repro.likelihoods import GaussianPixels
from vae_repro.model import VAE
from vae_repro.optimizers import Optimizer
from vae_repro.train import train, train_stack

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]
CUDA = torch.device("cuda")


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.cpu().double() - expected.double()).norm() / expected.double().norm()).item()


def grads(model: VAE) -> dict:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("likelihood", [None, GaussianPixels(-10.0)], ids=["bernoulli", "gaussian"])
def test_hand_written_passes_on_cuda_equal_the_cpu_passes(likelihood):
    torch.manual_seed(0)
    cpu = VAE(784, 500, 20, init_std=0.05, likelihood=likelihood)
    gpu = copy.deepcopy(cpu).to(CUDA)
    x, eps, z = torch.rand(1, 100, 784), torch.randn(1, 1, 100, 20), torch.randn(1, 100, 20)
    passes = {"negative_elbo_backward": lambda m, dev: m.negative_elbo_backward(x.to(dev), eps.to(dev)),
              "wake_backward": lambda m, dev: m.wake_backward(x.to(dev), eps.to(dev)),
              "sleep_backward": lambda m, dev: m.sleep_backward(x.to(dev), z.to(dev)),
              "decoder_backward": lambda m, dev: m.decoder_backward(z.to(dev), x.to(dev)),
              "iwae_backward": lambda m, dev: m.iwae_backward(x.to(dev), eps.repeat(1, 5, 1, 1).to(dev))}
    for name, run_pass in passes.items():
        run_pass(cpu, "cpu")
        run_pass(gpu, CUDA)
        expected, got = grads(cpu), grads(gpu)
        assert got.keys() == expected.keys(), name
        for key in expected:
            assert relative_error(got[key], expected[key]) < 1e-4, (name, key)
    with torch.no_grad():
        log_px, kl = cpu(x, eps)
        log_px_gpu, kl_gpu = gpu(x.to(CUDA), eps.to(CUDA))
        log_joint, d_z = cpu.log_joint_and_grad(z, x)
        log_joint_gpu, d_z_gpu = gpu.log_joint_and_grad(z.to(CUDA), x.to(CUDA))
    for got, expected in ((log_px_gpu, log_px), (kl_gpu, kl), (log_joint_gpu, log_joint), (d_z_gpu, d_z)):
        assert relative_error(got, expected) < 1e-5


@pytest.mark.parametrize("optimizer", ["adagrad", "adam"])
def test_optimizer_on_cuda_updates_as_on_the_cpu(optimizer):
    torch.manual_seed(0)
    cpu = VAE(50, [30, 20], 4, init_std=0.1)
    gpu = copy.deepcopy(cpu).to(CUDA)
    updates = [Optimizer(model, [0.05], 0.01, OptimizerConfig(name=optimizer)).updater(list(model.parameters()))
               for model in (cpu, gpu)]
    x = torch.rand(1, 20, 50)
    for _ in range(5):
        eps = torch.randn(1, 1, 20, 4)
        for model, update, dev in zip((cpu, gpu), updates, ("cpu", CUDA)):
            model.negative_elbo_backward(x.to(dev), eps.to(dev))
            update()
    for (name, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        assert q.device.type == "cuda" and relative_error(q, p) < 1e-5, name


def cuda_config(data_root, algorithm: str, max_samples: int) -> Config:
    cfg = Config(device="cuda", algorithm=AlgorithmConfig(algorithm),
                 data=DataConfig(root=str(data_root), download=False),
                 train=TrainConfig(max_samples=max_samples, eval_start=1000, eval_points_per_decade=1,
                                   checkpoint_every=1000, progress=False))
    if algorithm == "mcem":  # Figure 3's small model, with the marginal likelihood that its rows record
        cfg.latent_dim, cfg.model = 3, ModelConfig(hidden_size=100)
        cfg.eval = EvalConfig(marginal="hmc", marginal_points=20, marginal_burn_in=5, marginal_samples=10)
    return cfg


@pytest.mark.parametrize("algorithm", ["aevb", "wake_sleep", "mcem", "iwae"])
def test_a_cuda_job_trains_and_resumes_to_the_bit(algorithm, data_root, tmp_path):
    """Straight to 1e4 samples, against to 1e3 then on to 1e4 from its checkpoint: the CUDA
    generator's state, the epoch's order and the optimizer's state all come back."""
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    summary = train(cuda_config(data_root, algorithm, 10_000), whole)
    train(cuda_config(data_root, algorithm, 1000), halves)
    train(cuda_config(data_root, algorithm, 10_000), halves)
    assert summary.status == "completed" and summary.device == "cuda"
    rows = rows_without_wall_time(whole)
    assert [int(r["samples"]) for r in rows] == [1000, 10_000]
    assert rows_without_wall_time(halves) == rows
    measured = "train_log_px_marginal" if algorithm == "mcem" else "train_elbo"
    assert float(rows[-1][measured]) > float(rows[0][measured])  # it learns
    weights = [torch.load(d / "model.pt", weights_only=True)["state_dict"] for d in (whole, halves)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


# Beyond the paper's model: two hidden layers with Adam and staged step sizes (each stage a new
# step size that the graph holds), and an objective trained by autograd.
DEEP = {"iwae_deep_adam": dict(algorithm="iwae", hidden_sizes=[64, 32], optimizer="adam"),
        "beta_vae_autograd": dict(algorithm="beta_vae", hidden_sizes=[64, 32], optimizer="adagrad")}


@pytest.mark.parametrize("algorithm", ["aevb", "wake_sleep", "mcem", "iwae", *DEEP])
def test_steps_replayed_in_a_cuda_graph_equal_eager_steps_to_the_bit(algorithm, data_root, tmp_path):
    """With a warm-up, whose end changes the step size that the graph holds, and dynamic
    binarization, whose batch is a new tensor at every step."""
    for graph in (True, False):
        cfg = cuda_config(data_root, DEEP.get(algorithm, {}).get("algorithm", algorithm), 3000)
        if algorithm in DEEP:
            cfg.model.hidden_sizes, cfg.optimizer.name = DEEP[algorithm]["hidden_sizes"], DEEP[algorithm]["optimizer"]
            cfg.optimizer.lr_stages = 3
        cfg.train.cuda_graph, cfg.optimizer.warmup_steps, cfg.data.binarize = graph, 5, Binarize.dynamic
        train(cfg, tmp_path / str(graph))
    assert rows_without_wall_time(tmp_path / "True") == rows_without_wall_time(tmp_path / "False")
    replayed, eager = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=True) for name in ("True", "False"))
    assert torch.equal(replayed["rng"]["loop"], eager["rng"]["loop"])  # the generator moved on as far
    for key, value in eager["model"].items():
        assert torch.equal(replayed["model"][key], value), key
    for i, state in eager["optimizer"]["state"].items():
        for key, value in state.items():  # the step count, and Adagrad's sum or Adam's moments
            assert torch.equal(replayed["optimizer"]["state"][i][key], value), (i, key)


def test_a_stack_replayed_in_a_cuda_graph_equals_its_eager_steps_to_the_bit(data_root, tmp_path):
    """Three models with their own generators, N_z padded and step sizes apart, in one graph."""
    for graph in (True, False):
        cfgs = []
        for latent_dim, seed, lr in ((3, 0, 0.02), (5, 1, 0.05), (5, 2, 0.02)):
            cfg = cuda_config(data_root, "wake_sleep", 3000)
            cfg.latent_dim, cfg.seed, cfg.optimizer.lr, cfg.train.cuda_graph = latent_dim, seed, lr, graph
            cfgs.append(cfg)
        summaries = train_stack(cfgs, [tmp_path / f"{graph}{k}" for k in range(3)])
        assert [s.status for s in summaries] == ["completed"] * 3
    for k in range(3):
        assert rows_without_wall_time(tmp_path / f"True{k}") == rows_without_wall_time(tmp_path / f"False{k}")


def test_the_command_line_trains_on_cuda_like_on_the_cpu(data_root, tmp_path):
    """Same settings, other noise streams (CUDA's generator is not the CPU's): curves within the
    spread between seeds."""
    quick = [a for a in QUICK if not a.startswith("device=")] + [f"data.root={data_root}", "train.max_samples=2e4"]
    final = {}
    for device, seed in (("cpu", 0), ("cpu", 1), ("cuda", 0)):
        run_dir = tmp_path / f"{device}{seed}"
        result = run_cli([*quick, f"device={device}", f"seed={seed}", f"hydra.run.dir={run_dir}"], tmp_path)
        assert result.returncode == 0, result.stderr
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["device"] == device and summary["status"] == "completed"
        final[device, seed] = summary["test_elbo"]
    seed_spread = abs(final["cpu", 0] - final["cpu", 1])
    assert abs(final["cuda", 0] - final["cpu", 0]) < 3 * seed_spread + 1.0, final


def test_a_cuda_checkpoint_resumed_on_a_cpu_says_so(data_root, tmp_path):
    quick = [a for a in QUICK if not a.startswith("device=")] + [f"data.root={data_root}", "device=auto",
                                                                  "hydra.run.dir=job"]
    assert run_cli([*quick, "train.max_samples=1000"], tmp_path).returncode == 0  # on CUDA
    result = run_cli([*quick, "train.max_samples=2000"], tmp_path, CUDA_VISIBLE_DEVICES="")  # the same, CPU only
    assert result.returncode == 1
    assert "checkpoint.pt: written by a job on cuda, and this job runs on cpu" in result.stderr
    assert "Traceback" not in result.stderr
