"""The training algorithms of Figures 2 and 3, and beyond the paper IWAE and the beta-VAE, each one
step function chosen once per job. A step's gradients come from the model's hand-written passes or,
with train.gradients=autograd, from autograd of the same losses (losses.gradient_pass); an
objective written as a loss alone is trained by `loss_step`.

A step takes a minibatch per model of the stack x ([K, B, D], values in [0, 1]) and the
indices of its images in the training set ([K, B]), draws its noise from the stack's Noise
(each model from its own generator), and updates the models' parameters. Every algorithm
trains the same VAE module (Monte Carlo EM leaves its encoder untouched), so evaluation, checkpoints and `load_run` treat them alike. A factory
also returns the algorithm's own state beyond the model and optimizer (Monte Carlo EM's
chains), a dict of [K, ...] tensors that the step updates in place and the checkpoints keep.
"""
import math
from dataclasses import dataclass
from typing import Callable

import torch

from vae_repro.config import AlgorithmConfig, Config
from vae_repro.hmc import adapt_log_step, hmc_move
from vae_repro.losses import beta_negative_elbo, by_autograd, gradient_pass
from vae_repro.model import VAE
from vae_repro.noise import Noise
from vae_repro.optimizers import Optimizer

Step = Callable[[torch.Tensor, torch.Tensor], None]
MakeStep = Callable[[VAE, Optimizer, Config, int, Noise], tuple[Step, dict]]
MCEM_INITIAL_STEP = 0.01  # HMC step size before tuning, as in the author's code


def whole_model_step(backward: Callable[[torch.Tensor, torch.Tensor], None], model: VAE, optimizer: Optimizer,
                     noise: Noise, n_samples: int) -> Step:
    """One step of every parameter on the gradient that `backward(x, eps)` writes, eps holding
    `n_samples` slices of noise per datapoint."""
    update = optimizer.updater(list(model.parameters()))

    def step(x: torch.Tensor, idx: torch.Tensor) -> None:
        backward(x, noise.latent(n_samples, x.shape[1]))
        update()
    return step


def aevb_step(model: VAE, optimizer: Optimizer, cfg: Config, n_train: int, noise: Noise) -> tuple[Step, dict]:
    """One step on the negative ELBO averaged over the batch, with L = train.mc_samples."""
    backward = gradient_pass(model, "negative_elbo_backward", str(cfg.train.gradients))
    return whole_model_step(backward, model, optimizer, noise, cfg.train.mc_samples), {}


def loss_step(loss: Callable[[VAE, torch.Tensor, torch.Tensor, AlgorithmConfig], torch.Tensor]) -> MakeStep:
    """The step maker of an objective written as a loss alone (losses.py): one step of every parameter
    on its gradient by autograd, the loss taking L = train.mc_samples slices of noise per datapoint."""
    def make_step(model: VAE, optimizer: Optimizer, cfg: Config, n_train: int, noise: Noise) -> tuple[Step, dict]:
        backward = by_autograd(model, lambda m, x, eps: loss(m, x, eps, cfg.algorithm), list(model.parameters()))
        return whole_model_step(backward, model, optimizer, noise, cfg.train.mc_samples), {}
    return make_step


def iwae_step(model: VAE, optimizer: Optimizer, cfg: Config, n_train: int, noise: Noise) -> tuple[Step, dict]:
    """One step on IWAE's loss with k = algorithm.k importance samples (Burda et al., 2015). At
    k = 1 the bound is the ELBO, and the step is AEVB's, whose KL in closed form is the better
    estimator of the same gradient."""
    if cfg.algorithm.k == 1:
        return aevb_step(model, optimizer, cfg, n_train, noise)
    backward = gradient_pass(model, "iwae_backward", str(cfg.train.gradients))
    return whole_model_step(backward, model, optimizer, noise, cfg.algorithm.k), {}


def wake_sleep_step(model: VAE, optimizer: Optimizer, cfg: Config, n_train: int, noise: Noise) -> tuple[Step, dict]:
    """Wake: z ~ q(z|x), one step of p(x|z) on -log p(x|z). Sleep: z ~ N(0, I) and x ~ p(x|z) from
    the updated p, one step of q(z|x) on -log q(z|x). As `step_wakesleep` in dpkingma/anglepy."""
    update_decoder, update_encoder = optimizer.updater(model.decoder_parameters()), optimizer.updater(
        model.encoder_parameters())
    wake, sleep = (gradient_pass(model, name, str(cfg.train.gradients)) for name in ("wake_backward", "sleep_backward"))

    def step(x: torch.Tensor, idx: torch.Tensor) -> None:
        wake(x, noise.latent(cfg.train.mc_samples, x.shape[1]))
        update_decoder()
        z = noise.latent(x.shape[1])
        sleep(model.dream(z, noise), z)
        update_encoder()
    return step, {}


