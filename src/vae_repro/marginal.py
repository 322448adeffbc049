"""Estimates of the marginal log-likelihood log p(x) of each row of x under a generative model.

Both take a model with `latent_dim`, `encode(x)` (HMC starts its chains from the best of prior
draws and the encoder's mean; importance sampling proposes from q(z|x)), `log_joint(z, x)`,
and for HMC `log_joint_and_grad(z, x)`: the VAE, or any model with the same methods (the
tests use a linear-Gaussian one whose log p(x) is known exactly). All datapoints are handled
as one batch of independent chains or samples.
"""
import math
from functools import partial
from typing import Callable

import torch

from vae_repro.config import Config, marginal_samples
from vae_repro.hmc import adapt_log_step, hmc_move
from vae_repro.likelihoods import LOG_2PI

HMC_TARGET_ACCEPT = 0.9
HMC_INITIAL_STEP = 0.1
PRIOR_DRAWS = 100  # candidate starting points of each HMC chain
ROWS_PER_PASS = 20_000  # samples x datapoints per decoder pass: bounded memory


def _log_joint_per_draw(model, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x, z) as [K, B] for K draws z [K, B, N_z] of each of the B rows of x, in one decoder pass."""
    return model.log_joint(z.flatten(0, 1), x.repeat(len(z), 1)).view(len(z), len(x))


def _chain_starts(model, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """For each row of x, the z with the highest p(x, z) among PRIOR_DRAWS draws from N(0, I) and
    the encoder's mean (an untrained encoder's mean is just one more guess)."""
    best = []
    for chunk in x.split(max(1, ROWS_PER_PASS // (PRIOR_DRAWS + 1))):
        z = torch.randn(PRIOR_DRAWS, len(chunk), model.latent_dim, generator=gen, dtype=x.dtype, device=x.device)
        z = torch.cat([z, model.encode(chunk)[0].unsqueeze(0)])
        log_joint = _log_joint_per_draw(model, z, chunk)
        best.append(z[log_joint.argmax(0), torch.arange(len(chunk), device=x.device)])
    return torch.cat(best)


@torch.no_grad()
def hmc_log_marginal(model, x: torch.Tensor, n_samples: int, leapfrog_steps: int, burn_in: int,
                     gen: torch.Generator) -> torch.Tensor:
    """The paper's estimator (appendix D): HMC chains on p(z|x), `burn_in` moves with step sizes
    tuned per chain toward 90% acceptance, then `n_samples` kept moves with those step sizes fixed.
    Each chain starts at the best of PRIOR_DRAWS draws from the prior and the encoder's mean: the
    posteriors of these models have several modes, and a chain started at one prior draw often
    stays in a minor one, which puts the estimate tens of nats low. A Gaussian q(z) with full
    covariance is fitted to the first half of each chain's samples, and 1/p(x) is estimated by
    the mean of q(z)/p(x, z) over the second half.
    The chain's squared step size is added to q's variances: a chain that was stuck while q was
    fitted would otherwise give q no width, and a later move an estimate without bound."""
    def log_density_and_grad(z):
        return model.log_joint_and_grad(z, x)

    z = _chain_starts(model, x, gen)
    log_p, grad = log_density_and_grad(z)
    log_step = torch.full((len(x), 1), math.log(HMC_INITIAL_STEP), dtype=x.dtype, device=x.device)
    for _ in range(burn_in):
        z, log_p, grad, accepted = hmc_move(log_density_and_grad, z, log_p, grad, log_step.exp(), leapfrog_steps, gen)
        log_step = adapt_log_step(log_step, accepted.unsqueeze(-1), HMC_TARGET_ACCEPT)
    samples, log_joints = [], []
    for _ in range(n_samples):
        z, log_p, grad, _ = hmc_move(log_density_and_grad, z, log_p, grad, log_step.exp(), leapfrog_steps, gen)
        samples.append(z)
        log_joints.append(log_p)
    half = n_samples // 2
    fit, held_out = torch.stack(samples[:half]), torch.stack(samples[half:])  # [S, B, N_z]
    mean = fit.mean(0)
    centred = fit - mean
    cov = torch.einsum("sbi,sbj->bij", centred, centred) / max(half - 1, 1)
    cov = cov + torch.exp(2 * log_step).unsqueeze(-1) * torch.eye(model.latent_dim, dtype=x.dtype, device=x.device)
    log_q = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(held_out)  # [S, B]
    log_ratio = log_q - torch.stack(log_joints[half:])
    return -(torch.logsumexp(log_ratio, 0) - math.log(len(held_out)))


@torch.no_grad()
def is_log_marginal(model, x: torch.Tensor, n_samples: int, gen: torch.Generator) -> torch.Tensor:
    """log of the mean over `n_samples` draws z ~ q(z|x) of p(x, z) / q(z|x): a lower bound on log p(x)
    in expectation that tightens as n_samples grows, equal to the ELBO's expectation at 1."""
    estimates = []
    for chunk in x.split(max(1, ROWS_PER_PASS // n_samples)):
        mean, logvar = model.encode(chunk)
        eps = torch.randn(n_samples, *mean.shape, generator=gen, dtype=mean.dtype, device=x.device)
        z = mean + torch.exp(0.5 * logvar) * eps  # [K, B, N_z]
        log_q = -0.5 * (LOG_2PI + logvar + eps.square()).sum(-1)
        estimates.append(torch.logsumexp(_log_joint_per_draw(model, z, chunk) - log_q, 0) - math.log(n_samples))
    return torch.cat(estimates)


Estimator = Callable[[object, torch.Tensor, torch.Generator], torch.Tensor]


def make_estimator(cfg: Config) -> Estimator | None:
    """`eval.marginal`'s estimator as a function of (model, x, gen), or None for `none`."""
    name = str(cfg.eval.marginal)
    if name == "hmc":
        return partial(hmc_log_marginal, n_samples=marginal_samples(cfg),
                       leapfrog_steps=cfg.eval.marginal_leapfrog_steps, burn_in=cfg.eval.marginal_burn_in)
    if name == "is":
        return partial(is_log_marginal, n_samples=marginal_samples(cfg))
    return None
