"""The datasets as two tensors of images: MNIST and Fashion-MNIST read from their IDX files, Frey
Face from its .mat file with scipy, a user's own from an array or a folder (own_images.py).

The whole dataset is held as one [N, D] tensor, uint8 grey levels (47 MB for MNIST's 60k
training digits) or float32 in [0, 1], so that a batch is a row gather and a conversion, not
100 image decodes. torchvision downloads missing files into the layout it knows; it is
imported only then, since importing it takes over a second. `prepare_data` makes of them what
a job trains on: the training images it keeps, binarized or not, on its device.
"""
import contextlib
import functools
import gzip
import io
import math
import shutil
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from vae_repro.config import Config, ConfigError, DataError
from vae_repro.own_images import load_array, load_folder

# torchvision's dataset class, and the dir below data.root where it keeps the files, for each.
DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}
IMAGE_SHAPES = {"mnist": (28, 28), "fashion_mnist": (28, 28), "frey_face": (28, 20)}  # rows, columns
DATASET_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "frey_face": "Frey Face"}
# Sam Roweis' data page; the author's code splits the 1,965 frames into the first 1,600 and the rest.
FREY_URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
FREY_FRAMES, FREY_TRAIN = 1965, 1600
STATIC_BINARIZE_SEED = 1234  # one binarized dataset shared by all seeds and runs


class Images(NamedTuple):
    """A dataset: training and test images [N, D], uint8 grey levels 0..255 or float32 in [0, 1],
    and their shape as rows and columns (None for an [N, D] array given no data.image_shape)."""
    train: torch.Tensor
    test: torch.Tensor
    shape: tuple[int, int] | None


def raw_dir(name: str, root: str | Path) -> Path:
    """Where torchvision keeps the IDX files of `name` below `root`."""
    return Path(root) / DATASETS[name] / "raw"


def idx_files(name: str, root: str | Path) -> list[Path]:
    return [raw_dir(name, root) / f for f in IDX_FILES]


def check_idx_file(path: Path) -> None:
    """Fail with a clear message on a wrong magic number or a size that disagrees with the header."""
    kind = "images" if "images" in path.name else "labels"
    ndim = 3 if kind == "images" else 1
    with open(path, "rb") as f:
        head = f.read(4 * (ndim + 1))  # magic number, then one size per dimension
    if len(head) < 4 * (ndim + 1):
        raise DataError(f"{path}: truncated IDX file ({len(head)} bytes); delete it and provide it again")
    magic, *dims = struct.unpack(f">{ndim + 1}I", head)
    if magic != IDX_MAGIC[kind]:
        raise DataError(
            f"{path}: wrong IDX magic number {magic:#010x}, expected {IDX_MAGIC[kind]:#010x} for {kind}; "
            "delete it and provide it again"
        )
    expected = len(head) + math.prod(dims)
    size = path.stat().st_size
    if size != expected:
        raise DataError(
            f"{path}: {size} bytes, but its header describes {expected} (truncated or corrupt); "
            "delete it and provide it again"
        )
    if kind == "images" and dims[1:] != [28, 28]:
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28")


def write_idx(path: str | Path, array) -> None:
    """Write a uint8 array of images [N, 28, 28] or labels [N] as an IDX file (for tests and benchmarks)."""
    magic = IDX_MAGIC["images" if array.ndim == 3 else "labels"]
    with open(path, "wb") as f:
        f.write(struct.pack(f">{array.ndim + 1}I", magic, *array.shape))
        f.write(array.astype("uint8").tobytes())


def _gunzip_missing(files: list[Path]) -> None:
    """Accept the .gz files as published: unpack any that lack their plain twin."""
    for path in files:
        gz = path.with_name(path.name + ".gz")
        if not path.exists() and gz.exists():
            with gzip.open(gz, "rb") as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _download(name: str, root: Path) -> None:
    # torchvision prints each mirror it tries; keep the console to one line on failure.
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            import torchvision
            getattr(torchvision.datasets, DATASETS[name])(str(root), train=True, download=True)
    except Exception as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else type(e).__name__  # torchvision's last mirror error
        raise DataError(
            f"{name} is not under data.root={root} and downloading it failed ({reason}): "
            f"copy the four IDX files (or their .gz) into {raw_dir(name, root)}, or run once with network access"
        ) from None


