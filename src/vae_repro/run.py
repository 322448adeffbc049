"""Command-line entry point: python -m vae_repro.run [KEY=VALUE ...] [-m].

A thin Hydra wrapper around `vae_repro.train.train`. Before Hydra creates any output dir,
every job of the command is composed and checked (types, ranges, device, data files, and its
output dir: not held by a live job, no damaged checkpoint or one made with other settings), so
a bad value ends with one line on stderr and exit status 2 instead of a traceback or a
half-made sweep. A job's error is recorded in its summary.json and told in one line; the
other jobs go on. The command ends by listing the jobs that did not complete (exit status 1)
and saying where the output is.
"""
import contextlib
import difflib
import functools
import itertools
import logging
import os
import shlex
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from vae_repro.checkpoint import CheckpointError, Terminated, raise_terminated
from vae_repro.command_line import CommandLine, split_command_line
from vae_repro.config import Config, ConfigError, flat
from vae_repro.data import DataError
from vae_repro.jobs import job_config, prepare
from vae_repro.machine import check_compile, resolve_device
from vae_repro.records import read_summary
from vae_repro.rundir import RunDirBusy, busy_message, holder
from vae_repro.trackers import tracker_hint
from vae_repro.train import error_line, train_stack
from vae_repro.workers import (StopWorkers, command_stopped, in_worker, prepare_worker,
                               wait_for_child_processes)

CONF_DIR = Path(__file__).resolve().parent / "conf"  # in the package, so that an installed copy finds it
ConfigStore.instance().store(name="config_schema", node=Config)
log = logging.getLogger(__name__)
HELP_OPTIONS = {"--help", "-h", "--hydra-help"}
CONFIG_CHOICE = {"-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir"}  # another config than ours
# How many jobs of this command share the machine at once: set by `main` for the jobs it starts,
# which inherit the environment whichever local launcher runs them.
JOBS_AT_ONCE = "VAE_REPRO_JOBS_AT_ONCE"


def available_cores() -> int:
    """The cores this process may use: SLURM's allocation (which need not bind the process to
    them), else the process's CPU affinity."""
    if os.environ.get("SLURM_CPUS_PER_TASK"):
        return int(os.environ["SLURM_CPUS_PER_TASK"])
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
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:  # not in the schema
        return _no_such_key(cause.full_key)
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        if "is not a ListConfig" in cause.msg:
            return f"{cause.full_key}: expected a list in brackets, {cause.full_key}=[...]"
        return f"{cause.full_key}: {cause.msg.splitlines()[0]}"
    # Hydra's advice for a sweep's values without -m names only its long form.
    return " ".join(str(e).split("Config search path")[0].split()).replace("add --multirun", "add -m")


@functools.cache
def _schema_keys() -> tuple[str, ...]:
    """Every key of the config, dotted."""
    return tuple(flat(OmegaConf.to_container(OmegaConf.structured(Config))))


def _no_such_key(key: str) -> str:
    keys = _schema_keys()
    groups = {k.rsplit(".", 1)[0] for k in keys if "." in k}  # a misspelt group, as in trian.max_samples
    close = difflib.get_close_matches(key, [*keys, *groups], n=1, cutoff=0.75)
    return f"{key}: no such key{f' (did you mean {close[0]}?)' if close else ''}; --help lists the keys"


def _check_known_keys(composed: DictConfig) -> None:
    """A key added with +KEY=VALUE that nothing reads is refused, as a misspelt one is: else the job
    would train without it and record it as a setting."""
    for key in flat(OmegaConf.to_container(composed)):
        if key not in _schema_keys():
            raise ConfigError(_no_such_key(key))


