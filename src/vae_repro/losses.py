"""Each objective as a loss, a tensor [K] of one value per model of the stack, and its gradient by
autograd (train.gradients=autograd).

The hand-written passes of model.py differentiate these same losses (tests/test_model.py holds
them to each other), and stay the default where they exist: they skip autograd's bookkeeping. A new
objective needs no hand-written pass: it is a loss here, trained by `algorithms.loss_step`
(docs/algorithms.md). Losses are the mean over the batch; a model's loss depends on its own
parameters alone, so the gradient of their sum is each model's own.
"""
import math
from typing import Callable

import torch

from vae_repro.config import AlgorithmConfig
from vae_repro.likelihoods import LOG_2PI
from vae_repro.model import VAE, reparameterize


def own_latent(model: VAE) -> torch.Tensor | float:
    """1 on each model's own units of z, 0 on its padding ([K, 1, N_z]); 1 without padding."""
    return model.own_outputs[..., :model.latent_dim] if model.own_outputs is not None else 1.0


def negative_elbo(model: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """AEVB's loss: KL(q(z|x) || p(z)) - E_q[log p(x|z)], with the SGVB estimate of the latter."""
    log_px, kl = model(x, eps)
    return (kl - log_px).mean(1)


def beta_negative_elbo(model: VAE, x: torch.Tensor, eps: torch.Tensor, algorithm: AlgorithmConfig) -> torch.Tensor:
    """The beta-VAE's loss (Higgins et al., 2017): beta * KL - E_q[log p(x|z)]; beta = 1 is AEVB's."""
    log_px, kl = model(x, eps)
    return (algorithm.beta * kl - log_px).mean(1)


def iwae(model: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """IWAE's loss: -log (1/k) sum_i p(x, z_i) / q(z_i|x) with z_i = mean + std * eps_i, the k samples
    along eps's dim 1."""
    stack, k, batch = eps.shape[:3]
    mean, logvar = model.encode(x)
    z, _ = reparameterize(mean, logvar, eps)
    log_px = model.likelihood.log_prob(model.decode(z), x.repeat(1, k, 1) if k > 1 else x)
    log_q = -0.5 * (model.own_units.view(-1, 1, 1) * LOG_2PI + (logvar * own_latent(model)).sum(-1).unsqueeze(1)
                    + eps.square().sum(-1))
    log_w = (log_px + model.log_prior(z)).view(stack, k, batch) - log_q
    return (math.log(k) - torch.logsumexp(log_w, 1)).mean(1)


def reconstruction(model: VAE, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) of the pairs (z, x): the wake phase's and Monte Carlo EM's M-step's loss."""
    return -model.likelihood.log_prob(model.decode(z), x).mean(1)


def wake(model: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The wake phase's loss: -E_q[log p(x|z)], z = mean + std * eps from q(z|x) taken as data."""
    n_samples = eps.shape[1]
    with torch.no_grad():
        z, _ = reparameterize(*model.encode(x), eps)
    return reconstruction(model, z, x.repeat(1, n_samples, 1) if n_samples > 1 else x)


def sleep(model: VAE, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The sleep phase's loss: -log q(z|x) of dreamt pairs (z, x), in each model's own units of z."""
    mean, logvar = model.encode(x)
    per_unit = logvar + (z - mean).square() * torch.exp(-logvar) + LOG_2PI
    return 0.5 * (per_unit * own_latent(model)).sum(-1).mean(1)


# Each hand-written pass of model.py: the loss it differentiates, and the parameters it trains.
PASS_LOSSES: dict[str, tuple[Callable[..., torch.Tensor], str]] = {
    "negative_elbo_backward": (negative_elbo, "parameters"),
    "iwae_backward": (iwae, "parameters"),
    "wake_backward": (wake, "decoder_parameters"),
    "sleep_backward": (sleep, "encoder_parameters"),
    "decoder_backward": (reconstruction, "decoder_parameters"),
}


def by_autograd(model: VAE, loss: Callable[..., torch.Tensor], params: list[torch.nn.Parameter]
                ) -> Callable[..., None]:
    """A pass that writes the gradient of loss(model, *inputs), summed over the stack, into the .grad
    of `params`, the other parameters' .grad None: as a hand-written pass does."""
    def backward(*inputs: torch.Tensor) -> None:
        for p in model.parameters():
            p.grad = None
        with torch.enable_grad():
            torch.autograd.backward(loss(model, *inputs).sum(), inputs=params)
    return backward


def gradient_pass(model: VAE, name: str, gradients: str) -> Callable[..., None]:
    """The model's hand-written pass `name`, or with gradients="autograd" its loss's gradient by autograd."""
    if gradients != "autograd":
        return getattr(model, name)
    loss, trains = PASS_LOSSES[name]
    return by_autograd(model, loss, list(getattr(model, trains)()))
