"""Figures 4 and 5 of Kingma & Welling (2013) from a finished run: random samples, or the learned manifold.

    python scripts/plot_samples.py RUN_DIR [--out FILE] [--grid N] [--seed S] [--shape ROWS COLS]  # Figure 5
    python scripts/plot_samples.py RUN_DIR --manifold [--out FILE] [--grid N]   # Figure 4: N_z = 2 only

Samples are the decoder's means (Bernoulli probabilities or Gaussian means) at z ~ N(0, I).
The manifold is the decoder's means at linearly spaced coordinates on the unit square pushed
through the inverse CDF of the Gaussian, as the paper's caption says. Images keep their
shape (28x28 for MNIST, 28x20 for Frey Face, your own images' as the run's summary.json
records it; --shape for an [N, pixels] array trained without data.image_shape), grey,
without axes. The PNG goes to FILE, by
default samples.png or manifold.png in RUN_DIR.
"""
import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from vae_repro.checkpoint import CheckpointError, load_run  # noqa: E402
from vae_repro.data import IMAGE_SHAPES, dataset_title  # noqa: E402
from vae_repro.plotting import PlotError  # noqa: E402


def manifold_codes(grid: int) -> torch.Tensor:
    """[grid * grid, 2] codes: the cell centres of a grid on the unit square through the Gaussian inverse
    CDF, row by row from the top, so that z_2 grows upwards and z_1 to the right."""
    u = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    z1, z2 = torch.meshgrid(torch.special.ndtri(u), torch.special.ndtri(u).flip(0), indexing="xy")
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1).float()


def tile(images: torch.Tensor, grid: int, shape: tuple[int, int]) -> torch.Tensor:
    """[grid * grid, rows * cols] images as one [grid * rows, grid * cols] picture."""
    rows, cols = shape
    return images.reshape(grid, grid, rows, cols).permute(0, 2, 1, 3).reshape(grid * rows, grid * cols)


def image_shape(run_dir: Path, dataset: str) -> tuple[int, int] | None:
    """The shape of the run's images: as its summary.json records it, else its dataset's."""
    try:
        shape = json.loads((run_dir / "summary.json").read_text()).get("image_shape")
    except (OSError, ValueError):
        shape = None
    return tuple(shape) if shape else IMAGE_SHAPES.get(dataset)


def draw(run_dir: Path, manifold: bool, grid: int, seed: int, shape: tuple[int, int] | None = None) -> plt.Figure:
    if not (run_dir / "model.pt").exists():
        raise PlotError(f"{run_dir}: no model.pt here (not a run dir, or the run has not finished)")
    cfg, model = load_run(run_dir)
    if manifold and cfg.latent_dim != 2:
        raise PlotError(f"--manifold needs a run with N_z = 2; {run_dir} has N_z = {cfg.latent_dim}")
    z = manifold_codes(grid) if manifold else torch.randn(grid * grid, cfg.latent_dim,
                                                          generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        means = model.decode_mean(z[None])[0]  # the run's model is a stack of one
    shape = shape or image_shape(run_dir, str(cfg.data.name))
    pixels = means.shape[-1]
    if shape is None:
        raise PlotError(f"{run_dir}: its images are rows of {pixels} pixels with no shape recorded (an [N, pixels] "
                        "array trained without data.image_shape): give it as --shape ROWS COLS")
    if shape[0] * shape[1] != pixels:
        raise PlotError(f"--shape {shape[0]} {shape[1]}: {shape[0] * shape[1]} pixels, but the images of {run_dir} "
                        f"have {pixels}")
    picture = tile(means, grid, shape)
    fig, ax = plt.subplots(figsize=(picture.shape[1] / 60 + 0.4, picture.shape[0] / 60 + 0.6))
    ax.imshow(picture.numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    what = "learned manifold" if manifold else "random samples"
    title = dataset_title(str(cfg.data.name), cfg.data.root, cfg.data.path)
    ax.set_title(f"{title}, {what}, $N_z$ = {cfg.latent_dim}", fontsize="small")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run's dir (holding model.pt)")
    parser.add_argument("--manifold", action="store_true", help="Figure 4, for N_z = 2, instead of samples")
    parser.add_argument("--out", type=Path, help="PNG to write; default samples.png or manifold.png in RUN_DIR")
    parser.add_argument("--grid", type=int, default=None, help="images per side (default 10; 20 for --manifold)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random samples")
    parser.add_argument("--shape", type=int, nargs=2, metavar=("ROWS", "COLS"),
                        help="the images' shape, where the run does not record it")
    parser.add_argument("--dpi", type=int, default=150, help="resolution of the PNG (default 150)")
    args = parser.parse_args(argv)
    grid = args.grid or (20 if args.manifold else 10)
    if grid < 1:
        parser.error("--grid must be at least 1")
    try:
        fig = draw(args.run_dir, args.manifold, grid, args.seed, args.shape)
    except (PlotError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or args.run_dir / ("manifold.png" if args.manifold else "samples.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=args.dpi)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