def _sweep_jobs(overrides: list[str]) -> tuple[list[list[str]], DictConfig]:
    """The override list of every job of a multirun, as Hydra's basic sweeper expands them, and the
    command's Hydra config."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    hydra_cfg = compose("config", overrides=plain, return_hydra_config=True).hydra
    swept = {o.get_key_element(): o for o in parsed}
    config_params = hydra_cfg.sweeper.get("params") or {}
    from_config = parser.parse_overrides([f"{k}={v}" for k, v in config_params.items() if k not in swept])
    return expand_sweep(from_config + list(swept.values())), hydra_cfg


def expand_sweep(overrides: list[Override]) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper makes them: every combination of the values
    of the sweep overrides (a,b; range(...); choice(...)), the first key varying slowest."""
    values = {}
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            values[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            values[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise ConfigError(f"{override.input_line}: the basic sweeper takes a list of values, a range or a choice, "
                              "not an interval")
    return [list(job) for job in itertools.product(*values.values())]


def _compose_job(overrides: list[str], num: int) -> tuple[Config, DictConfig]:
    """A job's config, checked, and its Hydra config as the launcher sets it for job number `num`,
    with its output dirs resolved."""
    composed = compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(composed):
        hydra_cfg = composed.hydra
        hydra_cfg.job.num = hydra_cfg.job.id = num
        for key in ("run.dir", "sweep.dir", "sweep.subdir"):
            OmegaConf.update(hydra_cfg, key, str(OmegaConf.select(hydra_cfg, key)))
        del composed["hydra"]
    _check_known_keys(composed)
    return job_config(composed), hydra_cfg


@dataclass
class Command:
    """What a command line will do, as the pre-check found it."""
    args: list[str]  # after `python -m vae_repro.run`, as typed, its output dir made explicit
    multirun: bool
    out_dir: Path  # the run's dir, or the sweep's
    job_dirs: list[Path]
    jobs_at_once: int
    launcher: str  # its _target_
    jobs_in_this_process: bool  # Hydra's basic launcher, the stack launcher without SLURM
    tracker_hint: str | None = None  # the command that shows the jobs' tracker runs


def precheck(line: CommandLine) -> Command | None:
    """Compose and check every job of the command, its data and its output dir; raise on the first
    bad one. None for Hydra's own options (--help, --cfg, ...), which are left to Hydra."""
    if line.other_options:
        _check_overrides_alone(line)
        return None
    multirun, overrides = line.multirun, line.overrides
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="precheck"):
        if multirun:
            jobs, hydra_cfg = _sweep_jobs(overrides)
        else:
            cfg, hydra_cfg = _compose_job(overrides, 0)
            jobs = [overrides]
            if hydra_cfg.sweeper.get("params"):  # a preset's sweep, which one run would quietly drop
                preset = hydra_cfg.runtime.choices.get("sweep")
                raise ConfigError(f"sweep={preset}: a sweep of several jobs ({', '.join(hydra_cfg.sweeper.params)}); "
                                  "add -m")
        dir_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        resolved = str(OmegaConf.select(hydra_cfg, dir_key.removeprefix("hydra.")))
        out_dir = Path(to_absolute_path(resolved))
        # A dir the user did not name (a timestamp) is pinned on the command line as resolved now,
        # so that Hydra uses this very dir and the closing message can name it.
        named = any(o.lstrip("+").split("=", 1)[0] == dir_key for o in overrides)
        pin = [] if named else [f"{dir_key}={resolved}"]
        if multirun:
            cfgs, job_dirs = [], []
            for num, job in enumerate(jobs):
                cfg, job_hydra = _compose_job(job + pin, num)
                cfgs.append(cfg)
                job_dirs.append(out_dir / job_hydra.sweep.subdir)
        else:
            cfgs, job_dirs = [cfg], [out_dir]  # composed once above
    for job_dir in job_dirs:
        check_output_dir(job_dir, dir_key)
    launcher = str(hydra_cfg.launcher.get("_target_"))
    on_slurm = "Slurm" in launcher or hydra_cfg.launcher.get("slurm") is not None
    if not on_slurm:  # a login node may lack the jobs' GPU or compiler
        for cfg in cfgs:
            check_compile(cfg, resolve_device(str(cfg.device)))
    for cfg, job_dir in zip(cfgs, job_dirs):  # every job, before any job starts
        if (pid := holder(job_dir)) is not None:
            raise RunDirBusy(busy_message(job_dir, pid))
        prepare(cfg, job_dir)
    in_this_process = launcher.endswith("BasicLauncher") or launcher.endswith("StackLauncher") and not on_slurm
    return Command(line.words + pin, multirun, out_dir, job_dirs, jobs_at_once(hydra_cfg.launcher, len(jobs)),
                   launcher, in_this_process, tracker_hint(cfgs[0], out_dir, multirun))


def _check_overrides_alone(line: CommandLine) -> None:
    """With Hydra's own options (--cfg, --info, ...), a bad override is one line, as without them."""
    if not CONFIG_CHOICE & set(line.other_options):  # those choose another config, which Hydra composes itself
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="precheck"):
            _compose_job(line.overrides, 0)


