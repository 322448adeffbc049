"""The active latent units of finished runs: the units j whose encoder mean varies across the
test images, Cov_x(E_q[z_j]) > 0.01, the measure of Burda, Grosse and Salakhutdinov (2015).

    python scripts/active_units.py RUN_DIR [RUN_DIR ...] [--threshold 0.01]

One line per run (a dir holding model.pt; sweep dirs are searched below): its dir, algorithm,
N_z and active units, on the test split of its own data.
"""
import argparse
import sys
from pathlib import Path

from vae_repro.checkpoint import CheckpointError, load_run
from vae_repro.data import DataError, data_source, load_dataset
from vae_repro.metrics import active_units


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep dirs")
    parser.add_argument("--threshold", type=float, default=0.01, help="the variance that makes a unit active")
    args = parser.parse_args(argv)
    runs = sorted({path.parent for d in args.dirs for path in d.rglob("model.pt")})
    if not runs:
        print(f"error: no model.pt below {', '.join(map(str, args.dirs))} (no finished run)", file=sys.stderr)
        return 2
    print(f"{'run':50}{'algorithm':>12}{'N_z':>6}{'active':>8}")
    for run in runs:
        try:
            cfg, model = load_run(run)
            cfg.data.download = False
            test_x = load_dataset(*data_source(cfg)).test
        except (CheckpointError, DataError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        active = active_units(model, test_x, args.threshold)[0]
        print(f"{str(run):50}{str(cfg.algorithm.name):>12}{cfg.latent_dim:>6}{active:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
