"""A user's own images: a .npy or .npz array (data=array), a folder of image files (data=folder).
The same images give the same results whichever way they come; anything unfit is refused in
one line before anything is written."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import QUICK, REPO, assert_one_line, rows_without_wall_time, run_cli, synthetic_digits
from PIL import Image

from vae_repro.config import Config, DataConfig, ModelConfig, TrainConfig
from vae_repro.data import load_dataset
from vae_repro.train import train

sys.path.insert(0, str(REPO / "scripts"))
import plot_fig2  # noqa: E402


def digits() -> tuple[np.ndarray, np.ndarray]:
    """The synthetic IDX digits of helpers.py, as uint8 [N, 28, 28]: 300 to train, 100 to test."""
    return synthetic_digits(300, 0)[0].astype(np.uint8), synthetic_digits(100, 1)[0].astype(np.uint8)


def write_folder(folder, images, prefix="img"):
    folder.mkdir(parents=True)
    for i, image in enumerate(images):  # unpadded numbers: img2 comes before img10 all the same
        Image.fromarray(image).save(folder / f"{prefix}{i}.png")


def quick_run(data: DataConfig, out) -> list[dict]:
    cfg = Config(device="cpu", latent_dim=3, data=data, model=ModelConfig(hidden_size=50),
                 train=TrainConfig(max_samples=2000, eval_start=500, eval_points_per_decade=2, progress=False))
    train(cfg, out)
    return rows_without_wall_time(out)


def test_an_array_a_folder_and_idx_files_of_the_same_images_give_the_same_results(data_root, tmp_path):
    train_images, test_images = digits()
    np.savez(tmp_path / "digits.npz", train=train_images, test=test_images)
    np.savez(tmp_path / "floats.npz", train=train_images.astype(np.float32) / 255,
             test=test_images.astype(np.float32) / 255)
    np.save(tmp_path / "digits.npy", np.concatenate([train_images, test_images]).reshape(400, 784))
    write_folder(tmp_path / "folder" / "train", train_images)
    write_folder(tmp_path / "folder" / "test", test_images)

    reference = quick_run(DataConfig(root=str(data_root), download=False), tmp_path / "idx")
    sources = {"npz": DataConfig(name="array", path=str(tmp_path / "digits.npz")),
               "floats": DataConfig(name="array", path=str(tmp_path / "floats.npz")),
               "npy": DataConfig(name="array", path=str(tmp_path / "digits.npy"), test_size=100, image_shape=[28, 28]),
               "folder": DataConfig(name="folder", root=str(tmp_path / "folder"))}
    for name, data in sources.items():
        assert quick_run(data, tmp_path / name) == reference, name
    folder = load_dataset("folder", str(tmp_path / "folder"), False)
    assert folder.shape == (28, 28) and folder.train.dtype == torch.uint8
    assert torch.equal(folder.train, torch.from_numpy(train_images.reshape(300, 784)))
    assert load_dataset("array", "", False, str(tmp_path / "floats.npz")).train.dtype == torch.float32


def test_one_folder_of_colour_images_is_read_in_name_order_as_grey_and_split(tmp_path):
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (12, 6, 5, 3), dtype=np.uint8)
    (tmp_path / "faces").mkdir()
    for i, image in enumerate(colour):
        Image.fromarray(image).save(tmp_path / "faces" / f"face{i}.png")
    (tmp_path / "faces" / "notes.txt").write_text("not an image")
    images = load_dataset("folder", str(tmp_path / "faces"), False, test_size=0.25)
    grey = np.stack([np.asarray(Image.fromarray(image).convert("L")) for image in colour]).reshape(12, 30)
    assert images.shape == (6, 5)
    assert torch.equal(images.train, torch.from_numpy(grey[:9]))
    assert torch.equal(images.test, torch.from_numpy(grey[9:]))


@pytest.fixture
def bad_data(tmp_path):
    """The files each bad-data case names, below tmp_path."""
    train_images, test_images = digits()
    floats = train_images.astype(np.float32) / 255
    with_nan = floats.copy()
    with_nan[7, 3, 3] = np.nan
    np.savez(tmp_path / "nan.npz", train=with_nan, test=floats[:10])
    np.savez(tmp_path / "range.npz", train=floats * 2 - 0.5, test=floats[:10])
    np.savez(tmp_path / "empty.npz", train=train_images, test=test_images[:0])
    np.savez(tmp_path / "sizes.npz", train=train_images, test=test_images[:, :20])
    np.savez(tmp_path / "names.npz", x_train=train_images, x_test=test_images)
    np.savez(tmp_path / "colour.npz", train=np.stack([train_images] * 3, -1), test=np.stack([test_images] * 3, -1))
    np.savez(tmp_path / "ints.npz", train=train_images.astype(np.int64) * 2, test=test_images)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(tmp_path / "small.npy", train_images[:5])
    np.save(tmp_path / "scalar.npy", np.float32(0.5))
    (tmp_path / "text.npy").write_text("these are not images\n")
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "readme.txt").write_text("nothing here")
    write_folder(tmp_path / "sizes", [train_images[0], train_images[1], train_images[2, :20]])
    write_folder(tmp_path / "half" / "train", train_images[:3])
    return tmp_path


@pytest.mark.parametrize("args, facts", [
    (["data=array"], ("data.path",)),
    (["data=array", "data.path=missing.npz"], ("missing.npz", "no such file")),
    (["data=array", "data.path=nan.npz"], ("nan.npz", "1 train values are NaN or infinite", "image 7")),
    (["data=array", "data.path=range.npz"], ("range.npz", "from -0.5 to 1.5", "[0, 1]", "divide grey levels")),
    (["data=array", "data.path=empty.npz"], ("empty.npz", "test split is empty")),
    (["data=array", "data.path=sizes.npz"], ("sizes.npz", "train images are 28x28, test images 20x28")),
    (["data=array", "data.path=names.npz"], ("names.npz", "'train' and 'test'", "'x_test', 'x_train'")),
    (["data=array", "data.path=ints.npz"], ("ints.npz", "train values (int64) from 0 to 510", "0-255")),
    (["data=array", "data.path=colour.npz"], ("data.path=", "colour.npz", "[300, 28, 28, 3]", "convert them to grey")),
    (["data.path=digits.npz"], ("data.path=digits.npz", "data=array only", "add data=array")),
    (["data=array", "data.path=objects.npy"], ("objects.npy", "Python objects", "numeric array")),
    (["data=array", "data.path=text.npy"], ("text.npy", "not a .npy or .npz array file")),
    (["data=array", "data.path=scalar.npy"], ("scalar.npy", "shape []", "[N, rows, columns]")),
    (["data=array", "data.path=small.npy", "data.test_size=0.01"], ("small.npy", "5 images", "no test images")),
    (["data=array", "data.path=small.npy", "data.test_size=2", "data.image_shape=[28,20]"],
     ("data.image_shape=[28, 20]", "560 pixels", "28x28 (784 pixels)")),
    (["data=array", "data.path=small.npy", "data.test_size=1.5"], ("data.test_size=1.5", "whole number")),
    (["data=folder"], ("data.root",)),
    (["data=folder", "data.root=no_images"], ("data.root=", "no_images", "no images in this folder", ".png")),
    (["data=folder", "data.root=missing"], ("data.root=", "missing", "no such folder")),
    (["data=folder", "data.root=."], ("data.root=", "no images in this folder, only folders (half/, no_images/, ")),
    (["data=folder", "data.root=sizes"], ("img2.png", "20x28", "img0.png is 28x28")),
    (["data=folder", "data.root=half"], ("half", "has train/ but no test/")),
])
def test_unfit_data_is_refused_in_one_line_and_nothing_is_written(main_cli, bad_data, args, facts):
    status, out, err = main_cli([*args, *QUICK], bad_data)
    assert status == 2
    assert_one_line(err, *facts)
    assert not (bad_data / "outputs").exists()


def test_an_array_of_python_objects_is_never_unpickled(tmp_path):
    marker = tmp_path / "ran"
    np.save(tmp_path / "trap.npy", np.array([Trap(str(marker))], dtype=object), allow_pickle=True)
    with pytest.raises(Exception, match="Python objects"):
        load_dataset("array", "", False, str(tmp_path / "trap.npy"))
    assert not marker.exists()


class Trap:
    """Unpickled, it would write a file: the code a loaded pickle can run."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.slow
