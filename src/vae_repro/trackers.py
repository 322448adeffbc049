"""Experiment trackers beside metrics.csv (`logger=tensorboard`, `logger=mlflow`): one tracker
run per job, its config as hyperparameters, every evaluation row as metrics at step = training
samples.

metrics.csv stays the record. A tracker that fails (a server gone, a full disk) is told once,
in one line, and dropped: the training goes on untouched. A job that resumes continues its
tracker run without a step twice or a step lost: TensorBoard hides what was logged after the
checkpoint (its purge_step) and MLflow skips the steps its run already holds, which the resumed
job computes again to the same values.
"""
import logging
import os
import time
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from vae_repro.config import NOT_A_SETTING, Config, ConfigError, flat

log = logging.getLogger(__name__)

INSTALL = "pip install -e '.[tracking]'"
RUN_ID_FILE = "mlflow_run_id"  # in the job's dir: the MLflow run that a resumed job continues
LOGGED_TAG = "vae_repro.logged_samples"  # the last step an MLflow run holds


def check_tracker(cfg: Config) -> None:
    """Fail in one line if the chosen tracker's package is not installed."""
    name = str(cfg.logger.name)
    if name == "none":
        return
    try:
        __import__(name)  # the package is named as the logger
    except ImportError:
        raise ConfigError(f"logger={name}: the {name} package is not installed; {INSTALL}") from None


def default_tracking_uri(outputs: Path) -> str:
    return f"sqlite:///{outputs / 'mlflow.db'}"


def tracker_hint(cfg: Config, out_dir: Path, multirun: bool) -> str | None:
    """The command that shows the command's tracker runs, to print at its end. TensorBoard names a run
    by its folder below the dir it is given: a single run's `latent_dim=5`, a sweep's
    `2/tensorboard/latent_dim=5` (`run_name`)."""
    name = str(cfg.logger.name)
    if name == "tensorboard":
        return f"tensorboard --logdir {out_dir if multirun else out_dir / 'tensorboard'}"
    return f"mlflow ui --backend-store-uri {cfg.logger.tracking_uri}" if name == "mlflow" else None


def override_key(override: str) -> str:
    """`latent_dim` of `latent_dim=2`, `+model.x=1` and `~model.x`; `algorithm` of `algorithm=iwae`."""
    return override.split("=", 1)[0].lstrip("+~")


def swept_keys(task: list[str], sweeper_params) -> set[str]:
    """The keys a sweep varies: its command line's sweep overrides (`2,5`, `range(...)`, ...) and the
    parameters of its config's `hydra.sweeper.params` that the command line leaves alone."""
    parsed = OverridesParser.create().parse_overrides(list(task))
    given = {override_key(o.input_line) for o in parsed}
    return {override_key(o.input_line) for o in parsed if o.is_sweep_override()} | set(sweeper_params or {}) - given


def run_name(overrides: list[str], swept: set[str] | None, fallback: str) -> str:
    """What a job's tracker run is called: its overrides of the `swept` keys in a sweep; in a single
    run (`swept` None), those that change what it trains; `fallback` where there are none."""
    def named(key: str) -> bool:
        if key.startswith("hydra"):  # hydra.sweep.dir=..., hydra/launcher=...
            return False
        return key in swept if swept is not None else key not in NOT_A_SETTING - {"seed"} | {"logger"}
    return " ".join(o for o in overrides if named(override_key(o))) or fallback


class Tracker:
    """One job's tracker run, behind a guard: its first failure is told and ends it."""

    def __init__(self, out: Path, open_run=None, *args):
        self.out, self.run = out, None  # no run: logger=none, or a tracker dropped
        if open_run is not None:
            self.run = self.guarded("could not start", open_run, *args)

    def guarded(self, doing: str, call, *args):
        try:
            return call(*args)
        except Exception as e:
            reason = " ".join(str(e).split()[:40]) or type(e).__name__
            log.warning("%s: logger %s (%s); training goes on, metrics.csv keeps the record",
                        self.out, doing, reason)
            self.run = None

    def log(self, row: dict) -> None:
        if self.run is not None:
            self.guarded("failed", self.run.log, row)

    def close(self, status: str, model_path: Path | None = None) -> None:
        """End the run as the job ended: "completed" (with the final model), "interrupted", or else failed."""
        if self.run is not None:
            self.guarded("failed", self.run.close, status, model_path)
            self.run = None


def open_trackers(cfg: Config, outs: list[Path], settings: list[dict], columns: list[str],
                  resumed_at: int | None) -> list[Tracker]:
    """A tracker per job of the stack, each with a run unless logger=none; `resumed_at` is the
    checkpoint's samples."""
    name = str(cfg.logger.name)
    if name == "tensorboard":
        return [Tracker(out, TensorBoardRun, out, config, columns, resumed_at) for out, config in zip(outs, settings)]
    if name == "mlflow":
        return [Tracker(out, MlflowRun, cfg, out, config, resumed_at) for out, config in zip(outs, settings)]
    return [Tracker(out) for out in outs]


