"""A user's own images: a .npy or .npz array (`data=array`), or a folder of image files
(`data=folder`), read into what every dataset becomes, two [N, D] tensors of grey levels:
uint8 0..255 or float32 in [0, 1].

Arrays load with allow_pickle=False, so a file can hold numbers only, never code to run. Image
files are read with Pillow (torchvision's own image library) and converted to grey as it does
(ITU-R 601-2 luma), in the natural order of their names (img2 before img10), so that a folder
and an array of the same images give the same dataset. Anything unfit is refused with one line
that names the file.
"""
import re
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vae_repro.config import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
Split = tuple[torch.Tensor, torch.Tensor, tuple[int, int] | None]  # train, test [N, D]; rows, columns


def load_array(path: str | Path, test_size: float, image_shape: tuple[int, int] | None) -> Split:
    """The images of a .npz (arrays `train` and `test`) or a .npy (one array, its last images the
    test set), [N, H, W] or [N, D] (then `image_shape` gives H and W, if known)."""
    path = Path(path)
    where = f"data.path={path}"
    if not path.is_file():
        raise DataError(f"{where}: no such file")
    try:
        contents = np.load(path, allow_pickle=False)
        if isinstance(contents, np.lib.npyio.NpzFile):
            with contents:
                arrays = _npz_splits(where, contents)  # each array is read here, and may be refused here
        else:
            arrays = split(_of_images(contents, where, "one"), test_size, where)
    except ValueError as e:
        raise _not_an_array(where, e) from None
    except OSError as e:
        raise DataError(f"{where}: not readable ({e})") from None
    train, test = (_as_images(a, where, name) for a, name in zip(arrays, ("train", "test")))
    return _checked(train, test, where, image_shape)


def _npz_splits(where: str, contents) -> tuple[np.ndarray, np.ndarray]:
    names = sorted(contents.files)
    if names != ["test", "train"]:
        raise DataError(f"{where}: a .npz file needs exactly the arrays 'train' and 'test'; it has "
                        f"{', '.join(repr(n) for n in names) or 'none'}")
    return contents["train"], contents["test"]


def _not_an_array(where: str, e: ValueError) -> DataError:
    if "Object arrays" in str(e):
        return DataError(f"{where}: holds an array of Python objects, which could run code when loaded, "
                         "not of numbers: save the images as a numeric array (np.save or np.savez)")
    if "pickled" in str(e):  # numpy takes any file without an array's header for a pickle
        return DataError(f"{where}: not a .npy or .npz array file")
    return DataError(f"{where}: not a readable .npy or .npz array file ({e})")


def split(images: np.ndarray, test_size: float, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The first images to train on and the last `test_size` (a fraction, or a count) to test on."""
    n_test = round(len(images) * test_size) if test_size < 1 else int(test_size)
    if not 0 < n_test < len(images):
        raise DataError(f"{where}: splitting {len(images)} images with data.test_size={test_size:g} leaves "
                        f"{'no test' if n_test < 1 else 'no training'} images (the split would be empty)")
    return images[:len(images) - n_test], images[len(images) - n_test:]


def _as_images(a: np.ndarray, where: str, name: str) -> np.ndarray:
    """uint8 as it is; bool as 0 or 255; whole numbers in 0..255 as uint8; other floats as float32."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() > 255):
            raise DataError(f"{where}: {name} values ({a.dtype}) from {a.min()} to {a.max()}: expected grey levels "
                            "0-255 (or floats in [0, 1])")
        return a.astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32)
    raise DataError(f"{where}: {name} values are {a.dtype}: expected grey levels as uint8 (0-255) or floats in [0, 1]")


def _of_images(a: np.ndarray, where: str, name: str) -> np.ndarray:
    if a.ndim not in (2, 3):
        colour = ("; colour images: convert them to grey first (data=folder does it for image files)"
                  if a.ndim == 4 and a.shape[-1] in (3, 4) else "")
        raise DataError(f"{where}: the {name} array has shape {list(a.shape)}: expected [N, rows, columns] "
                        f"or [N, pixels] of grey images{colour}")
    return a


