"""A job of the command, prepared once from its composed config.

`prepare` turns a job's typed config (checked, paths absolute: `job_config`, which `prepare_job`
calls on a composed config) into everything a job needs before it trains: its output dir, its
images' size and its checkpoint, read and held to its settings. The up-front check (run.py), the
stack launcher and `train_stack` (which Hydra's task function calls) all start from it; in one
process a job is prepared once, and its checkpoint read once, unless another process has
written the file since.
"""
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from vae_repro.checkpoint import config_dict, load_checkpoint
from vae_repro.config import Config, check_config
from vae_repro.data import Images, data_source, load_dataset, select_train
from vae_repro.trackers import check_tracker, default_tracking_uri


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is written again (checkpoints are replaced, so a new inode); None if absent."""
    try:
        s = path.stat()
    except FileNotFoundError:
        return None
    return s.st_ino, s.st_mtime_ns, s.st_size


@dataclass
class PreparedJob:
    cfg: Config
    out_dir: Path
    settings: dict  # the config as plain data: what its files record and its checkpoint is held to
    input_dim: int  # the pixels of its images
    checkpoint: dict | None
    stamp: tuple[int, int, int] | None  # its checkpoint file's when read

    @property
    def position(self) -> int:
        """The samples its checkpoint stands at; 0 without one."""
        return 0 if self.checkpoint is None else self.checkpoint["state"]["samples"]

    def take_checkpoint(self) -> dict | None:
        """Its checkpoint as the file is now (read again only if written since), for the job that trains;
        the prepared job is let go of."""
        if _prepared.get(self.out_dir) is self:
            del _prepared[self.out_dir]
        path = self.out_dir / "checkpoint.pt"
        ckpt = self.checkpoint if file_stamp(path) == self.stamp else load_checkpoint(path, self.settings)
        self.checkpoint = None
        return ckpt


_prepared: dict[Path, PreparedJob] = {}  # by output dir


def prepare(cfg: Config, out_dir: str | Path, data: Images | None = None) -> PreparedJob:
    """The job of `cfg` (checked) in `out_dir`, on `data` or the images its config names: its tracker
    and data checked, its checkpoint read and held to its settings. Prepared once per process."""
    out_dir, settings = Path(out_dir).absolute(), config_dict(cfg)
    path = out_dir / "checkpoint.pt"
    if (job := _prepared.get(out_dir)) is not None and job.settings == settings and job.stamp == file_stamp(path):
        return job
    check_tracker(cfg)
    train_x, test_x, _ = data if data is not None else load_dataset(*data_source(cfg))
    select_train(cfg, train_x)
    stamp = file_stamp(path)
    job = _prepared[out_dir] = PreparedJob(cfg, out_dir, settings, test_x.shape[1], load_checkpoint(path, settings),
                                           stamp)
    return job


def job_config(composed: DictConfig) -> Config:
    """A job's composed config (less its hydra node) as the typed config it trains with, checked: data
    paths and the default MLflow store as given relative to where the command starts, wherever its
    jobs run."""
    cfg: Config = OmegaConf.to_object(composed)
    check_config(cfg)  # before the paths are made absolute: its messages name them as typed
    cfg.data.root = to_absolute_path(cfg.data.root)
    if cfg.data.path is not None:
        cfg.data.path = to_absolute_path(cfg.data.path)
    if str(cfg.logger.name) == "mlflow" and cfg.logger.tracking_uri is None:
        cfg.logger.tracking_uri = default_tracking_uri(Path(to_absolute_path("outputs")))
    return cfg


def prepare_job(composed: DictConfig, out_dir: str | Path) -> PreparedJob:
    """A job of the command from its composed config, as the stack launcher plans it."""
    return prepare(job_config(composed), out_dir)
