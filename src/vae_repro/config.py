"""Typed configuration of one training job, free of Hydra so plain code can build it too.

Hydra registers `Config` as the schema of conf/config.yaml (see run.py), so a value of the
wrong type on the command line fails before anything runs. `check_config` adds the range
checks that types cannot express.
"""
import json
import math
from dataclasses import asdict, dataclass, field
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
    array = "array"  # your own images in a .npy or .npz file: data.path
    folder = "folder"  # your own images as PNG or JPEG files in a folder: data.root


class Likelihood(StrEnum):
    bernoulli = "bernoulli"  # p(x|z) for MNIST-like data
    gaussian = "gaussian"  # sigmoid means and a variance per pixel, the paper's Frey Face decoder


class AlgorithmName(StrEnum):
    aevb = "aevb"  # the paper's SGVB estimator on the ELBO
    wake_sleep = "wake_sleep"  # Hinton et al. (1995), the baseline of Figure 2
    mcem = "mcem"  # Monte Carlo EM: no encoder, HMC on a persistent z per datapoint (Figure 3)
    iwae = "iwae"  # Burda et al. (2015): the importance-weighted bound with algorithm.k samples
    beta_vae = "beta_vae"  # Higgins et al. (2017): the ELBO with its KL weighted by algorithm.beta


class OptimizerName(StrEnum):
    adagrad = "adagrad"  # the paper's
    adam = "adam"  # Kingma and Ba (2014), as the IWAE paper trains


class Gradients(StrEnum):
    auto = "auto"  # hand-written where the algorithm has them (all but beta_vae), else autograd
    handwritten = "handwritten"  # the hand-written backward passes of model.py
    autograd = "autograd"  # the algorithm's losses (losses.py) differentiated by autograd


# none; hmc: the paper's appendix D, HMC posterior samples, a fitted q(z), 1/p(x) ~ mean q(z)/p(x, z);
# is: importance sampling with q(z|x) as proposal (needs an encoder). Built by call because `is`
# is a Python keyword, and OmegaConf matches command-line values to member names.
MarginalEstimator = StrEnum("MarginalEstimator", [("none", "none"), ("hmc", "hmc"), ("is", "is")])


class LoggerName(StrEnum):
    none = "none"  # metrics.csv alone
    tensorboard = "tensorboard"
    mlflow = "mlflow"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class ModelConfig:
    hidden_size: int = 500  # the paper's one hidden layer each way
    # The encoder's hidden layers, e.g. [200, 200], mirrored in the decoder; when given, replaces hidden_size.
    hidden_sizes: Optional[list[int]] = None
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
    train_size: Optional[int] = None  # keep the first N training images; None keeps all
    path: Optional[str] = None  # data=array: the .npy or .npz file
    # A .npy file, or a folder without train/ and test/, is split: its last images are the test set,
    # this fraction of them (< 1) or this many (>= 1).
    test_size: float = 0.1
    image_shape: Optional[list[int]] = None  # [rows, columns] of an [N, D] array's images, for the pictures


@dataclass
class AlgorithmConfig:
    name: AlgorithmName = AlgorithmName.aevb
    # Monte Carlo EM only (the paper's appendix E): per minibatch, one HMC move of its z with this
    # many leapfrog steps, the step size tuned toward the acceptance rate, then m_steps updates of p.
    hmc_leapfrog_steps: int = 10
    hmc_target_accept: float = 0.9
    m_steps: int = 5
    k: int = 5  # iwae only: importance samples per datapoint (k = 1 is AEVB)
    beta: float = 1.0  # beta_vae only: the KL term's weight (beta = 1 is AEVB's ELBO)


@dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.adagrad
    lr: float = 0.02
    eps: float = 1e-10  # added to the root of the squared gradients' sum (Adagrad) or average (Adam)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam only: the moments' decay rates
    # N(0, prior_std^2 I) prior on the weight matrices. Its gradient per datapoint is -w / (prior_std^2 N),
    # N the number of training images used: weight_decay None takes that, a number overrides it.
    prior_std: float = 1.0
    weight_decay: Optional[float] = None
    # Minibatches that only fill the optimizer's state before the first update (the author's code: 100).
    warmup_steps: int = 0
    # 0: one step size throughout. n: the IWAE paper's schedule in n stages, stage i (from 0) lasting 3^i
    # passes over the training images at lr * 10^(-i/7); the last stage's step size then stays.
    lr_stages: int = 0


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
    # torch.compile the model's passes: faster steps and evaluations after 10 to 30 s of compiling
    # per job; on a CPU it needs a C++ compiler.
    compile: bool = False
    # On a CUDA device, replay each training step as one CUDA graph instead of launching its some
    # fifty kernels one by one: the same results, several times faster at batch 100.
    cuda_graph: bool = True
    gradients: Gradients = Gradients.auto


