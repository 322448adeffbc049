"""A stack of models trained as one: each model's passes, files and results as if alone.

How close "as if alone" is: a model whose N_z is the stack's largest, or a stack of seeds and
step sizes at one N_z, gives its solo run's results to the bit (each model's slice of a batched
product is the product it would compute alone, and every other operation is elementwise or
per model). A model padded to a larger N_z differs by the rounding of its sums over the padded
axis, whose zeros may be added in another order (a few units in the last place per step, which
IWAE's importance weights, exponentials of such sums, amplify most); the tests allow 1e-4
relative, or 1e-3 nats, after a short run.
"""
import json

import pytest
import torch
from helpers import metrics_rows, rows_without_wall_time

from vae_repro.checkpoint import load_run
from vae_repro.config import Config, DataConfig, EvalConfig, TrainConfig
from vae_repro.likelihoods import GaussianPixels
from vae_repro.model import VAE
from vae_repro.noise import Noise
from vae_repro.own_tensors import own_state_dict, own_tensor
from vae_repro.stacks import plan_stacks
from vae_repro.train import Job, train, train_stack

LATENT_DIMS, SEEDS = [2, 4, 4], [0, 1, 2]


def stack_and_solos(likelihood=None):
    stack = VAE(12, 7, LATENT_DIMS, init_std=0.5, likelihood=likelihood, seeds=SEEDS).double()
    solos = [VAE(12, 7, units, init_std=0.5, likelihood=likelihood, seeds=[seed]).double()
             for units, seed in zip(LATENT_DIMS, SEEDS)]
    return stack, solos


def padded(tensors: list[torch.Tensor], width: int) -> torch.Tensor:
    return torch.stack([torch.nn.functional.pad(t, (0, width - t.shape[-1])) for t in tensors])


def assert_grads_as_alone(stack, solos, names):
    for k, solo in enumerate(solos):
        for name in names:
            grad = stack.get_parameter(name).grad
            assert torch.allclose(own_tensor(stack, name, grad, k), solo.get_parameter(name).grad[0], rtol=1e-12,
                                  atol=1e-14), (k, name)
    padding = torch.ones(max(LATENT_DIMS), dtype=torch.bool)
    padding[:LATENT_DIMS[0]] = False  # model 0's padded units: no gradient reaches them
    if "dec_hidden.weight" in names:
        assert (stack.dec_hidden.weight.grad[0][:, padding] == 0).all()
    if "enc_out.weight" in names:
        assert (stack.enc_out.weight.grad[0][padding.repeat(2)] == 0).all()


@pytest.mark.parametrize("likelihood", [None, GaussianPixels()], ids=["bernoulli", "gaussian"])
def test_a_stack_computes_each_models_passes_as_alone(likelihood):
    stack, solos = stack_and_solos(likelihood)
    for k, solo in enumerate(solos):  # the same initial weights as alone, from the same seed
        assert all(torch.equal(own_state_dict(stack, k)[n], v) for n, v in own_state_dict(solo, 0).items())
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(3, 6, 12, generator=gen, dtype=torch.float64)
    eps = [torch.randn(1, 2, 6, units, generator=gen, dtype=torch.float64) for units in LATENT_DIMS]
    z = [torch.randn(1, 6, units, generator=gen, dtype=torch.float64) for units in LATENT_DIMS]
    width = max(LATENT_DIMS)
    names = [n for n, _ in stack.named_parameters()]

    stack.negative_elbo_backward(x, padded([e[0] for e in eps], width))
    for k, solo in enumerate(solos):
        solo.negative_elbo_backward(x[k:k + 1], eps[k])
    assert_grads_as_alone(stack, solos, names)

    stack.iwae_backward(x, padded([e[0] for e in eps], width))  # k = 2 importance samples
    for k, solo in enumerate(solos):
        solo.iwae_backward(x[k:k + 1], eps[k])
    assert_grads_as_alone(stack, solos, names)

    stack.wake_backward(x, padded([e[0] for e in eps], width))
    for k, solo in enumerate(solos):
        solo.wake_backward(x[k:k + 1], eps[k])
    assert_grads_as_alone(stack, solos, [n for n in names if n.startswith("dec")])

    stack.sleep_backward(x, padded([t[0] for t in z], width))  # the padding must not train the encoder
    for k, solo in enumerate(solos):
        solo.sleep_backward(x[k:k + 1], z[k])
    assert_grads_as_alone(stack, solos, [n for n in names if n.startswith("enc")])

    log_joint, grad = stack.log_joint_and_grad(padded([t[0] for t in z], width), x)
    for k, solo in enumerate(solos):
        alone, alone_grad = solo.log_joint_and_grad(z[k], x[k:k + 1])
        assert torch.allclose(log_joint[k], alone[0], rtol=1e-12)
        assert torch.allclose(grad[k, :, :LATENT_DIMS[k]], alone_grad[0], rtol=1e-12)
        assert (grad[k, :, LATENT_DIMS[k]:] == 0).all()