def load_frey_face(root: str | Path, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The 1,965 frames of frey_rawface.mat as uint8 [N, 560] rows of 28 x 20 pixels, split
    1,600 / 365 in file order."""
    path = Path(root) / "FreyFace" / "frey_rawface.mat"
    if not path.exists():
        if not download:
            raise DataError(f"frey_face not found: {path} is missing and data.download=false: "
                            f"copy frey_rawface.mat there ({FREY_URL}) or set data.download=true")
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                import torchvision
                torchvision.datasets.utils.download_url(FREY_URL, str(path.parent), path.name)
        except Exception as e:
            raise DataError(f"frey_face is not under data.root={Path(root)} and downloading it failed "
                            f"({str(e).splitlines()[-1] if str(e) else type(e).__name__}): "
                            f"copy frey_rawface.mat from {FREY_URL} to {path}") from None
    import scipy.io  # here, not at the top: only Frey Face needs it, and it takes a while to import
    try:
        contents = scipy.io.loadmat(path)
    except Exception as e:
        raise DataError(f"{path}: not a readable .mat file ({e}); delete it and provide it again") from None
    if "ff" not in contents:
        names = ", ".join(sorted(k for k in contents if not k.startswith("__"))) or "none"
        raise DataError(f"{path}: no variable 'ff' in this .mat file (it has {names}); "
                        "expected Frey Face's frey_rawface.mat")
    frames = contents["ff"]
    expected = (math.prod(IMAGE_SHAPES["frey_face"]), FREY_FRAMES)
    if frames.dtype != np.uint8 or frames.shape != expected:
        raise DataError(f"{path}: 'ff' is {frames.dtype} of shape {frames.shape}, expected uint8 of shape {expected}")
    # Column i is frame i, its 560 bytes 28 rows of 20 pixels.
    frames = torch.from_numpy(np.ascontiguousarray(frames.T))
    return frames[:FREY_TRAIN], frames[FREY_TRAIN:]


def data_source(cfg: Config) -> tuple:
    """The arguments of `load_dataset` for the data `cfg` trains on."""
    data = cfg.data
    return (str(data.name), data.root, data.download, data.path, data.test_size,
            tuple(data.image_shape) if data.image_shape else None)


def dataset_title(name: str, root: str, path: str | None) -> str:
    """What figures call a dataset: its name, or the name of the user's own file or folder."""
    if name == "array":
        return Path(path).stem
    return Path(root).name if name == "folder" else DATASET_TITLES.get(name, name)


@functools.lru_cache(maxsize=2)  # the pre-check and the job of a command, and jobs one after the other, read once
def load_dataset(name: str, root: str | Path, download: bool, path: str | None = None, test_size: float = 0.1,
                 image_shape: tuple[int, int] | None = None) -> Images:
    """Training and test images, and their shape. Callers share them: they are not to be changed in place."""
    if name == "array":
        return Images(*load_array(Path(path).resolve(), test_size, image_shape))
    if name == "folder":
        return Images(*load_folder(Path(root).resolve(), test_size))
    if name == "frey_face":
        return Images(*load_frey_face(Path(root).resolve(), download), IMAGE_SHAPES[name])
    if name not in DATASETS:
        raise DataError(f"data.name={name}: unknown dataset, expected one of {', '.join(IMAGE_SHAPES)}, array, folder")
    root = Path(root).resolve()
    files = idx_files(name, root)
    _gunzip_missing(files)
    if not all(f.exists() for f in files):
        if not download:
            missing = ", ".join(f.name for f in files if not f.exists())
            raise DataError(
                f"{name} not found under data.root={root} (missing {missing} in {raw_dir(name, root)}) "
                "and data.download=false: copy the IDX files there or set data.download=true"
            )
        _download(name, root)
    for f in files:
        check_idx_file(f)
    train, test = (read_idx_images(raw_dir(name, root) / f"{split}-images-idx3-ubyte") for split in ("train", "t10k"))
    return Images(train, test, IMAGE_SHAPES[name])


def read_idx_images(path: Path) -> torch.Tensor:
    """The images of a checked IDX file as uint8 [N, rows x columns]."""
    with open(path, "rb") as f:
        n = struct.unpack(">2I", f.read(8))[1]
    return torch.from_numpy(np.fromfile(path, dtype=np.uint8, offset=16).reshape(n, -1))


def pixel_scale(images: torch.Tensor) -> int:
    """What the images' values are divided by to lie in [0, 1]."""
    return 255 if images.dtype == torch.uint8 else 1


def to_unit_interval(images: torch.Tensor) -> torch.Tensor:
    """Images as float32 in [0, 1], the Bernoulli means of p(x|z): a new tensor."""
    return torch.div(images, pixel_scale(images))


def prepare_data(cfg: Config, device: torch.device, data: Images | None) -> Images:
    """Training and test images on `device`: the first `data.train_size` training images if set,
    binarized once (as uint8 0 or 255) if `data.binarize=static`."""
    train_x, test_x, shape = data if data is not None else load_dataset(*data_source(cfg))
    train_x = select_train(cfg, train_x)
    if len(train_x) < cfg.train.batch_size:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size}: larger than the {len(train_x)} training images")
    if str(cfg.data.binarize) == "static":
        gen = torch.Generator().manual_seed(STATIC_BINARIZE_SEED)
        train_x, test_x = (torch.bernoulli(to_unit_interval(x), generator=gen).mul_(255).to(torch.uint8)
                           for x in (train_x, test_x))
    return Images(train_x.to(device), test_x.to(device), shape)


def select_train(cfg: Config, train_x: torch.Tensor) -> torch.Tensor:
    size = cfg.data.train_size
    if size is None:
        return train_x
    if size > len(train_x):
        raise ConfigError(f"data.train_size={size}: {cfg.data.name} has only {len(train_x)} training images")
    return train_x[:size]