def check_output_dir(job_dir: Path, key: str) -> None:
    """A job's output dir can be made and written in, tried without leaving anything behind."""
    existing = job_dir
    while not existing.exists():  # False beneath a regular file too
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key}: {job_dir} cannot be a dir: {existing} is a file; choose another output dir")
    try:
        tempfile.TemporaryDirectory(dir=existing).cleanup()
    except OSError as e:
        raise ConfigError(f"{key}: cannot make {job_dir}: writing in {existing} failed ({e.strerror or e}); "
                          "choose another output dir") from None


def sweep_dry_run(line: CommandLine) -> bool:
    """`-m ... --cfg job`, which Hydra refuses for a sweep: print each job's config, checked, and run
    nothing. False where the line asks for something else; ConfigError for Hydra's other options with -m."""
    options = line.other_options
    if not line.multirun or not options:
        return False
    if options not in (["--cfg", "job"], ["-c", "job"]):
        asked = " ".join(options[:2] if options[0] in ("--cfg", "-c") else options)
        raise ConfigError(f"{asked} with -m: Hydra shows one run's config; `-m ... --cfg job` "
                          "shows the config of each job of a sweep")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="dry_run"):
        jobs, _ = _sweep_jobs(line.overrides)
        cfgs = [_compose_job(job, num)[0] for num, job in enumerate(jobs)]  # every job checked before any is shown
    for num, (job, cfg) in enumerate(zip(jobs, cfgs)):
        print(f"# job {num}: {' '.join(job)}\n{OmegaConf.to_yaml(OmegaConf.structured(cfg))}")
    print(f"# {len(jobs)} jobs; nothing was run")
    return True


def _job_outcome(job_dir: Path) -> tuple[str, str, str]:
    """A finished command's job: its status, what to say about it, and its warning if any."""
    summary = read_summary(job_dir)
    if summary is None:
        return "not started", "", ""
    status, message, warning = summary.get("status", "unknown"), summary.get("message", ""), summary.get("warning", "")
    if status == "running":
        if (pid := holder(job_dir)) is not None:
            return status, f"still training in another process (pid {pid})", warning
        return "died", (f"ended without a word at or after {summary.get('samples', 0)} samples (killed, out of "
                        "memory?); its log is in that dir, and the same command resumes it from its checkpoint"), \
            warning
    return status, message, warning


def report(command: Command) -> int:
    """Say how the command's jobs ended and where their output is; the command's exit status."""
    outcomes = [_job_outcome(d) for d in command.job_dirs]
    for job_dir, (status, message, warning) in zip(command.job_dirs, outcomes):
        where = job_dir if command.multirun else command.out_dir
        if status != "completed" or message:
            print(f"{where}: {status}" + (f": {message}" if message else ""), file=sys.stderr)
        if warning:
            print(f"{where}: warning: {warning}", file=sys.stderr)
    done = sum(status == "completed" for status, _, _ in outcomes)
    flagged = sum(status == "completed" and bool(warning) for status, _, warning in outcomes)
    if command.multirun:
        print(f"{done} of {len(outcomes)} jobs completed{f', {flagged} flagged' if flagged else ''}; "
              f"outputs in {command.out_dir}")
    elif done:
        print(f"run completed{', flagged' if flagged else ''}; outputs in {command.out_dir}")
    else:
        print(f"run not completed; outputs so far in {command.out_dir}")
    if command.tracker_hint:
        print(f"to browse the runs: {command.tracker_hint}")
    if any(status in ("interrupted", "died", "not started") for status, _, _ in outcomes):
        print(f"to resume: python -m vae_repro.run {shlex.join(command.args)}")
    return 0 if done == len(outcomes) else 1


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_app(dict_cfg: DictConfig) -> str:
    hydra_cfg = HydraConfig.get()
    # The job prepared by the up-front check is taken up in train_stack, where a failure to prepare it
    # (a checkpoint damaged since) is recorded in its summary.json and the other jobs go on.
    return run_stack([job_config(dict_cfg)], [hydra_cfg.runtime.output_dir], hydra_cfg.mode == RunMode.MULTIRUN)[0]


