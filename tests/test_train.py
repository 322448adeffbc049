import json

import pytest
import torch
from helpers import metrics_rows, rows_without_wall_time

from vae_repro.checkpoint import load_run
from vae_repro.config import Config, DataConfig, EvalConfig, OptimizerConfig, TrainConfig
from vae_repro.data import load_dataset, select_train, to_unit_interval
from vae_repro.losses import by_autograd, negative_elbo
from vae_repro.metrics import active_units
from vae_repro.model import VAE, build_model
from vae_repro.own_tensors import own_state_dict
from vae_repro.schedule import Events
from vae_repro.train import Diverged, Job, train

COLUMNS = ["samples", "train_elbo", "train_log_px", "train_kl", "test_elbo", "test_log_px", "test_kl", "wall_s"]


def quick_config(data_root, **train_settings) -> Config:
    settings = {"max_samples": 30_000, "eval_start": 1000, "eval_points_per_decade": 2, "progress": False,
                **train_settings}
    return Config(device="cpu", data=DataConfig(root=str(data_root), download=False),
                  train=TrainConfig(**settings))


def test_a_few_hundred_steps_raise_the_elbo(data_root, tmp_path):
    summary = train(quick_config(data_root), tmp_path)  # 300 steps of 100 on 300 synthetic digits
    rows = metrics_rows(tmp_path)
    assert list(rows[0]) == COLUMNS
    samples = [int(r["samples"]) for r in rows]
    assert samples == sorted(set(samples)) and samples[0] == 1000 and samples[-1] == 30_000
    first, last = rows[0], rows[-1]
    assert float(last["train_elbo"]) > float(first["train_elbo"]) + 20
    assert float(last["test_elbo"]) > float(first["test_elbo"]) + 20
    for r in rows:  # ELBO = E[log p(x|z)] - KL, both splits
        for split in ("train", "test"):
            assert float(r[f"{split}_elbo"]) == pytest.approx(float(r[f"{split}_log_px"]) - float(r[f"{split}_kl"]))
    assert summary.status == "completed" and summary.samples == 30_000
    assert summary.bounds["test_elbo"] == float(last["test_elbo"])
    assert json.loads((tmp_path / "summary.json").read_text()) == summary.as_json()


def test_load_run_gives_back_config_and_trained_model(data_root, tmp_path):
    cfg = quick_config(data_root, max_samples=2000)
    train(cfg, tmp_path)
    loaded_cfg, model = load_run(tmp_path)
    assert loaded_cfg == cfg
    saved = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in own_state_dict(model, 0).items())
    assert saved["dec_hidden.weight"].shape == (500, cfg.latent_dim)  # a single model's file
    test_x = load_dataset("mnist", data_root, download=False).test
    log_px, kl = model(to_unit_interval(test_x[:5])[None], torch.zeros(1, 1, 5, cfg.latent_dim))
    assert log_px.shape == kl.shape == (1, 5)