def test_noise_draws_each_models_own_stream_and_pads_with_zeros():
    noise = Noise.seeded([3, 4], [2, 5])
    draws = noise.latent(6)
    assert draws.shape == (2, 6, 5) and (draws[0, :, 2:] == 0).all()
    assert torch.equal(draws[0, :, :2], torch.randn(6, 2, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(draws[1], torch.randn(6, 5, generator=torch.Generator().manual_seed(4)))


def quick_config(data_root, latent_dim, seed, lr=0.02, **train_settings) -> Config:
    settings = {"max_samples": 3000, "eval_start": 1000, "eval_points_per_decade": 2, "progress": False,
                "checkpoint_every": 1000, **train_settings}
    cfg = Config(device="cpu", latent_dim=latent_dim, seed=seed, data=DataConfig(root=str(data_root), download=False),
                 train=TrainConfig(**settings))
    cfg.model.hidden_size, cfg.optimizer.lr = 50, lr
    return cfg


def assert_rows_close(got: list[dict], expected: list[dict], exact: bool):
    assert [r["samples"] for r in got] == [r["samples"] for r in expected]
    for a, b in zip(got, expected):
        for column, value in b.items():
            assert (a[column] == value) if exact else float(a[column]) == pytest.approx(float(value), rel=1e-4, abs=1e-3), column


@pytest.mark.parametrize("algorithm", ["aevb", "wake_sleep", "iwae", "iwae_deep_adam", "beta_vae_deep"])
def test_stacked_models_end_where_their_solo_runs_end(data_root, tmp_path, algorithm):
    settings = [(2, 0, 0.02), (5, 1, 0.05), (5, 2, 0.02)]  # N_z, seed, step size
    cfgs = [quick_config(data_root, *s) for s in settings]
    for cfg in cfgs:
        cfg.algorithm.name, cfg.eval.iwae_k = algorithm.split("_deep")[0], [3]
        if "_deep" in algorithm:  # two hidden layers; Adam at a tenth of the step sizes
            cfg.model.hidden_sizes = [40, 30]
        if algorithm.endswith("adam"):
            cfg.optimizer.name, cfg.optimizer.eps, cfg.optimizer.lr = "adam", 1e-4, cfg.optimizer.lr / 10
    dirs = [tmp_path / f"stack{k}" for k in range(3)]
    summaries = train_stack(cfgs, dirs)
    assert [s.status for s in summaries] == ["completed"] * 3 and {s.stack for s in summaries} == {3}
    for k, cfg in enumerate(cfgs):
        solo = tmp_path / f"solo{k}"
        train(cfg, solo)
        assert_rows_close(rows_without_wall_time(dirs[k]), rows_without_wall_time(solo), exact=cfg.latent_dim == 5)
        loaded_cfg, model = load_run(dirs[k])  # a single model's files, with its own config
        assert loaded_cfg == cfg and model.latent_dims == [cfg.latent_dim]
        assert json.loads((dirs[k] / "summary.json").read_text())["lr"] == cfg.optimizer.lr
    # A run of one of them alone (any launcher) takes up its checkpoint: complete already.
    assert "already complete" in train(cfgs[0], dirs[0]).message


def test_stacked_monte_carlo_em_keeps_each_models_chains(data_root, tmp_path):
    """Each model's z per training image and HMC step size are its own, as alone."""
    cfgs = [quick_config(data_root, 3, seed) for seed in (0, 1)]
    for cfg in cfgs:
        cfg.algorithm.name, cfg.model.hidden_size = "mcem", 20
        cfg.eval = EvalConfig(marginal="hmc", marginal_points=20, marginal_burn_in=3, marginal_samples=4)
    train_stack(cfgs, [tmp_path / "0", tmp_path / "1"])
    for k, cfg in enumerate(cfgs):
        train(cfg, tmp_path / f"solo{k}")
        assert rows_without_wall_time(tmp_path / str(k)) == rows_without_wall_time(tmp_path / f"solo{k}")
        stacked, alone = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)["algorithm_state"]
                          for d in (str(k), f"solo{k}"))
        assert all(torch.equal(stacked[key], alone[key]) for key in alone)


