"""Command-line entry point: python -m vae_repro.run [KEY=VALUE ...] [-m].

A thin Hydra wrapper around `vae_repro.train.train`. Before Hydra creates any output dir,
every job of the command is composed and checked (types, ranges, device, data files), so a
bad value ends with one line on stderr and exit status 2 instead of a traceback or a
half-made sweep. Jobs that diverge or are interrupted are listed at the end, exit status 1.
"""
import json
import logging
import os
import sys
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # its sweep expansion, reused as is
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vae_repro.config import Config, ConfigError, check_config
from vae_repro.data import DataError, load_dataset
from vae_repro.train import Diverged, resolve_device, select_train, train

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
ConfigStore.instance().store(name="config_schema", node=Config)
log = logging.getLogger(__name__)
# How many jobs of this command share the machine at once: set by `main` for the jobs it starts,
# which inherit the environment whichever local launcher runs them.
JOBS_AT_ONCE = "VAE_REPRO_JOBS_AT_ONCE"


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def jobs_at_once(launcher: DictConfig, n_jobs: int) -> int:
    """How many of the command's `n_jobs` jobs its launcher runs at the same time on this machine."""
    target = str(launcher.get("_target_"))
    if target.endswith("JoblibLauncher"):
        n = launcher.get("n_jobs") or -1  # joblib's convention: -1 all cores, -2 all but one, ...
        return min(n_jobs, n if n > 0 else max(1, available_cores() + 1 + n))
    if target.endswith("submitit_launcher.LocalLauncher"):
        return n_jobs  # submitit starts every job at once
    return 1  # the basic launcher runs one after the other; SLURM gives each job its own cores


def _one_line(e: Exception) -> str:
    cause = e.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        return f"{cause.full_key}: {cause.msg.splitlines()[0]}"
    return " ".join(str(e).split("Config search path")[0].split())


def _jobs(overrides: list[str], multirun: bool) -> tuple[list[list[str]], DictConfig]:
    """The override list of every job the command would launch, as Hydra's basic sweeper
    expands them, and the command's Hydra config."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    hydra_cfg = compose("config", overrides=plain, return_hydra_config=True).hydra
    if not multirun:
        return [overrides], hydra_cfg
    swept = {o.get_key_element(): o for o in parsed}
    config_params = hydra_cfg.sweeper.get("params") or {}
    from_config = parser.parse_overrides([f"{k}={v}" for k, v in config_params.items() if k not in swept])
    return BasicSweeper.split_arguments(from_config + list(swept.values()), None)[0], hydra_cfg


def precheck(argv: list[str]) -> int:
    """Compose and check every job of the command; raise on the first bad one. Returns how many
    jobs will run at once."""
    flags = [a for a in argv if a.startswith("-")]
    if any(f not in ("-m", "--multirun") for f in flags):
        return 1  # --help, --cfg, -cn ...: Hydra's own options, left to Hydra
    overrides = [a for a in argv if not a.startswith("-")]
    cfgs: list[Config] = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="precheck"):
        jobs, hydra_cfg = _jobs(overrides, multirun=bool(flags))
        for job in jobs:
            cfgs.append(OmegaConf.to_object(compose("config", overrides=job)))
            check_config(cfgs[-1])
    if "Slurm" not in str(hydra_cfg.launcher.get("_target_")):  # a login node may lack the jobs' GPU
        for device in {str(cfg.device) for cfg in cfgs}:
            resolve_device(device)
    train_sets = {}
    for cfg in cfgs:
        data = (str(cfg.data.name), to_absolute_path(cfg.data.root), cfg.data.download)
        if data not in train_sets:
            train_sets[data] = load_dataset(*data)[0]  # downloads once here, not once per job
        select_train(cfg, train_sets[data])
    return jobs_at_once(hydra_cfg.launcher, len(jobs))


class FailedJobsReport(Callback):
    """Lists the jobs whose summary.json does not say completed, whatever launcher ran them,
    and makes the command exit with status 1 if there are any."""

    def on_run_end(self, config: DictConfig, **kwargs) -> None:
        self._report(Path(config.hydra.runtime.output_dir))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        self._report(Path(config.hydra.sweep.dir))

    @staticmethod
    def _report(root: Path) -> None:
        failed = []
        for path in sorted(root.rglob("summary.json")):
            summary = json.loads(path.read_text())
            if summary["status"] != "completed":
                failed.append(f"{path.parent}: {summary['status']} {summary['message']}".rstrip())
        if failed:
            print(f"{len(failed)} job(s) did not complete:", file=sys.stderr)
            for line in failed:
                print(f"  {line}", file=sys.stderr)
            sys.exit(1)  # Hydra passes SystemExit through its callback guard


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_app(dict_cfg: DictConfig) -> str:
    cfg: Config = OmegaConf.to_object(dict_cfg)
    cfg.data.root = to_absolute_path(cfg.data.root)
    # Parallel local jobs split the cores between them instead of each taking them all.
    torch.set_num_threads(cfg.threads or max(1, available_cores() // int(os.environ.get(JOBS_AT_ONCE, "1"))))
    out_dir = HydraConfig.get().runtime.output_dir
    try:
        return train(cfg, out_dir)["status"]
    except Diverged as e:  # recorded in summary.json; the other jobs of a sweep go on
        log.error("%s", e)
        return "diverged"


def main() -> None:
    try:
        os.environ[JOBS_AT_ONCE] = str(precheck(sys.argv[1:]))
    except (HydraException, OmegaConfBaseException, ConfigError, DataError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)
    try:
        hydra_app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
