"""Typed configuration of one training job, free of Hydra so plain code can build it too.

Hydra registers `Config` as the schema of conf/config.yaml (see run.py), so a value of the
wrong type on the command line fails before anything runs. `check_config` adds the range
checks that types cannot express.
"""
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Optional


class Activation(StrEnum):
    tanh = "tanh"
    sigmoid = "sigmoid"
    softplus = "softplus"
    relu = "relu"


class Binarize(StrEnum):
    none = "none"  # grey levels in [0, 1] used as Bernoulli means
    dynamic = "dynamic"  # a fresh Bernoulli sample each time a batch is drawn
    static = "static"  # one Bernoulli sample of the whole dataset, fixed seed


class DatasetName(StrEnum):
    mnist = "mnist"
    fashion_mnist = "fashion_mnist"
    frey_face = "frey_face"


class Likelihood(StrEnum):
    bernoulli = "bernoulli"  # p(x|z) for MNIST-like data
    gaussian = "gaussian"  # sigmoid means and a variance per pixel, the paper's Frey Face decoder


class AlgorithmName(StrEnum):
    aevb = "aevb"  # the paper's SGVB estimator on the ELBO
    wake_sleep = "wake_sleep"  # Hinton et al. (1995), the baseline of Figure 2


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class ModelConfig:
    hidden_size: int = 500
    activation: Activation = Activation.tanh
    init_std: float = 0.01
    likelihood: Likelihood = Likelihood.bernoulli
    # Floor on the Gaussian decoder's log variance; None keeps the paper's model unchanged.
    decoder_logvar_min: Optional[float] = None


@dataclass
class DataConfig:
    name: DatasetName = DatasetName.mnist
    root: str = "data"
    download: bool = True
    binarize: Binarize = Binarize.none


@dataclass
class AlgorithmConfig:
    name: AlgorithmName = AlgorithmName.aevb


@dataclass
class OptimizerConfig:
    lr: float = 0.02
    # N(0, prior_std^2 I) prior on the weight matrices. Its gradient per datapoint is -w / (prior_std^2 N),
    # N the number of training images used: weight_decay None takes that, a number overrides it.
    prior_std: float = 1.0
    weight_decay: Optional[float] = None
    # Minibatches that only fill Adagrad's accumulator before the first update (the author's code: 100).
    warmup_steps: int = 0


@dataclass
class TrainConfig:
    batch_size: int = 100
    mc_samples: int = 1
    # Sample counts are floats so that 1e6 can be typed on the command line.
    max_samples: float = 1e8
    eval_start: float = 1e4
    eval_points_per_decade: int = 5
    checkpoint_every: float = 1e6
    progress: bool = True


@dataclass
class Config:
    latent_dim: int = 20
    seed: int = 0
    device: Device = Device.auto
    threads: int = 0  # CPU threads of the job; 0: the cores divided by the jobs running at once
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class ConfigError(ValueError):
    """A config value out of range; the message names the key."""


def _positive_count(key: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 1 and value == int(value)):
        raise ConfigError(f"{key}={value}: expected a whole number >= 1")


def check_config(cfg: Config) -> None:
    _positive_count("latent_dim", cfg.latent_dim)
    _positive_count("model.hidden_size", cfg.model.hidden_size)
    _positive_count("train.batch_size", cfg.train.batch_size)
    _positive_count("train.mc_samples", cfg.train.mc_samples)
    _positive_count("train.max_samples", cfg.train.max_samples)
    _positive_count("train.eval_start", cfg.train.eval_start)
    _positive_count("train.eval_points_per_decade", cfg.train.eval_points_per_decade)
    _positive_count("train.checkpoint_every", cfg.train.checkpoint_every)
    for key, value in (("optimizer.lr", cfg.optimizer.lr), ("model.init_std", cfg.model.init_std),
                       ("optimizer.prior_std", cfg.optimizer.prior_std)):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{key}={value}: expected a number > 0")
    decay = cfg.optimizer.weight_decay
    if decay is not None and not (math.isfinite(decay) and decay >= 0):
        raise ConfigError(f"optimizer.weight_decay={decay}: expected a number >= 0, or null for 1 / (prior_std^2 N)")
    for key, count in (("optimizer.warmup_steps", cfg.optimizer.warmup_steps), ("threads", cfg.threads)):
        if count < 0:
            raise ConfigError(f"{key}={count}: expected a whole number >= 0")
