"""Hybrid Monte Carlo (Duane et al., 1987) on a batch of independent chains, one per row of z:
[K, B, N_z] for a stack of K models, each drawing its noise from its own generator.

Used twice, as in the paper: by Monte Carlo EM for its E-step, and by the marginal
likelihood estimator of appendix D. `log_density_and_grad(z)` returns the log-density of
each row (up to a constant) and its gradient with respect to z.
"""
from typing import Callable

import torch

from vae_repro.noise import Noise

LogDensityAndGrad = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# Change of log step size per move and unit of (acceptance - target): a chain's step grows a little
# after each acceptance and shrinks more after each rejection, and settles where the acceptance
# rate is the target.
ADAPT_RATE = 0.25


def hmc_move(log_density_and_grad: LogDensityAndGrad, z: torch.Tensor, log_p: torch.Tensor, grad: torch.Tensor,
             step_size: torch.Tensor, leapfrog_steps: int,
             noise: Noise) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One HMC move of every chain: a fresh N(0, I) momentum, `leapfrog_steps` leapfrog steps of size
    `step_size` (a scalar, one per model as [K, 1, 1], or one per chain as [K, B, 1]), then a Metropolis-Hastings choice
    per chain. `log_p` and `grad` are the density and gradient at z. Returns the chains' new z,
    log_p and grad, and which chains accepted their proposal."""
    momentum = noise.latent(*z.shape[1:-1], dtype=z.dtype)
    kinetic = 0.5 * momentum.square().sum(-1)
    new_z, new_log_p, new_grad = z, log_p, grad
    momentum = momentum + 0.5 * step_size * new_grad
    for i in range(leapfrog_steps):
        new_z = new_z + step_size * momentum
        new_log_p, new_grad = log_density_and_grad(new_z)
        momentum = momentum + (0.5 if i == leapfrog_steps - 1 else 1.0) * step_size * new_grad
    log_accept = new_log_p - log_p - 0.5 * momentum.square().sum(-1) + kinetic
    uniform = noise.uniform(*log_p.shape[1:], dtype=z.dtype)
    accepted = uniform.log() < log_accept  # False where the proposal is NaN
    keep = accepted.unsqueeze(-1)
    return (torch.where(keep, new_z, z), torch.where(accepted, new_log_p, log_p), torch.where(keep, new_grad, grad),
            accepted)


def adapt_log_step(log_step: torch.Tensor, acceptance: torch.Tensor, target: float) -> torch.Tensor:
    """The log step size moved toward the target acceptance rate: per chain (acceptance is each
    chain's 0 or 1) or for all chains at once (acceptance is their mean)."""
    return log_step + ADAPT_RATE * (acceptance.to(log_step.dtype) - target)
