"""Frey Face: the .mat loader and its errors, the Gaussian decoder end to end, the prior's scale."""
import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import torch
from helpers import QUICK, REPO, make_frey_root, make_mnist_root, metrics_rows, run_cli

from vae_repro.config import AlgorithmConfig, Config, DataConfig, ModelConfig, TrainConfig
from vae_repro.data import DataError, Images, load_dataset
from vae_repro.train import Diverged, train


def test_frames_are_read_as_rows_of_28_by_20_and_split_1600_365(tmp_path):
    frames = np.arange(560 * 1965, dtype=np.int64).reshape(1965, 560).T % 251  # frame i in column i
    make_frey_root(tmp_path, frames.astype(np.uint8))
    train_x, test_x, shape = load_dataset("frey_face", tmp_path, download=False)
    assert train_x.dtype == torch.uint8 and train_x.shape == (1600, 560) and test_x.shape == (365, 560)
    assert shape == (28, 20)
    assert torch.equal(train_x[7], torch.from_numpy(frames[:, 7].astype(np.uint8)))
    assert torch.equal(test_x[0], torch.from_numpy(frames[:, 1600].astype(np.uint8)))


def write_mat(tmp_path, contents):
    (tmp_path / "FreyFace").mkdir(parents=True)
    path = tmp_path / "FreyFace" / "frey_rawface.mat"
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    else:
        scipy.io.savemat(path, contents)
    return path


@pytest.mark.parametrize("contents,message", [
    (b"this is not a mat file", "not a readable .mat file"),
    ({"faces": np.zeros((560, 1965), np.uint8)}, "no variable 'ff' in this .mat file (it has faces)"),
    ({"ff": np.zeros((560, 100), np.uint8)}, "'ff' is uint8 of shape (560, 100), expected uint8 of shape (560, 1965)"),
    ({"ff": np.zeros((560, 1965), np.float64)}, "'ff' is float64 of shape (560, 1965), expected uint8"),
], ids=["not-mat", "no-ff", "shape", "dtype"])
def test_bad_mat_files_are_named_with_what_is_wrong(contents, message, tmp_path):
    path = write_mat(tmp_path, contents)
    with pytest.raises(DataError, match=str(path)) as error:
        load_dataset("frey_face", tmp_path, download=False)
    assert message in str(error.value)


@pytest.mark.slow
def test_cli_bad_or_missing_file_gives_one_line_and_writes_nothing(tmp_path):
    result = run_cli(["data=frey_face", "data.root=nowhere", "data.download=false", *QUICK], tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"{tmp_path / 'nowhere' / 'FreyFace' / 'frey_rawface.mat'} is missing" in result.stderr
    write_mat(tmp_path / "bad", {"ff": np.zeros((560, 10), np.uint8)})
    result = run_cli(["data=frey_face", "data.root=bad", *QUICK], tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "'ff' is uint8 of shape (560, 10)" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_offline_download_names_the_file_and_the_url(tmp_path):
    offline = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    result = run_cli(["data=frey_face", "data.root=empty", *QUICK], tmp_path, **offline)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "frey_face is not under data.root=" in result.stderr and "downloading it failed" in result.stderr
    assert "https://cs.nyu.edu/~roweis/data/frey_rawface.mat" in result.stderr


@pytest.mark.slow
def test_cli_trains_the_gaussian_frey_model_for_two_latent_sizes(frey_root, tmp_path):
    result = run_cli(["-m", "data=frey_face", "latent_dim=2,5", f"data.root={frey_root}", *QUICK,
                      "hydra.sweep.dir=sweep"], tmp_path)
    assert result.returncode == 0, result.stderr
    for num, latent_dim in ((0, 2), (1, 5)):
        job = tmp_path / "sweep" / str(num)
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["latent_dim"] == latent_dim
        assert summary["weight_decay"] == pytest.approx(1 / 1600)  # the prior over 1,600 training frames
        rows = metrics_rows(job)
        first, last = (float(r["train_elbo"]) for r in (rows[0], rows[-1]))
        assert last > first and last > 0  # a density on [0, 1]: the ELBO climbs into positive nats
        config = (job / ".hydra" / "config.yaml").read_text()
        assert "likelihood: gaussian" in config and "hidden_size: 200" in config


def test_weight_prior_follows_the_training_set_and_its_std(data_root, tmp_path):
    settings = dict(max_samples=300, eval_start=300, progress=False)
    cfg = Config(device="cpu", data=DataConfig(root=str(data_root), download=False), train=TrainConfig(**settings))
    assert train(cfg, tmp_path / "a").weight_decay == pytest.approx(1 / 300)  # 300 synthetic digits
    cfg.optimizer.prior_std = 0.5
    assert train(cfg, tmp_path / "b").weight_decay == pytest.approx(1 / (0.25 * 300))
    cfg.optimizer.weight_decay = 0.0
    assert train(cfg, tmp_path / "c").weight_decay == 0.0


def test_wake_sleep_trains_the_gaussian_decoder(frey_root, tmp_path):
    cfg = Config(device="cpu", latent_dim=2, algorithm=AlgorithmConfig("wake_sleep"),
                 model=ModelConfig(hidden_size=50, likelihood="gaussian"),
                 data=DataConfig(name="frey_face", root=str(frey_root), download=False),
                 train=TrainConfig(max_samples=20_000, eval_start=1000, eval_points_per_decade=2, progress=False))
    summary = train(cfg, tmp_path)
    rows = metrics_rows(tmp_path)
    assert summary.status == "completed" and float(rows[-1]["train_elbo"]) > float(rows[0]["train_elbo"])


@pytest.mark.slow
def test_run_fig2_draws_the_mnist_and_the_frey_face_rows_in_one_command(tmp_path):
    root = make_frey_root(make_mnist_root(tmp_path / "data"))
    result = subprocess.run(["bash", str(REPO / "scripts" / "run_fig2.sh"), "fig2", "algorithm=aevb", "latent_dim=2",
                             f"data.root={root}", *QUICK], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    for row in ("mnist", "frey_face"):
        assert json.loads((tmp_path / "fig2" / row / "0" / "summary.json").read_text())["status"] == "completed"
    sys.path.insert(0, str(REPO / "scripts"))
    import plot_fig2
    fig = plot_fig2.plot(plot_fig2.read_runs([tmp_path / "fig2"]))
    assert [ax.get_title() for ax in fig.axes] == ["MNIST, $N_z$ = 2", "Frey Face, $N_z$ = 2"]
    assert fig.axes[1].get_ylim()[0] <= 0 and fig.axes[1].get_ylim()[1] >= 1600  # the paper's Frey range
    assert (tmp_path / "fig2" / "fig2.png").exists()


@pytest.mark.slow
def test_gaussian_decoder_on_constant_pixels_diverges_with_a_remedy_and_the_floor_holds(tmp_path):
    rng = np.random.default_rng(0)
    images = np.zeros((300, 784), np.uint8)  # borders always 0, as MNIST's
    images[:, 300:480] = rng.integers(0, 256, (300, 180))
    data = Images(torch.from_numpy(images), torch.from_numpy(images[:100]), (28, 28))
    cfg = Config(device="cpu", model=ModelConfig(likelihood="gaussian"),
                 train=TrainConfig(max_samples=200_000, eval_start=200_000, progress=False))
    with pytest.raises(Diverged, match=r"model\.decoder_logvar_min=-10"):
        train(cfg, tmp_path / "collapse", data=data)
    cfg.model.decoder_logvar_min = -10.0
    assert train(cfg, tmp_path / "floored", data=data).status == "completed"