@dataclass
class EvalConfig:
    # The marginal log-likelihood log p(x) on the first marginal_points images of each split, at
    # every evaluation. marginal_samples: posterior samples per image for hmc (default 50, half to fit
    # q(z), half to estimate), importance samples per image for is (default 1000).
    marginal: MarginalEstimator = MarginalEstimator["none"]
    marginal_points: int = 1000
    marginal_samples: Optional[int] = None
    marginal_leapfrog_steps: int = 4  # per HMC move, as in the paper
    marginal_burn_in: int = 25  # HMC moves before the first sample is kept
    # The importance-weighted bound with k samples (Burda et al., 2015) of each whole split, for each k.
    iwae_k: list[int] = field(default_factory=list)
    # The active units of z on each whole split: those whose encoder mean varies, Cov_x(E_q[z_j]) > 0.01.
    active_units: bool = False


@dataclass
class LoggerConfig:
    """An experiment tracker beside metrics.csv (trackers.py)."""
    name: LoggerName = LoggerName.none
    tracking_uri: Optional[str] = None  # mlflow: null for the SQLite file outputs/mlflow.db
    experiment: str = "vae_repro"  # mlflow: the experiment its runs go in


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
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


def flat(config, prefix: str = "") -> dict[str, str]:
    """A config (as a dict) as {dotted key: value as text}."""
    values = {}
    for key, value in config.items():
        if isinstance(value, dict):
            values.update(flat(value, f"{prefix}{key}."))
        else:
            values[f"{prefix}{key}"] = str(value)
    return values


# Config keys that do not make two runs different settings: seeds are what the band is drawn
# over, and the others say where, how fast or how long a run ran, not what it trained.
NOT_A_SETTING = {"seed", "data.root", "data.download", "device", "threads", "train.progress",
                 "train.checkpoint_every", "train.max_samples", "logger.name", "logger.tracking_uri",
                 "logger.experiment"}


# The keys whose values may differ between the models of one stack: they change no shape.
STACKABLE = ("seed", "latent_dim", "optimizer.lr")


def stack_key(cfg: "Config") -> str:
    """What the models of one stack share: every value of the config but STACKABLE's."""
    return json.dumps({k: v for k, v in flat(asdict(cfg)).items() if k not in STACKABLE}, sort_keys=True)


MARGINAL_SAMPLES = {"hmc": 50, "is": 1000}  # eval.marginal_samples when it is null


def marginal_samples(cfg: Config) -> int:
    return cfg.eval.marginal_samples or MARGINAL_SAMPLES[str(cfg.eval.marginal)]


class ConfigError(ValueError):
    """A config value out of range; the message names the key."""


class DataError(RuntimeError):
    """Data missing, unreadable or unfit; the message says which file and what to do."""


def _positive_count(key: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 1 and value == int(value)):
        raise ConfigError(f"{key}={value}: expected a whole number >= 1")


def hidden_sizes(model: ModelConfig) -> list[int]:
    """The encoder's hidden layers, first to last (the decoder's are these in reverse)."""
    return list(model.hidden_sizes) if model.hidden_sizes is not None else [model.hidden_size]


def check_config(cfg: Config) -> None:
    _positive_count("latent_dim", cfg.latent_dim)
    _positive_count("model.hidden_size", cfg.model.hidden_size)
    if cfg.model.hidden_sizes is not None:
        if not cfg.model.hidden_sizes or min(cfg.model.hidden_sizes) < 1:
            raise ConfigError(f"model.hidden_sizes={list(cfg.model.hidden_sizes)}: expected a list of whole numbers "
                              ">= 1, one per hidden layer, e.g. [200,200]")
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
    _check_optimizer(cfg)
    _check_algorithm(cfg)
    decay = cfg.optimizer.weight_decay
    if decay is not None and not (math.isfinite(decay) and decay >= 0):
        raise ConfigError(f"optimizer.weight_decay={decay}: expected a number >= 0, or null for 1 / (prior_std^2 N)")
    for key, count in (("optimizer.warmup_steps", cfg.optimizer.warmup_steps), ("threads", cfg.threads),
                       ("optimizer.lr_stages", cfg.optimizer.lr_stages),
                       ("eval.marginal_burn_in", cfg.eval.marginal_burn_in)):
        if count < 0:
            raise ConfigError(f"{key}={count}: expected a whole number >= 0")
    _check_data(cfg)
    _positive_count("algorithm.hmc_leapfrog_steps", cfg.algorithm.hmc_leapfrog_steps)
    _positive_count("algorithm.m_steps", cfg.algorithm.m_steps)
    _positive_count("algorithm.k", cfg.algorithm.k)
    if not 0 < cfg.algorithm.hmc_target_accept < 1:
        raise ConfigError(f"algorithm.hmc_target_accept={cfg.algorithm.hmc_target_accept}: expected a number "
                          "between 0 and 1")
    _check_marginal(cfg)


