"""Estimates of the marginal log-likelihood log p(x) of each row of x under a generative model.

Both take a stack of models with `latent_dim`, `latent_dims` (each model's own), `encode(x)`
(HMC starts its chains from the best of prior draws and the encoder's mean; importance
sampling proposes from q(z|x)), `log_joint(z, x)`,
and for HMC `log_joint_and_grad(z, x)`: the VAE, or any model with the same methods (the
tests use a linear-Gaussian one whose log p(x) is known exactly). All datapoints are handled
as one batch of independent chains or samples, each model's drawn from its own generator.
"""
import math
from functools import partial
from typing import Callable

import torch

from vae_repro.config import Config, marginal_samples
from vae_repro.hmc import adapt_log_step, hmc_move
from vae_repro.likelihoods import LOG_2PI
from vae_repro.model import reparameterize
from vae_repro.noise import Noise

HMC_TARGET_ACCEPT = 0.9
HMC_INITIAL_STEP = 0.1
PRIOR_DRAWS = 100  # candidate starting points of each HMC chain
ROWS_PER_PASS = 20_000  # samples x datapoints per decoder pass: bounded memory


def _log_joint_per_draw(model, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x, z) as [K, S, B] for S draws z [K, S, B, N_z] of each of the B rows of x, in one decoder pass."""
    stack, draws, batch = z.shape[:3]
    return model.log_joint(z.flatten(1, 2), x.repeat(1, draws, 1)).view(stack, draws, batch)


def _chain_starts(model, x: torch.Tensor, noise: Noise) -> torch.Tensor:
    """For each row of x, the z with the highest p(x, z) among PRIOR_DRAWS draws from N(0, I) and
    the encoder's mean (an untrained encoder's mean is just one more guess)."""
    best = []
    for chunk in x.split(max(1, ROWS_PER_PASS // ((PRIOR_DRAWS + 1) * len(x))), dim=1):
        z = noise.latent(PRIOR_DRAWS, chunk.shape[1], dtype=x.dtype)
        z = torch.cat([z, model.encode(chunk)[0].unsqueeze(1)], dim=1)
        choice = _log_joint_per_draw(model, z, chunk).argmax(1)  # [K, B]
        best.append(z.gather(1, choice[:, None, :, None].expand(-1, 1, -1, z.shape[-1])).squeeze(1))
    return torch.cat(best, dim=1)


@torch.no_grad()
def hmc_log_marginal(model, x: torch.Tensor, n_samples: int, leapfrog_steps: int, burn_in: int,
                     noise: Noise) -> torch.Tensor:
    """The paper's estimator (appendix D): HMC chains on p(z|x), `burn_in` moves with step sizes
    tuned per chain toward 90% acceptance, then `n_samples` kept moves with those step sizes fixed.
    Each chain starts at the best of PRIOR_DRAWS draws from the prior and the encoder's mean: the
    posteriors of these models have several modes, and a chain started at one prior draw often
    stays in a minor one, which puts the estimate tens of nats low. A Gaussian q(z) with full
    covariance is fitted to the first half of each chain's samples, and 1/p(x) is estimated by
    the mean of q(z)/p(x, z) over the second half.
    The chain's squared step size is added to q's variances: a chain that was stuck while q was
    fitted would otherwise give q no width, and a later move an estimate without bound.
    x is [K, B, D] for a stack of K models; returns [K, B]."""
    def log_density_and_grad(z):
        return model.log_joint_and_grad(z, x)

    z = _chain_starts(model, x, noise)
    log_p, grad = log_density_and_grad(z)
    log_step = torch.full((*x.shape[:2], 1), math.log(HMC_INITIAL_STEP), dtype=x.dtype, device=x.device)
    for _ in range(burn_in):
        z, log_p, grad, accepted = hmc_move(log_density_and_grad, z, log_p, grad, log_step.exp(), leapfrog_steps,
                                            noise)
        log_step = adapt_log_step(log_step, accepted.unsqueeze(-1), HMC_TARGET_ACCEPT)
    samples, log_joints = [], []
    for _ in range(n_samples):
        z, log_p, grad, _ = hmc_move(log_density_and_grad, z, log_p, grad, log_step.exp(), leapfrog_steps, noise)
        samples.append(z)
        log_joints.append(log_p)
    half = n_samples // 2
    samples, log_joints = torch.stack(samples), torch.stack(log_joints)  # [S, K, B, N_z], [S, K, B]
    estimates = []
    for k, units in enumerate(model.latent_dims):  # q(z) in the model's own units of z
        fit, held_out = samples[:half, k, :, :units], samples[half:, k, :, :units]
        mean = fit.mean(0)
        centred = fit - mean
        cov = torch.einsum("sbi,sbj->bij", centred, centred) / max(half - 1, 1)
        cov = cov + torch.exp(2 * log_step[k]).unsqueeze(-1) * torch.eye(units, dtype=x.dtype, device=x.device)
        log_q = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(held_out)  # [S, B]
        log_ratio = log_q - log_joints[half:, k]
        estimates.append(-(torch.logsumexp(log_ratio, 0) - math.log(len(held_out))))
    return torch.stack(estimates)


@torch.no_grad()
def is_log_marginal(model, x: torch.Tensor, n_samples: int, noise: Noise) -> torch.Tensor:
    """log of the mean over `n_samples` draws z ~ q(z|x) of p(x, z) / q(z|x): a lower bound on log p(x)
    in expectation that tightens as n_samples grows, equal to the ELBO's expectation at 1.
    x is [K, B, D] for a stack of K models; returns [K, B]."""
    units = torch.tensor(model.latent_dims, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    estimates = []
    for chunk in x.split(max(1, ROWS_PER_PASS // (n_samples * len(x))), dim=1):
        mean, logvar = model.encode(chunk)
        eps = noise.latent(n_samples, chunk.shape[1], dtype=x.dtype)  # zero in the padding, as logvar is
        z, _ = reparameterize(mean, logvar, eps)
        log_q = -0.5 * (units * LOG_2PI + logvar.sum(-1).unsqueeze(1) + eps.square().sum(-1))  # [K, S, B]
        log_joint = _log_joint_per_draw(model, z.unflatten(1, (n_samples, -1)), chunk)
        estimates.append(torch.logsumexp(log_joint - log_q, 1) - math.log(n_samples))
    return torch.cat(estimates, dim=1)


Estimator = Callable[[object, torch.Tensor, Noise], torch.Tensor]


def make_estimator(cfg: Config) -> Estimator | None:
    """`eval.marginal`'s estimator as a function of (model, x, noise), or None for `none`."""
    name = str(cfg.eval.marginal)
    if name == "hmc":
        return partial(hmc_log_marginal, n_samples=marginal_samples(cfg),
                       leapfrog_steps=cfg.eval.marginal_leapfrog_steps, burn_in=cfg.eval.marginal_burn_in)
    if name == "is":
        return partial(is_log_marginal, n_samples=marginal_samples(cfg))
    return None
