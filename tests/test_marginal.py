"""HMC and the marginal likelihood estimators, against densities known exactly."""
import math

import pytest
import torch

from vae_repro.hmc import adapt_log_step, hmc_move
from vae_repro.marginal import hmc_log_marginal, is_log_marginal
from vae_repro.model import VAE
from vae_repro.noise import Noise


class LinearGaussian:
    """z ~ N(0, I), x | z ~ N(A z + b, s^2 I): log p(x) = log N(x; b, A A^T + s^2 I) in closed form,
    and p(z|x) is Gaussian, so `encode` can return a proposal near it."""

    def __init__(self, latent_dim=2, data_dim=5, noise_std=0.5, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.latent_dim, self.latent_dims = latent_dim, [latent_dim]  # a stack of one
        self.a = torch.randn(data_dim, latent_dim, generator=gen, dtype=torch.float64)
        self.b = torch.randn(data_dim, generator=gen, dtype=torch.float64)
        self.var = noise_std ** 2

    def log_joint(self, z, x):
        residual = x - z @ self.a.T - self.b
        return (-0.5 * (residual.square().sum(-1) / self.var + x.shape[-1] * math.log(2 * math.pi * self.var))
                - 0.5 * (z.square().sum(-1) + self.latent_dim * math.log(2 * math.pi)))

    def log_joint_and_grad(self, z, x):
        residual = x - z @ self.a.T - self.b
        return self.log_joint(z, x), residual @ self.a / self.var - z

    def exact_log_px(self, x):
        cov = self.a @ self.a.T + self.var * torch.eye(len(self.b), dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def posterior(self, x):
        precision = self.a.T @ self.a / self.var + torch.eye(self.latent_dim, dtype=torch.float64)
        cov = torch.linalg.inv(precision)
        return (x - self.b) @ self.a @ cov.T / self.var, cov

    def encode(self, x):
        """A diagonal proposal: the exact posterior mean, and twice the posterior's marginal variances."""
        mean, cov = self.posterior(x)
        return mean, torch.log(2 * torch.diagonal(cov)).expand_as(mean)

    def sample_x(self, n, seed=1):
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.latent_dim, generator=gen, dtype=torch.float64)
        return z @ self.a.T + self.b + math.sqrt(self.var) * torch.randn(n, len(self.b), generator=gen,
                                                                           dtype=torch.float64)


def gaussian_target(mean, cov):
    precision = torch.linalg.inv(cov)

    def log_density_and_grad(z):
        d = z - mean
        return -0.5 * ((d @ precision) * d).sum(-1), -(d @ precision)
    return log_density_and_grad


def test_hmc_leaves_a_correlated_gaussian_invariant_and_tunes_its_step():
    mean, cov = torch.tensor([1.0, -2.0]), torch.tensor([[1.0, 0.8], [0.8, 1.0]]) * 0.04
    target = gaussian_target(mean, cov)
    gen = torch.Generator().manual_seed(0)
    noise = Noise([gen], [2])
    z = torch.randn(1, 4000, 2, generator=gen)
    log_p, grad = target(z)
    log_step = torch.full((1, 4000, 1), math.log(1.0))  # far too large at first: almost all rejected
    for _ in range(150):
        z, log_p, grad, accepted = hmc_move(target, z, log_p, grad, log_step.exp(), 4, noise)
        log_step = adapt_log_step(log_step, accepted.unsqueeze(-1), 0.9)
    rates = [hmc_move(target, z, log_p, grad, log_step.exp(), 4, noise)[3].float().mean().item() for _ in range(20)]
    assert 0.8 < sum(rates) / len(rates) < 0.97
    assert torch.allclose(z[0].mean(0), mean, atol=0.02)
    assert torch.allclose(torch.cov(z[0].T), cov, atol=0.005)


def test_hmc_rejects_a_proposal_with_a_non_finite_density():
    def target(z):
        bad = z[..., 0] > 0.5
        return torch.where(bad, torch.nan, -0.5 * z.square().sum(-1)), -z
    z = torch.full((1, 10, 1), 0.4)
    new_z, _, _, accepted = hmc_move(target, z, *target(z), torch.tensor(0.5), 1,
                                     Noise([torch.Generator().manual_seed(0)], [1]))
    assert torch.equal(new_z[~accepted], z[~accepted]) and (new_z <= 0.5).all()


def test_hmc_estimate_matches_the_exact_marginal_of_a_linear_gaussian_model():
    model = LinearGaussian()
    x = model.sample_x(200)
    estimate = hmc_log_marginal(model, x[None], n_samples=50, leapfrog_steps=4, burn_in=50,
                                noise=Noise.seeded([0], [2]))[0]
    error = estimate - model.exact_log_px(x)
    # 25 samples to fit q(z) and 25 to estimate, from autocorrelated chains: a little low on
    # average, and noisy per datapoint.
    assert error.mean().abs() < 0.25
    assert error.abs().median() < 0.3


def test_is_estimate_matches_the_exact_marginal_of_a_linear_gaussian_model():
    model = LinearGaussian()
    x = model.sample_x(200)
    estimate = is_log_marginal(model, x[None], n_samples=1000, noise=Noise.seeded([0], [2]))[0]
    error = estimate - model.exact_log_px(x)
    assert error.mean().abs() < 0.01 and error.abs().max() < 0.1


@pytest.fixture(scope="module")
def small_vae_and_data():
    torch.manual_seed(0)
    model = VAE(input_dim=20, hidden_sizes=16, latent_dims=2, init_std=0.5)
    x = torch.rand(300, 20, generator=torch.Generator().manual_seed(1)).round()
    return model, x


def test_is_estimate_is_above_the_elbo_and_tightens_with_more_samples(small_vae_and_data):
    model, x = small_vae_and_data
    with torch.no_grad():
        log_px, kl = model(x[None], torch.randn(1, 100, len(x), 2, generator=torch.Generator().manual_seed(2)))
    elbo = (log_px - kl).mean().item()
    by_k = [is_log_marginal(model, x[None], k, Noise.seeded([3], [2])).mean().item() for k in (1, 10, 100)]
    assert by_k[0] == pytest.approx(elbo, abs=0.5)  # one importance sample is the ELBO's estimate
    assert elbo < by_k[1] < by_k[2]
