"""Figures 4 and 5 from finished runs: random samples, and the manifold of an N_z = 2 model."""
import subprocess
import sys

import pytest
import torch
from helpers import REPO, assert_one_line
from PIL import Image

from vae_repro.config import Config, DataConfig, ModelConfig, TrainConfig
from vae_repro.train import train

SCRIPT = [sys.executable, str(REPO / "scripts" / "plot_samples.py")]
sys.path.insert(0, str(REPO / "scripts"))
import plot_samples  # noqa: E402


def finished_run(tmp_path, root, latent_dim, dataset="mnist", likelihood="bernoulli"):
    cfg = Config(device="cpu", latent_dim=latent_dim, model=ModelConfig(hidden_size=50, likelihood=likelihood),
                 data=DataConfig(name=dataset, root=str(root), download=False),
                 train=TrainConfig(max_samples=2000, eval_start=2000, progress=False))
    out = tmp_path / f"{dataset}_{latent_dim}"
    train(cfg, out)
    return out


def plot(*args):
    return subprocess.run([*SCRIPT, *map(str, args)], capture_output=True, text=True)


@pytest.mark.slow
def test_both_pictures_of_an_n_z_2_run(data_root, tmp_path):
    run = finished_run(tmp_path, data_root, latent_dim=2)
    result = plot(run, "--grid", 4)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {run / 'samples.png'}"
    result = plot(run, "--manifold", "--out", tmp_path / "fig4.png")
    assert result.returncode == 0, result.stderr
    for path in (run / "samples.png", tmp_path / "fig4.png"):
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100

    fig = plot_samples.draw(run, manifold=True, grid=20, seed=0)
    assert fig.axes[0].get_title() == "MNIST, learned manifold, $N_z$ = 2" and not fig.axes[0].axison
    assert fig.axes[0].get_images()[0].get_array().shape == (20 * 28, 20 * 28)


def test_frey_face_samples_keep_their_28_by_20_shape(frey_root, tmp_path):
    run = finished_run(tmp_path, frey_root, latent_dim=5, dataset="frey_face", likelihood="gaussian")
    fig = plot_samples.draw(run, manifold=False, grid=3, seed=0)
    assert fig.axes[0].get_images()[0].get_array().shape == (3 * 28, 3 * 20)
    assert fig.axes[0].get_title() == "Frey Face, random samples, $N_z$ = 5"


def test_manifold_codes_cover_the_gaussian_quantiles():
    codes = plot_samples.manifold_codes(4)
    assert codes.shape == (16, 2)
    assert torch.allclose(codes[:4, 0], torch.special.ndtri(torch.tensor([0.125, 0.375, 0.625, 0.875])))
    assert (codes[:4, 1] > 0).all() and (codes[-4:, 1] < 0).all()  # z_2 grows upwards


@pytest.mark.slow
def test_errors_are_one_line(data_root, tmp_path):
    run = finished_run(tmp_path, data_root, latent_dim=5)
    result = plot(run, "--manifold")
    assert result.returncode == 2
    assert_one_line(result.stderr, "--manifold", "N_z = 2", str(run), "N_z = 5")
    result = plot(tmp_path)
    assert result.returncode == 2
    assert_one_line(result.stderr, str(tmp_path), "no model.pt")


def test_active_units_of_finished_runs_are_listed_one_line_each(tmp_path, data_root, capsys):
    import active_units
    runs = [finished_run(tmp_path, data_root, latent_dim) for latent_dim in (2, 5)]
    assert active_units.main([str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["run", "algorithm", "N_z", "active"]
    for line, run, latent_dim in zip(lines[1:], runs, (2, 5)):
        name, algorithm, units, active = line.split()
        assert (name, algorithm, int(units)) == (str(run), "aevb", latent_dim) and 0 <= int(active) <= latent_dim
    assert active_units.main([str(tmp_path / "nothing")]) == 2
    assert "no model.pt below" in capsys.readouterr().err