def _checked(train: np.ndarray, test: np.ndarray, where: str, image_shape: tuple[int, int] | None) -> Split:
    """The two splits as [N, D] tensors of one dtype, and the images' shape, after the checks every
    dataset of one's own must pass."""
    shapes = []
    for name, a in (("train", train), ("test", test)):
        _of_images(a, where, name)
        if len(a) == 0 or a[0].size == 0:
            raise DataError(f"{where}: the {name} split is empty")
        if a.dtype == np.float32:
            finite = np.isfinite(a)
            if not finite.all():
                first = int(np.flatnonzero(~finite.reshape(len(a), -1).all(1))[0])
                raise DataError(f"{where}: {int((~finite).sum())} {name} values are NaN or infinite (the first in "
                                f"image {first})")
            if a.min() < 0 or a.max() > 1:
                raise DataError(f"{where}: {name} values from {a.min():g} to {a.max():g}: floats must lie in [0, 1] "
                                "(divide grey levels 0-255 by 255, or store them as uint8)")
        shapes.append(a.shape[1:])
    if shapes[0] != shapes[1]:
        raise DataError(f"{where}: train images are {'x'.join(map(str, shapes[0]))}, test images "
                        f"{'x'.join(map(str, shapes[1]))}: both splits need one size")
    shape = tuple(shapes[0]) if len(shapes[0]) == 2 else None
    if image_shape is not None:
        pixels = int(np.prod(shapes[0]))
        if image_shape[0] * image_shape[1] != pixels or shape not in (None, tuple(image_shape)):
            raise DataError(f"data.image_shape={list(image_shape)}: {image_shape[0] * image_shape[1]} pixels, but the "
                            f"images of {where} are {'x'.join(map(str, shapes[0]))} ({pixels} pixels)")
        shape = tuple(image_shape)
    if train.dtype != test.dtype:  # one uint8 split, one float: both as floats in [0, 1]
        train, test = (a.astype(np.float32) / 255 if a.dtype == np.uint8 else a for a in (train, test))
    train, test = (torch.from_numpy(np.ascontiguousarray(a).reshape(len(a), -1)) for a in (train, test))
    return train, test, shape


def load_folder(root: str | Path, test_size: float) -> Split:
    """The images in `root`, or in its train/ and test/ subfolders if it has both."""
    root = Path(root)
    where = f"data.root={root}"
    if not root.is_dir():
        raise DataError(f"{where}: no such folder (data=folder reads your images from it)")
    subfolders = [root / name for name in ("train", "test") if (root / name).is_dir()]
    if len(subfolders) == 2:
        train, test = (read_images(folder, f"{where}: {folder.name}/") for folder in subfolders)
    elif subfolders:
        raise DataError(f"{where}: has {subfolders[0].name}/ but no "
                        f"{'test' if subfolders[0].name == 'train' else 'train'}/: give both, or the images in "
                        "one folder, split as data.test_size says")
    else:
        train, test = split(read_images(root, where), test_size, where)
    return _checked(train, test, where, None)


def natural_key(path: Path) -> list:
    """img2.png before img10.png: runs of digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def read_images(folder: Path, where: str) -> np.ndarray:
    """The image files directly in `folder`, in the natural order of their names, as grey uint8
    [N, rows, columns]; `where` names the folder in errors."""
    from PIL import Image, UnidentifiedImageError  # here: only data=folder needs it

    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                    and not p.name.startswith(".")), key=natural_key)
    if not files:
        subfolders = sorted(p.name + "/" for p in folder.iterdir() if p.is_dir())
        holds = f", only folders ({', '.join(subfolders[:3])}{', ...' if len(subfolders) > 3 else ''})" \
            if subfolders else ""
        raise DataError(f"{where}: no images in this folder{holds} (data=folder reads the files ending in "
                        f"{', '.join(sorted(IMAGE_SUFFIXES))} in it, or in its train/ and test/)")
    images = []
    for path in tqdm(files, desc=f"reading {folder.name}/", unit="image", leave=False, disable=len(files) < 2000):
        try:
            with Image.open(path) as image:
                grey = np.asarray(image.convert("L"))
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise DataError(f"{path}: not a readable image ({e})") from None
        if images and grey.shape != images[0].shape:
            raise DataError(f"{path}: {grey.shape[0]}x{grey.shape[1]} (rows x columns), but {files[0].name} is "
                            f"{images[0].shape[0]}x{images[0].shape[1]}: all images need one size")
        images.append(grey)
    return np.stack(images)
