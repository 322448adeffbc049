"""The stack launcher: sets up every job's dir as Hydra's launchers do (.hydra/, its log file),
plans the stacks, and trains each: one after the other in this process, or each as one SLURM
job through submitit. Each model stays a job to Hydra and to the user, with its own return."""
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@contextmanager
def logs_in(dirs: list[str], name: str) -> Iterator[None]:
    """The log lines of a stack in the log file of each of its jobs, instead of the last set up's."""
    root = logging.getLogger()
    old = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    for handler in old:
        root.removeHandler(handler)
    new = [logging.FileHandler(Path(d) / f"{name}.log") for d in dirs]
    for handler in new:
        if old:
            handler.setFormatter(old[0].formatter)
        root.addHandler(handler)
    try:
        yield
    finally:
        for handler in new:
            root.removeHandler(handler)
            handler.close()


class StackTask:
    """One stack, as a picklable callable: what a SLURM job runs. A requeue (time limit, preemption)
    runs it again, and its models resume from their checkpoints."""

    def __init__(self, cfgs: list, dirs: list[str], log_name: str):
        self.cfgs, self.dirs, self.log_name = cfgs, dirs, log_name

    def __call__(self) -> list[str]:
        from vae_repro.run import run_stack  # here: plugins are imported at every start of Hydra
        if not logging.getLogger().handlers:  # a SLURM job starts with none
            logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        with logs_in(self.dirs, self.log_name):
            return run_stack(self.cfgs, self.dirs, multirun=True)

    def checkpoint(self) -> Any:
        import submitit
        return submitit.helpers.DelayedSubmission(self)


class StackLauncher(Launcher):
    def __init__(self, max_models: int = 16, max_padding: float = 0.25, slurm: Optional[DictConfig] = None) -> None:
        self.max_models, self.max_padding = max_models, max_padding
        self.slurm = OmegaConf.to_container(slurm, resolve=True) if slurm is not None else None
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context  # the stacks are trained by vae_repro itself

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from vae_repro.stacks import plan_stacks
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        returns, jobs = [], []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = sweep_config.hydra.job.num = idx
            # Hydra's own set-up of a job (its dir, .hydra/, its log file); the task only hands back the config.
            ret = run_job(hydra_context=self.hydra_context, task_function=_prepare_job, config=sweep_config,
                          job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            returns.append(ret)
            jobs.append(ret.return_value)
        log_name = str(self.config.hydra.job.name)
        cfgs, dirs = [job.cfg for job in jobs], [str(job.out_dir) for job in jobs]
        stacks = plan_stacks(cfgs, [job.position for job in jobs], [job.input_dim for job in jobs], self.max_models,
                             self.max_padding)
        log.info("Training %d jobs as %d stack%s", len(cfgs), len(stacks), "" if len(stacks) == 1 else "s")
        for stack in stacks:
            latent_dims = ",".join(str(n) for n in sorted({cfgs[i].latent_dim for i in stack}))
            log.info("\tstack of jobs %s (%s, N_z %s)", ", ".join(f"#{initial_job_idx + i}" for i in stack),
                     cfgs[stack[0]].algorithm.name, latent_dims)
        tasks = [StackTask([cfgs[i] for i in stack], [dirs[i] for i in stack], log_name) for stack in stacks]
        for stack, statuses in zip(stacks, self._run(tasks)):
            for i, status in zip(stack, statuses):
                returns[i].return_value = status
        return returns

    def _run(self, tasks: list[StackTask]) -> Iterator[list[str]]:
        if self.slurm is None:
            for task in tasks:
                yield task()
            return
        import submitit
        options = dict(self.slurm)
        executor = submitit.AutoExecutor(folder=options.pop("folder"), cluster="slurm",
                                         slurm_max_num_timeout=options.pop("max_num_timeout"))
        executor.update_parameters(**{key if key in COMMON_OPTIONS else f"slurm_{key}": value
                                      for key, value in options.items() if value is not None})
        with executor.batch():
            jobs = [executor.submit(task) for task in tasks]
        for job in jobs:
            yield job.result()


# submitit's options that take no "slurm_" prefix.
COMMON_OPTIONS = {"timeout_min", "mem_gb", "nodes", "cpus_per_task", "gpus_per_node", "tasks_per_node", "name",
                  "stderr_to_stdout"}


def _prepare_job(cfg: DictConfig):
    """A job, prepared as every job of the command is, in its dir."""
    from vae_repro.jobs import prepare_job
    return prepare_job(cfg, HydraConfig.get().runtime.output_dir)