def _check_optimizer(cfg: Config) -> None:
    opt = cfg.optimizer
    if not (math.isfinite(opt.eps) and opt.eps > 0):
        raise ConfigError(f"optimizer.eps={opt.eps}: expected a number > 0")
    if len(opt.betas) != 2 or not all(0 <= b < 1 for b in opt.betas):
        raise ConfigError(f"optimizer.betas={list(opt.betas)}: expected two numbers in [0, 1), e.g. [0.9,0.999]")
    if list(opt.betas) != OptimizerConfig().betas and str(opt.name) != "adam":  # read by nothing
        raise ConfigError(f"optimizer.betas={list(opt.betas)}: read by optimizer=adam only (this is "
                          f"optimizer={opt.name}); add optimizer=adam")


def _check_algorithm(cfg: Config) -> None:
    from vae_repro.algorithms import ALGORITHMS  # here: the algorithms build on this module
    name = str(cfg.algorithm.name)
    if not (math.isfinite(cfg.algorithm.beta) and cfg.algorithm.beta >= 0):
        raise ConfigError(f"algorithm.beta={cfg.algorithm.beta}: expected a number >= 0")
    if cfg.algorithm.beta != 1 and name != "beta_vae":  # read by nothing
        raise ConfigError(f"algorithm.beta={cfg.algorithm.beta}: read by algorithm=beta_vae only (this is "
                          f"algorithm={name}); add algorithm=beta_vae")
    if str(cfg.train.gradients) == "handwritten" and not ALGORITHMS[name].handwritten:
        raise ConfigError(f"train.gradients=handwritten: algorithm={name} has no hand-written passes; use "
                          "train.gradients=autograd (or auto)")


def _check_data(cfg: Config) -> None:
    data = cfg.data
    if data.train_size is not None:
        _positive_count("data.train_size", data.train_size)
    if not (0 < data.test_size < 1 or data.test_size >= 1 and data.test_size == int(data.test_size)):
        raise ConfigError(f"data.test_size={data.test_size}: expected a fraction between 0 and 1, or a whole "
                          "number of images >= 1")
    if data.image_shape is not None and (len(data.image_shape) != 2 or min(data.image_shape) < 1):
        raise ConfigError(f"data.image_shape={data.image_shape}: expected [rows, columns], both >= 1")
    if str(data.name) == "array" and not data.path:
        raise ConfigError("data.path: data=array reads your images from a .npy or .npz file; give its path")
    for key, value in (("data.path", data.path), ("data.image_shape", data.image_shape)):
        if value is not None and str(data.name) != "array":
            raise ConfigError(f"{key}={value}: read with data=array only (this is data={data.name}); add data=array")


def _check_marginal(cfg: Config) -> None:
    from vae_repro.algorithms import ALGORITHMS  # here: the algorithms build on this module
    has_encoder = ALGORITHMS[str(cfg.algorithm.name)].has_encoder
    for k in cfg.eval.iwae_k:
        _positive_count("eval.iwae_k", k)
    if cfg.eval.active_units and not has_encoder:
        raise ConfigError("eval.active_units: active units are the encoder's, and "
                          f"algorithm={cfg.algorithm.name} trains none; leave eval.active_units false")
    if cfg.eval.iwae_k and not has_encoder:
        raise ConfigError("eval.iwae_k: the importance-weighted bound samples from the encoder q(z|x), and "
                          f"algorithm={cfg.algorithm.name} trains none; leave eval.iwae_k empty")
    estimator = str(cfg.eval.marginal)
    if estimator == "none":
        return
    _positive_count("eval.marginal_points", cfg.eval.marginal_points)
    _positive_count("eval.marginal_leapfrog_steps", cfg.eval.marginal_leapfrog_steps)
    if cfg.eval.marginal_samples is not None:
        _positive_count("eval.marginal_samples", cfg.eval.marginal_samples)
        if estimator == "hmc" and cfg.eval.marginal_samples < 4:
            raise ConfigError(f"eval.marginal_samples={cfg.eval.marginal_samples}: eval.marginal=hmc needs at "
                              "least 4 (half fit q(z), half estimate)")
    if estimator == "is" and not has_encoder:
        raise ConfigError("eval.marginal=is: importance sampling proposes from the encoder q(z|x), and "
                          f"algorithm={cfg.algorithm.name} trains none; use eval.marginal=hmc")