def test_a_model_that_diverges_leaves_the_stack_and_the_others_go_on(data_root, tmp_path):
    cfgs = [quick_config(data_root, 3, 0), quick_config(data_root, 3, 1, lr=100.0), quick_config(data_root, 3, 2)]
    dirs = [tmp_path / str(k) for k in range(3)]
    summaries = train_stack(cfgs, dirs)
    assert [s.status for s in summaries] == ["completed", "diverged", "completed"]
    assert "optimizer.lr=100.0" in summaries[1].message and not (dirs[1] / "model.pt").exists()
    assert json.loads((dirs[1] / "summary.json").read_text())["status"] == "diverged"
    train(cfgs[2], tmp_path / "solo")
    assert rows_without_wall_time(dirs[2]) == rows_without_wall_time(tmp_path / "solo")


def test_a_stack_that_died_resumes_to_the_bit(data_root, tmp_path, monkeypatch):
    # Evaluations at 1000, 1800 and 3000 samples, checkpoints at 1000 and 2000.
    cfgs = [quick_config(data_root, 2, 0, eval_points_per_decade=4), quick_config(data_root, 4, 1, lr=0.05,
                                                                                  eval_points_per_decade=4)]
    reference = [tmp_path / f"ref{k}" for k in range(2)]
    train_stack(cfgs, reference)
    train_steps = Job.train_steps

    def dies_at_1900_samples(job, n, stop):  # past the evaluation at 1800, before the checkpoint at 2000
        if job.progress.samples >= 1900:
            raise KeyboardInterrupt  # stands for SIGKILL: nothing written after the last checkpoint
        return train_steps(job, n, stop)

    dirs = [tmp_path / str(k) for k in range(2)]
    monkeypatch.setattr(Job, "train_steps", dies_at_1900_samples)
    with pytest.raises(KeyboardInterrupt):
        train_stack(cfgs, dirs)
    assert len(metrics_rows(dirs[0])) == 2  # evaluations at 1000 and 1800; the checkpoint vouches for one
    monkeypatch.setattr(Job, "train_steps", train_steps)
    train_stack(cfgs, dirs)
    for done, ref in zip(dirs, reference):
        assert rows_without_wall_time(done) == rows_without_wall_time(ref)
        assert (done / "model.pt").read_bytes() == (ref / "model.pt").read_bytes()


def test_plan_groups_what_stacks_and_keeps_padding_small():
    def cfg(latent_dim, seed=0, algorithm="aevb", hidden=500):
        c = Config(latent_dim=latent_dim, seed=seed)
        c.algorithm.name, c.model.hidden_size = algorithm, hidden
        return c
    cfgs = [cfg(3), cfg(200), cfg(5, 1), cfg(20), cfg(3, algorithm="wake_sleep"), cfg(10, hidden=100), cfg(10)]
    plan = plan_stacks(cfgs, [0] * 7, [784] * 7, max_models=16, max_padding=0.25)
    assert plan == [[0, 2, 6, 3], [1], [4], [5]]  # N_z 200 beside N_z 3 would cost the latter a third more
    assert plan_stacks(cfgs, [0] * 7, [784] * 7, max_models=2, max_padding=0.25) == [[0, 2], [1], [6, 3], [4], [5]]
    resumed = plan_stacks(cfgs[:3], [1000, 0, 0], [784] * 3, max_models=16, max_padding=0.25)
    assert resumed == [[0], [1], [2]]  # models at other points train apart
