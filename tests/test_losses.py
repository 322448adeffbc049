import pytest
import torch

from vae_repro.likelihoods import BernoulliPixels, GaussianPixels
from vae_repro.losses import PASS_LOSSES, by_autograd, iwae, negative_elbo
from vae_repro.model import VAE

LATENT_DIMS = [2, 4]  # a stack whose first model is padded


def inputs_of(name: str, stack: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    own = (torch.arange(4) < torch.tensor(LATENT_DIMS[:stack]).unsqueeze(-1)).double()  # [K, N_z]
    x = torch.rand(stack, 5, 12, generator=gen, dtype=torch.float64)
    eps = torch.randn(stack, 3, 5, 4, generator=gen, dtype=torch.float64) * own.view(stack, 1, 1, 4)
    z = torch.randn(stack, 5, 4, generator=gen, dtype=torch.float64) * own.unsqueeze(1)
    return {"sleep_backward": (torch.bernoulli(x, generator=gen), z), "decoder_backward": (z, x)}.get(name, (x, eps))


@pytest.mark.parametrize("likelihood", [BernoulliPixels(), GaussianPixels()], ids=["bernoulli", "gaussian"])
@pytest.mark.parametrize("hidden", [7, [7, 5], [6, 5, 4]], ids=["1 layer", "2 layers", "3 layers"])
@pytest.mark.parametrize("stack", [1, 2])
@pytest.mark.parametrize("name", list(PASS_LOSSES))
def test_each_hand_written_pass_is_its_loss_by_autograd(name, stack, hidden, likelihood):
    """At any depth, for both likelihoods and a stack with a padded model: each hand-written pass
    gives autograd's gradient of its loss in losses.py, and leaves the same parameters untouched."""
    model = VAE(12, hidden, LATENT_DIMS[-stack:] if stack == 1 else LATENT_DIMS, init_std=0.5, likelihood=likelihood,
                seeds=list(range(stack))).double()
    inputs = inputs_of(name, stack, torch.Generator().manual_seed(0))
    loss, trains = PASS_LOSSES[name]
    by_autograd(model, loss, list(getattr(model, trains)()))(*inputs)
    expected = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    for p in model.parameters():  # stale gradients must not survive
        p.grad = torch.ones_like(p)
    getattr(model, name)(*inputs)
    for n, p in model.named_parameters():
        if expected[n] is None:
            assert p.grad is None, n
        else:
            torch.testing.assert_close(p.grad, expected[n], rtol=1e-9, atol=1e-12, msg=n)


def test_iwae_loss_with_one_sample_is_the_negative_elbo_with_a_sampled_kl():
    torch.manual_seed(0)
    model = VAE(12, [7, 5], 3, init_std=0.5).double()
    x, eps = torch.rand(1, 6, 12, dtype=torch.float64), torch.randn(1, 1, 6, 3, dtype=torch.float64)
    mean, logvar = model.encode(x)
    z = mean + torch.exp(0.5 * logvar) * eps[:, 0]
    log_q = torch.distributions.Normal(mean, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_px = model.likelihood.log_prob(model.decode(z), x)
    torch.testing.assert_close(iwae(model, x, eps), -(log_px + log_p - log_q).mean(1))
    assert iwae(model, x, eps).shape == negative_elbo(model, x, eps).shape == (1,)