def mcem_step(model: VAE, optimizer: Optimizer, cfg: Config, n_train: int, noise: Noise) -> tuple[Step, dict]:
    """Monte Carlo EM (the paper's appendix E, `step_batch_mcem` in dpkingma/anglepy): every training
    image keeps its own z, a chain started from the prior. E-step: one HMC move of the batch's
    chains on p(z|x) with one step size for all of a model's, tuned toward the target acceptance
    rate. M-step: algorithm.m_steps steps of p(x|z) on -log p(x|z) at those z."""
    chains = {"z": noise.latent(n_train), "log_step": torch.full((len(model.latent_dims),), math.log(MCEM_INITIAL_STEP),
                                                                 device=model.dec_out.weight.device)}
    algo = cfg.algorithm
    update_decoder = optimizer.updater(model.decoder_parameters())
    decoder_backward = gradient_pass(model, "decoder_backward", str(cfg.train.gradients))

    def step(x: torch.Tensor, idx: torch.Tensor) -> None:
        def log_density_and_grad(z):
            return model.log_joint_and_grad(z, x)

        rows = idx.unsqueeze(-1).expand(-1, -1, model.latent_dim)
        z = chains["z"].gather(1, rows)
        log_p, grad = log_density_and_grad(z)
        z, _, _, accepted = hmc_move(log_density_and_grad, z, log_p, grad, chains["log_step"].exp().view(-1, 1, 1),
                                     algo.hmc_leapfrog_steps, noise)
        chains["z"].scatter_(1, rows, z)
        chains["log_step"].copy_(adapt_log_step(chains["log_step"], accepted.float().mean(1), algo.hmc_target_accept))
        for _ in range(algo.m_steps):
            decoder_backward(z, x)
            update_decoder()
    return step, chains


@dataclass(frozen=True)
class Algorithm:
    """All that the rest of the code knows of an algorithm."""
    make_step: MakeStep  # its step, and the state it keeps
    passes: tuple[str, ...]  # the model's passes its step runs, which train.compile compiles
    has_encoder: bool = True  # it trains q(z|x), which the ELBO, the IWAE bounds and importance sampling need
    handwritten: bool = True  # its gradients have hand-written passes (train.gradients=handwritten)


# algorithm.name's choices; a new algorithm is its step above (or its loss in losses.py) and its line
# here, its name in config.AlgorithmName and conf/algorithm/NAME.yaml (docs/algorithms.md).
ALGORITHMS = {
    "aevb": Algorithm(aevb_step, ("negative_elbo_backward",)),
    "iwae": Algorithm(iwae_step, ("negative_elbo_backward", "iwae_backward")),  # k = 1 takes AEVB's
    "wake_sleep": Algorithm(wake_sleep_step, ("wake_backward", "dream", "sleep_backward")),
    "mcem": Algorithm(mcem_step, ("log_joint_and_grad", "decoder_backward"), has_encoder=False),
    "beta_vae": Algorithm(loss_step(beta_negative_elbo), ("forward",), handwritten=False),
}


def replayed_in_cuda_graph(step: Step, optimizer: Optimizer, noise: Noise) -> Step:
    """`step` on a CUDA device, captured once as a CUDA graph and replayed (train.cuda_graph). At
    batch 100 launching a kernel costs the host more than running it costs the GPU, and a step is
    some fifty kernels: a replay launches them all at once (on an H100, 3.3x the eager AEVB step of
    the MNIST model, 4.1x Frey Face's; docs/performance.md). Every model's generator is registered
    with the graph, so a replay draws the same noise as the eager step would, and the results are
    the same to the bit. The first call runs the step eagerly (it allocates the .grad tensors that
    the graph then writes into) and captures it; so does the first call after the step sizes
    change (the warm-up's end) or a model leaves the stack, which the graph holds as constants. The batch and its indices are copied into the graph's own inputs at every
    call."""
    graph, graph_key, graph_x, graph_idx = None, None, None, None

    def capture(x: torch.Tensor, idx: torch.Tensor) -> None:
        nonlocal graph, graph_key, graph_x, graph_idx
        side = torch.cuda.Stream()  # the eager run on a side stream, as torch.cuda.graph's documentation asks
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step(x, idx)
        torch.cuda.current_stream().wait_stream(side)
        graph_x, graph_idx, graph_key = x.clone(), idx.clone(), tuple(optimizer.lrs)
        graph = torch.cuda.CUDAGraph()
        for gen in noise.gens:
            graph.register_generator_state(gen)
        with torch.cuda.graph(graph):  # records the kernels without running them
            step(graph_x, graph_idx)

    def replay(x: torch.Tensor, idx: torch.Tensor) -> None:
        if graph is None or tuple(optimizer.lrs) != graph_key or x.shape != graph_x.shape:
            capture(x, idx)
            return
        graph_x.copy_(x)
        graph_idx.copy_(idx)
        graph.replay()
    return replay