class TensorBoardRun:
    """The event files in the job's dir tensorboard/."""

    def __init__(self, out: Path, config: dict, columns: list[str], resumed_at: int | None):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # Hides every event logged after the checkpoint (or, starting afresh, by an earlier attempt).
        purge_step = 0 if resumed_at is None else resumed_at + 1
        # TensorBoard names a run by its folder: the job's overrides, not its dir's number.
        folder = out / "tensorboard" / _run_name(out).replace("/", "_")[:200]
        self.writer = SummaryWriter(str(folder), purge_step=purge_step)
        if resumed_at is None:
            metrics = {column: 0.0 for column in columns if column not in ("samples", "wall_s")}
            for summary in hparams(flat(config), metrics):
                self.writer.file_writer.add_summary(summary)
            self.writer.flush()

    def log(self, row: dict) -> None:
        for key, value in row.items():
            if key != "samples":
                self.writer.add_scalar(key, value, row["samples"])
        self.writer.flush()

    def close(self, status: str, model_path: Path | None) -> None:
        self.writer.close()


class MlflowRun:
    """An MLflow run, its id kept in the job's dir for the job's resumption."""

    def __init__(self, cfg: Config, out: Path, config: dict, resumed_at: int | None):
        # A server that does not answer costs the job two tries of ten seconds, once, before it is dropped.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        # A new SQLite store announces its migrations, and a server that does not answer each retry:
        # the job tells a failure once, itself.
        for chatty, level in (("alembic", logging.WARNING), ("mlflow", logging.WARNING), ("urllib3", logging.ERROR)):
            logging.getLogger(chatty).setLevel(level)
        uri = cfg.logger.tracking_uri or default_tracking_uri(Path("outputs").resolve())
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=uri)
        id_file = out / RUN_ID_FILE
        if resumed_at is not None and id_file.exists():
            self.run_id = id_file.read_text().strip()
            self.logged = int(self.client.get_run(self.run_id).data.tags.get(LOGGED_TAG, -1))
            self.client.update_run(self.run_id, status="RUNNING")
            return
        tags = {"job_dir": str(out)}
        if (sweep := _sweep_dir(out)) is not None:
            tags["sweep"] = sweep
        run = self.client.create_run(self._experiment(cfg.logger.experiment, uri),
                                     run_name=_run_name(out), tags=tags)
        self.run_id, self.logged = run.info.run_id, -1
        params = [Param(key, value) for key, value in flat(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes up to 100 params a call
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        tmp = id_file.with_suffix(".tmp")
        tmp.write_text(self.run_id + "\n")
        os.replace(tmp, id_file)

    def _experiment(self, name: str, uri: str) -> str:
        from mlflow.exceptions import MlflowException

        if (experiment := self.client.get_experiment_by_name(name)) is not None:
            return experiment.experiment_id
        # Beside the SQLite file, not in the directory the command happens to start in.
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri() \
            if uri.startswith("sqlite:///") else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another job of the sweep created it first
            return self.client.get_experiment_by_name(name).experiment_id

    def log(self, row: dict) -> None:
        from mlflow.entities import Metric, RunTag

        step = row["samples"]
        if step <= self.logged:  # logged before the job was stopped, and computed again to the same values
            return
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in row.items() if key != "samples"]
        self.client.log_batch(self.run_id, metrics=metrics, tags=[RunTag(LOGGED_TAG, str(step))])
        self.logged = step

    def close(self, status: str, model_path: Path | None) -> None:
        if model_path is not None:
            self.client.log_artifact(self.run_id, str(model_path))
        ended = {"completed": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
        self.client.set_terminated(self.run_id, ended)


def _run_name(out: Path) -> str:
    """`run_name` for the job whose dir is `out`, from what Hydra wrote there and in its sweep's dir."""
    overrides_path = out / ".hydra" / "overrides.yaml"
    overrides = [str(o) for o in OmegaConf.load(overrides_path)] if overrides_path.exists() else []
    sweep = _sweep_dir(out)
    swept = None
    if sweep is not None and (Path(sweep) / "multirun.yaml").exists():
        hydra = OmegaConf.load(Path(sweep) / "multirun.yaml").hydra
        swept = swept_keys(list(hydra.overrides.task), hydra.sweeper.get("params"))
    elif sweep is not None:
        swept = set()  # a sweep of unknown keys: its dir's name
    return run_name(overrides, swept, out.name)


def _sweep_dir(out: Path) -> str | None:
    path = out / ".hydra" / "hydra.yaml"
    if not path.exists():
        return None
    hydra = OmegaConf.load(path).hydra
    return str(Path(hydra.runtime.cwd) / hydra.sweep.dir) if str(hydra.mode) == "MULTIRUN" else None