def test_same_seed_same_curve_and_other_seed_other_curve(data_root, tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = quick_config(data_root, max_samples=3000)
        cfg.seed = seed
        train(cfg, tmp_path / name)
        runs[name] = [(r["samples"], r["train_elbo"], r["test_elbo"]) for r in metrics_rows(tmp_path / name)]
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


@pytest.mark.parametrize("binarize", ["dynamic", "static"])
def test_binarized_data_trains(data_root, tmp_path, binarize):
    cfg = quick_config(data_root, max_samples=3000)
    cfg.data.binarize = binarize
    assert train(cfg, tmp_path).status == "completed"
    rows = metrics_rows(tmp_path)
    assert float(rows[-1]["test_elbo"]) > float(rows[0]["test_elbo"])


def test_divergence_stops_with_a_message_and_a_recorded_status(data_root, tmp_path):
    cfg = quick_config(data_root)
    cfg.optimizer.lr = 100.0
    with pytest.raises(Diverged, match=r"the weights became NaN or infinite by step \d+ .*optimizer\.lr=100\.0"):
        train(cfg, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and "optimizer.lr=100.0" in summary["message"]
    assert not (tmp_path / "model.pt").exists()


def test_wake_sleep_raises_the_elbo_and_says_so_in_its_summary(data_root, tmp_path):
    cfg = quick_config(data_root)
    cfg.algorithm.name = "wake_sleep"
    summary = train(cfg, tmp_path)
    rows = metrics_rows(tmp_path)
    assert list(rows[0]) == COLUMNS
    assert float(rows[-1]["train_elbo"]) > float(rows[0]["train_elbo"]) + 20
    assert float(rows[-1]["test_elbo"]) > float(rows[0]["test_elbo"]) + 20
    assert summary.status == "completed" and summary.algorithm == "wake_sleep"
    loaded_cfg, model = load_run(tmp_path)
    assert str(loaded_cfg.algorithm.name) == "wake_sleep"


@pytest.mark.slow
def test_mcem_raises_the_marginal_likelihood_and_logs_no_elbo(data_root, tmp_path):
    cfg = quick_config(data_root)
    cfg.algorithm.name = "mcem"
    cfg.eval = EvalConfig(marginal="hmc", marginal_points=50, marginal_burn_in=50, marginal_samples=20)
    summary = train(cfg, tmp_path)
    rows = metrics_rows(tmp_path)
    assert list(rows[0]) == COLUMNS[:-1] + ["train_log_px_marginal", "test_log_px_marginal", "wall_s"]
    assert all(r[c] == "" for r in rows for c in ("train_elbo", "test_elbo", "train_kl"))
    for split in ("train", "test"):
        assert float(rows[-1][f"{split}_log_px_marginal"]) > float(rows[0][f"{split}_log_px_marginal"]) + 10
    assert summary.status == "completed" and "train_elbo" not in summary.bounds
    assert summary.bounds["train_log_px_marginal"] == float(rows[-1]["train_log_px_marginal"])


def test_train_size_keeps_the_first_images_and_scales_the_prior(data_root, tmp_path):
    cfg = quick_config(data_root, max_samples=1000)
    cfg.data.train_size = 200
    summary = train(cfg, tmp_path)
    assert summary.weight_decay == pytest.approx(1 / 200)
    full = load_dataset("mnist", data_root, download=False)[0]
    assert torch.equal(select_train(cfg, full), full[:200])


def test_algorithms_differ_from_the_same_start(data_root, tmp_path):
    curves = {}
    for name in ("aevb", "wake_sleep"):
        cfg = quick_config(data_root, max_samples=3000)
        cfg.algorithm.name = name
        train(cfg, tmp_path / name)
        curves[name] = [r["train_elbo"] for r in metrics_rows(tmp_path / name)]
    assert len(curves["aevb"]) == len(curves["wake_sleep"]) and curves["aevb"] != curves["wake_sleep"]


def test_warmup_steps_only_fill_the_accumulator(data_root, tmp_path):
    cfg = quick_config(data_root, max_samples=500, eval_start=500)
    cfg.optimizer.warmup_steps = 5
    train(cfg, tmp_path / "warmup")
    initial = own_state_dict(build_model([cfg], 784), 0)
    checkpoint = torch.load(tmp_path / "warmup" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(checkpoint["model"][k], initial[k]) for k in initial)  # five steps of size 0
    assert all((state["sum"] > 0).any() for state in checkpoint["optimizer"]["state"].values())
    cfg.train.max_samples = 600  # one step more: the first real update
    train(cfg, tmp_path / "warmup")
    _, model = load_run(tmp_path / "warmup")
    assert not torch.equal(model.enc_hidden.weight[0], initial["enc_hidden.weight"])


@pytest.mark.slow
def test_compiled_passes_train_the_same_model_to_rounding(data_root, tmp_path):
    eager, compiled = quick_config(data_root, max_samples=2000), quick_config(data_root, max_samples=2000)
    eager.model.hidden_size = compiled.model.hidden_size = 50
    compiled.train.compile = True
    for cfg, name in ((eager, "eager"), (compiled, "compiled")):
        train(cfg, tmp_path / name)
    rows = {name: metrics_rows(tmp_path / name) for name in ("eager", "compiled")}
    assert len(rows["eager"]) == len(rows["compiled"])
    for a, b in zip(rows["eager"], rows["compiled"]):
        assert float(b["test_elbo"]) == pytest.approx(float(a["test_elbo"]), abs=0.01)


def weights(job_dir):
    return torch.load(job_dir / "model.pt", weights_only=True)["state_dict"]


def test_a_run_that_died_resumes_to_the_bit(data_root, tmp_path, monkeypatch):
    """A job that dies between checkpoints (an error here, as a SIGKILL would) and is run again ends with
    the rows and weights of a job that never stopped."""
    cfg = quick_config(data_root, max_samples=3000, eval_start=500, checkpoint_every=1000)
    train(cfg, tmp_path / "whole")
    train_steps = Job.train_steps

    def dies_at_1600_samples(job, n, stop):  # after the evaluation there, between two checkpoints
        if job.progress.samples >= 1600:
            raise RuntimeError("killed")
        return train_steps(job, n, stop)
    monkeypatch.setattr(Job, "train_steps", dies_at_1600_samples)
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, tmp_path / "halves")
    monkeypatch.undo()
    assert train(cfg, tmp_path / "halves").status == "completed"
    assert rows_without_wall_time(tmp_path / "halves") == rows_without_wall_time(tmp_path / "whole")
    assert all(torch.equal(a, b) for a, b in zip(weights(tmp_path / "halves").values(),
                                                 weights(tmp_path / "whole").values()))


def test_a_completed_run_run_again_says_so_and_trains_nothing(data_root, tmp_path):
    cfg = quick_config(data_root, max_samples=2000)
    train(cfg, tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in ("metrics.csv", "model.pt", "checkpoint.pt")}
    summary = train(cfg, tmp_path)
    assert summary.status == "completed" and summary.samples == 2000
    assert "already complete at 2000 samples" in summary.message and "trained nothing" in summary.message
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


def test_a_step_size_that_wrecks_the_run_without_a_nan_is_flagged(data_root, tmp_path):
    """At optimizer.lr=0.1 Adagrad's first full-size steps blow up the encoder's variances: the ELBO falls
    far below an untrained model's (about -543 here, every pixel at p = 0.5), yet stays finite."""
    wrecked = quick_config(data_root, max_samples=2000, eval_start=500)
    wrecked.optimizer.lr = 0.1
    summary = train(wrecked, tmp_path / "wrecked")
    assert summary.status == "completed"
    assert "optimizer.lr=0.1" in summary.warning and "untrained model's (-543." in summary.warning
    assert json.loads((tmp_path / "wrecked" / "summary.json").read_text())["warning"] == summary.warning
    assert train(quick_config(data_root, max_samples=2000, eval_start=500), tmp_path / "fine").warning is None


@pytest.mark.parametrize("algorithm", ["aevb", "iwae"])
def test_results_do_not_depend_on_the_thread_count(data_root, tmp_path, algorithm):
    """MKL's strict reproducible mode (vae_repro/__init__.py) gives the same products on any thread count,
    so a job's threads may follow the machine's load."""
    most = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            cfg = quick_config(data_root, max_samples=2000)
            cfg.threads, cfg.algorithm.name = threads, algorithm  # fixed: the job keeps the count set here
            train(cfg, tmp_path / str(threads))
    finally:
        torch.set_num_threads(most)
    assert rows_without_wall_time(tmp_path / "1") == rows_without_wall_time(tmp_path / "2")
    assert all(torch.equal(a, b) for a, b in zip(weights(tmp_path / "1").values(), weights(tmp_path / "2").values()))


def test_iwae_bounds_are_written_beside_the_elbo_and_tighten_with_k(data_root, tmp_path):
    cfg = quick_config(data_root, max_samples=3000)
    cfg.eval.iwae_k = [1, 5, 50]
    summary = train(cfg, tmp_path)
    rows = metrics_rows(tmp_path)
    assert list(rows[0]) == COLUMNS[:-1] + ["train_iwae1", "test_iwae1", "train_iwae5", "test_iwae5", "train_iwae50",
                                            "test_iwae50", "wall_s"]
    for row in rows:
        for split in ("train", "test"):
            elbo, bounds = float(row[f"{split}_elbo"]), [float(row[f"{split}_iwae{k}"]) for k in (1, 5, 50)]
            assert bounds[0] == pytest.approx(elbo, abs=1.0)  # one sample: the ELBO, its KL sampled
            assert elbo < bounds[1] < bounds[2]
    assert summary.bounds["test_iwae50"] == float(rows[-1]["test_iwae50"])


def test_iwae_with_one_sample_is_aevb_and_with_five_trains(data_root, tmp_path):
    runs = {}
    for name, algorithm, k in (("aevb", "aevb", 5), ("iwae1", "iwae", 1), ("iwae5", "iwae", 5)):
        cfg = quick_config(data_root, max_samples=3000)
        cfg.algorithm.name, cfg.algorithm.k, cfg.eval.iwae_k = algorithm, k, [5]
        assert train(cfg, tmp_path / name).status == "completed"
        runs[name] = rows_without_wall_time(tmp_path / name)
    assert runs["iwae1"] == runs["aevb"]  # the ELBO's own step, with its KL in closed form
    assert runs["iwae5"] != runs["aevb"]
    assert float(runs["iwae5"][-1]["test_iwae5"]) > float(runs["iwae5"][0]["test_iwae5"]) + 10


def test_active_units_count_the_latent_units_whose_mean_varies_across_images():
    model = VAE(input_dim=4, hidden_sizes=3, latent_dims=[3, 2], init_std=0.0)
    with torch.no_grad():
        model.enc_hidden.weight[:, 0, 0] = 1.0  # hidden unit 0 follows pixel 0
        model.enc_out.weight[0, 1, 0] = 2.0  # model 0: the mean of unit 1 follows it
        model.enc_out.weight[1, 0, 0] = 0.01  # model 1: unit 0 barely moves
    images = torch.tensor([[0, 0, 0, 0], [255, 0, 0, 0]] * 50, dtype=torch.uint8)
    assert active_units(model, images) == [1, 0]
    assert active_units(model, images, threshold=1e-6) == [1, 1]


def test_the_autograd_path_trains_the_paper_model_along_the_hand_written_curve(data_root, tmp_path):
    """AEVB on the paper's model: in fp32 the two paths' gradients differ by rounding (a few 1e-7 of
    each tensor's largest entry), and 300 steps later their curves by under 0.1%. Adagrad's first
    steps, g / sqrt(g^2), take the sign of every entry of the gradient, which turns the rounding of
    entries near zero into whole steps; from there the two runs train the same way."""
    torch.manual_seed(0)
    model, x, eps = VAE(784, 500, 20), torch.rand(1, 100, 784).round(), torch.randn(1, 1, 100, 20)
    model.negative_elbo_backward(x, eps)
    hand_written = [p.grad.clone() for p in model.parameters()]
    by_autograd(model, negative_elbo, list(model.parameters()))(x, eps)
    for p, grad in zip(model.parameters(), hand_written):
        assert (p.grad - grad).abs().max() < 1e-5 * grad.abs().max()

    curves = {}
    for gradients in ("handwritten", "autograd"):
        cfg = quick_config(data_root, gradients=gradients)
        cfg.model.hidden_size = 100
        train(cfg, tmp_path / gradients)
        curves[gradients] = [(float(r["train_elbo"]), float(r["test_elbo"])) for r in metrics_rows(tmp_path / gradients)]
    assert len(curves["autograd"]) == len(curves["handwritten"]) == 4
    for ours, theirs in zip(curves["handwritten"], curves["autograd"]):
        assert ours == pytest.approx(theirs, rel=1e-3)
    assert curves["handwritten"] != curves["autograd"]  # two computations, not one


def test_a_deep_model_with_adam_logs_its_active_units(data_root, tmp_path):
    cfg = quick_config(data_root, max_samples=3000)
    cfg.latent_dim, cfg.model.hidden_sizes, cfg.eval.active_units = 8, [60, 40], True
    cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.eps = "adam", 1e-3, 1e-4
    summary = train(cfg, tmp_path)
    rows = metrics_rows(tmp_path)
    assert {"train_active_units", "test_active_units"} <= set(rows[0])
    assert all(0 <= int(r["test_active_units"]) <= 8 for r in rows)
    _, model = load_run(tmp_path)
    assert [tuple(p.shape) for p in model.weights()] == [(1, 60, 784), (1, 40, 60), (1, 16, 40), (1, 40, 8),
                                                          (1, 60, 40), (1, 784, 60)]
    optimizer = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["optimizer"]
    assert {"exp_avg", "exp_avg_sq", "step"} == set(optimizer["state"][0])
    assert optimizer["state"][0]["step"].item() == summary.samples // 100


def test_the_staged_step_sizes_follow_the_iwae_paper():
    cfg = Config(train=TrainConfig(batch_size=100), optimizer=OptimizerConfig(lr_stages=3, warmup_steps=2))
    events = Events.of(cfg, n_train=1050)  # 10 steps per pass: stage 0 lasts 1 pass, stage 1 three
    assert events.stage_starts == [10, 40]
    factors = [events.step_size_factor(step) for step in (0, 1, 2, 9, 10, 39, 40, 10_000)]
    assert factors == [0.0, 0.0, 1.0, 1.0, 10 ** (-1 / 7), 10 ** (-1 / 7), 10 ** (-2 / 7), 10 ** (-2 / 7)]
    assert events.step_size_changes.points == [2, 10, 40]