def run_stack(cfgs: list[Config], out_dirs: list[str], multirun: bool) -> list[str]:
    """Train a stack of the command's jobs (a job alone is a stack of one) in this process; each
    job's status."""
    # Parallel local jobs split the cores between them instead of each taking them all.
    torch.set_num_threads(cfgs[0].threads or max(1, available_cores() // int(os.environ.get(JOBS_AT_ONCE, "1"))))
    # A sweep's failed job is told as it happens and again in the end-of-command report; a single
    # run's in the report alone. Its log file has it either way.
    level = logging.ERROR if multirun else logging.DEBUG
    worker = in_worker()
    if worker:
        prepare_worker()
    if command_stopped():
        return ["not started"] * len(cfgs)
    try:
        summaries = train_stack(cfgs, out_dirs)
    except Terminated:  # checkpointed; in a worker, its command stops the sweep and reports
        if not worker:
            raise
        return ["interrupted"] * len(cfgs)
    except Exception as e:  # recorded in summary.json too, told in one line, its traceback in the job's log
        log.log(level, "%s: failed: %s", ", ".join(out_dirs), error_line(e))
        log.debug("the failure's traceback", exc_info=True)
        return ["failed"] * len(cfgs)
    for out_dir, summary in zip(out_dirs, summaries):  # recorded in summary.json; the other jobs go on
        if summary.status == "diverged":
            log.log(level, "%s: diverged: %s", out_dir, summary.message)
    return [summary.status for summary in summaries]


def main() -> None:
    line = split_command_line(sys.argv[1:])
    sys.argv[1:] = line.for_hydra()  # in an order Hydra reads, whatever the user's
    if asked_for_help := HELP_OPTIONS & set(line.options):
        # Hydra composes the overrides before it prints its help, which does not depend on them: a sweep's
        # values or a misspelt key would end it in a traceback.
        sys.argv[1:] = sorted(asked_for_help)[:1]
        hydra_app()
        return
    try:
        if sweep_dry_run(line):
            return
        command = precheck(line)
    except (HydraException, OmegaConfBaseException, ConfigError, DataError, CheckpointError, RunDirBusy) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)
    if command is None:
        hydra_app()
        return
    os.environ[JOBS_AT_ONCE] = str(command.jobs_at_once)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # errors outside the jobs come up to here, to be told in one line
    sys.argv[1:] = split_command_line(command.args).for_hydra()
    if command.jobs_in_this_process:  # a job stopped by SIGTERM checkpoints, then raises Terminated here
        signal.signal(signal.SIGTERM, raise_terminated)
    joblib = command.launcher.endswith("JoblibLauncher")
    try:
        with StopWorkers(command.job_dirs) if joblib else contextlib.nullcontext() as stop:
            hydra_app()
    except KeyboardInterrupt:
        end_by_signal(command, signal.SIGINT)
    except Terminated:
        end_by_signal(command, signal.SIGTERM)
    except Exception as e:  # the launcher's: a job that SLURM cancelled, sbatch refusing the resources
        print(f"error: {error_line(e)}", file=sys.stderr)
        if command.launcher.endswith("submitit_launcher.LocalLauncher"):
            wait_for_child_processes()
        report(command)
        sys.exit(1)
    if joblib and stop.signal is not None:
        end_by_signal(command, stop.signal)
    sys.exit(report(command))


def end_by_signal(command: Command, signum: int) -> None:
    """Report, then end as a process stopped by `signum` does: exit status 130 after Ctrl-C, the
    signal's own after SIGTERM."""
    report(command)
    if signum == signal.SIGINT:
        sys.exit(130)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the command at once
    sys.stdout.flush()  # the signal's default action below ends the process without flushing
    sys.stderr.flush()
    signal.raise_signal(signal.SIGTERM)


if __name__ == "__main__":
    main()
