"""The training algorithms of Figures 2 and 3, each one step function chosen once per job.

A step takes a minibatch x ([B, D], values in [0, 1]), the indices of its images in the
training set, and the job's random generator, from which it draws all of its noise, and
updates the model's parameters. Every algorithm trains the same VAE module (Monte Carlo EM leaves its
encoder untouched), so evaluation, checkpoints and `load_run` treat them alike. A factory
also returns the algorithm's own state beyond the model and optimizer (Monte Carlo EM's
chains), a dict of tensors that the step updates in place and the checkpoint keeps.
"""
import math
from typing import Callable

import torch

from vae_repro.adagrad import Adagrad
from vae_repro.config import Config
from vae_repro.hmc import adapt_log_step, hmc_move
from vae_repro.model import VAE

Step = Callable[[torch.Tensor, torch.Tensor, torch.Generator], None]
MCEM_INITIAL_STEP = 0.01  # HMC step size before tuning, as in the author's code


def aevb_step(model: VAE, optimizer: Adagrad, cfg: Config, n_train: int, gen: torch.Generator) -> tuple[Step, dict]:
    """One Adagrad step on the negative ELBO averaged over the batch, with L = train.mc_samples."""
    update = optimizer.updater(list(model.parameters()))

    def step(x: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> None:
        eps = torch.randn(cfg.train.mc_samples, len(x), model.latent_dim, generator=gen, device=x.device)
        model.negative_elbo_backward(x, eps)
        update()
    return step, {}


def wake_sleep_step(model: VAE, optimizer: Adagrad, cfg: Config, n_train: int,
                    gen: torch.Generator) -> tuple[Step, dict]:
    """Wake: z ~ q(z|x), one step of p(x|z) on -log p(x|z). Sleep: z ~ N(0, I) and x ~ p(x|z) from
    the updated p, one step of q(z|x) on -log q(z|x). As `step_wakesleep` in dpkingma/anglepy."""
    update_decoder, update_encoder = optimizer.updater(model.decoder_parameters()), optimizer.updater(
        model.encoder_parameters())

    def step(x: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> None:
        eps = torch.randn(cfg.train.mc_samples, len(x), model.latent_dim, generator=gen, device=x.device)
        model.wake_backward(x, eps)
        update_decoder()
        z = torch.randn(len(x), model.latent_dim, generator=gen, device=x.device)
        model.sleep_backward(model.dream(z, gen), z)
        update_encoder()
    return step, {}


def mcem_step(model: VAE, optimizer: Adagrad, cfg: Config, n_train: int, gen: torch.Generator) -> tuple[Step, dict]:
    """Monte Carlo EM (the paper's appendix E, `step_batch_mcem` in dpkingma/anglepy): every training
    image keeps its own z, a chain started from the prior. E-step: one HMC move of the batch's
    chains on p(z|x) with one step size for all, tuned toward the target acceptance rate. M-step:
    algorithm.m_steps Adagrad steps of p(x|z) on -log p(x|z) at those z."""
    device = model.dec_out.weight.device
    chains = {"z": torch.randn(n_train, model.latent_dim, generator=gen, device=device),
              "log_step": torch.tensor(math.log(MCEM_INITIAL_STEP), device=device)}
    algo = cfg.algorithm
    update_decoder = optimizer.updater(model.decoder_parameters())

    def step(x: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> None:
        def log_density_and_grad(z):
            return model.log_joint_and_grad(z, x)

        z = chains["z"][idx]
        log_p, grad = log_density_and_grad(z)
        z, _, _, accepted = hmc_move(log_density_and_grad, z, log_p, grad, chains["log_step"].exp(),
                                     algo.hmc_leapfrog_steps, gen)
        chains["z"][idx] = z
        chains["log_step"].copy_(adapt_log_step(chains["log_step"], accepted.float().mean(), algo.hmc_target_accept))
        for _ in range(algo.m_steps):
            model.decoder_backward(z, x)
            update_decoder()
    return step, chains


STEPS = {"aevb": aevb_step, "wake_sleep": wake_sleep_step, "mcem": mcem_step}