def test_own_non_square_images_through_a_stacked_sweep_the_pictures_and_figure_2(tmp_path):
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:12, 0:9]
    images = [((np.sin(rows / 3 + i / 40) + np.cos(cols / 2 - i / 30)) * 50 + 120 + rng.integers(0, 20, (12, 9)))
              .astype(np.uint8) for i in range(400)]
    write_folder(tmp_path / "faces", images, prefix="frame")
    result = run_cli(["-m", "hydra/launcher=stack", "data=folder", "data.root=faces", "latent_dim=2,3",
                      "model.likelihood=gaussian", "model.hidden_size=20", "model.decoder_logvar_min=-10",
                      "hydra.sweep.dir=sweep", *QUICK], tmp_path)
    assert result.returncode == 0, result.stderr
    for job in ("0", "1"):
        summary = json.loads((tmp_path / "sweep" / job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["stack"] == 2
        assert summary["image_shape"] == [12, 9] and summary["n_train"] == 360
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "plot_samples.py"), str(tmp_path / "sweep" / "0"),
                             "--manifold", "--grid", "5", "--dpi", "100"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    manifold = plt_image_size(tmp_path / "sweep" / "0" / "manifold.png")
    assert manifold[0] / manifold[1] == pytest.approx((5 * 9 / 60 + 0.4) / (5 * 12 / 60 + 0.6))  # width / height
    fig = plot_fig2.plot(plot_fig2.read_runs([tmp_path / "sweep"]))
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["faces, $N_z$ = 2", "faces, $N_z$ = 3"]


def plt_image_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size
