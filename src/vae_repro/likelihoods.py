"""The decoder's p(x|z) per pixel, given the decoder's output layer `out` and data x in [0, 1].

Each likelihood gives the log-density, the gradient of the negative log-density with respect
to `out` (for the hand-written backward passes), both at once (for HMC), the mean (for
pictures) and a sample (for wake-sleep's dreams): the protocol `Likelihood`. The model holds
one, chosen by `model.likelihood` once, when it is built; a new likelihood is a class here and
its line in LIKELIHOODS (and its name in config.Likelihood).
The gradients may be written over `out`, which their callers do not need after them. Tensors
have a stack of models as their first dimension; sampling draws each model's noise from its own
generator (noise.py).
"""
import math
from typing import Protocol

import torch
import torch.nn.functional as F

from vae_repro.config import ModelConfig
from vae_repro.noise import Noise

LOG_2PI = math.log(2 * math.pi)


class Likelihood(Protocol):
    outputs_per_pixel: int  # the decoder's outputs per pixel of x

    @classmethod
    def from_config(cls, model: ModelConfig) -> "Likelihood": ...
    def log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor: ...
    def nll_grad(self, out: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor: ...
    def nll_backward(self, out: torch.Tensor, x: torch.Tensor, scale: float
                     ) -> tuple[torch.Tensor | None, torch.Tensor]: ...
    def mean(self, out: torch.Tensor) -> torch.Tensor: ...
    def sample(self, out: torch.Tensor, noise: Noise) -> torch.Tensor: ...


class BernoulliPixels:
    """One logit per pixel; grey levels in [0, 1] act as probabilities (the paper's MNIST model)."""

    outputs_per_pixel = 1

    @classmethod
    def from_config(cls, model: ModelConfig) -> "BernoulliPixels":
        return cls()

    def log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # log p = x * out - softplus(out) per pixel: two passes over `out` where PyTorch's
        # binary_cross_entropy_with_logits makes five.
        return torch.linalg.vecdot(x, out) - F.softplus(out).sum(-1)

    def nll_grad(self, out: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
        """The gradient of scale * -sum log p(x|z) with respect to `out`, written over `out`."""
        return out.sigmoid_().sub_(x).mul_(scale)

    def nll_backward(self, out: torch.Tensor, x: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """-log p(x|z) of each row, and the gradient of scale * their sum with respect to `out`, written
        over `out`."""
        nll = -self.log_prob(out, x)
        return nll, self.nll_grad(out, x, scale)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)

    def sample(self, out: torch.Tensor, noise: Noise) -> torch.Tensor:
        probs = torch.sigmoid(out)
        # u < p is a Bernoulli(p) draw; on a CPU it costs a quarter of torch.bernoulli.
        return noise.uniform(*probs.shape[1:], dtype=probs.dtype).lt_(probs)


class GaussianPixels:
    """A mean through a sigmoid and a log variance per pixel (the paper's Frey Face model,
    appendix C.2). `logvar_min` floors the log variance, for pixels that never vary."""

    outputs_per_pixel = 2

    def __init__(self, logvar_min: float | None = None):
        self.logvar_min = logvar_min

    @classmethod
    def from_config(cls, model: ModelConfig) -> "GaussianPixels":
        return cls(model.decoder_logvar_min)

    def _mean_logvar(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean_pre, logvar = out.chunk(2, dim=-1)
        if self.logvar_min is not None:
            logvar = logvar.clamp(min=self.logvar_min)
        return torch.sigmoid(mean_pre), logvar

    def log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mean, logvar = self._mean_logvar(out)
        scaled_sq = torch.linalg.vecdot((x - mean).square_(), torch.exp(-logvar))
        return -0.5 * (x.shape[-1] * LOG_2PI + logvar.sum(-1) + scaled_sq)

    def nll_grad(self, out: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
        """The gradient of scale * -sum log p(x|z) with respect to `out`."""
        return self.nll_backward(out, x, scale, with_nll=False)[1]

    def nll_backward(self, out: torch.Tensor, x: torch.Tensor, scale: float,
                     with_nll: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        """-log p(x|z) of each row (unless `with_nll` is false), and the gradient of scale * their
        sum with respect to `out`, in few passes: with r = mean - x and w = scale * r / var,
        d/d(mean_pre) = w * mean * (1 - mean) and d/d(logvar) = 0.5 * scale - 0.5 * r * w."""
        mean, logvar = self._mean_logvar(out)
        residual = mean - x
        grad = torch.empty_like(out)
        d_mean_pre, d_logvar = grad.chunk(2, dim=-1)  # written in place: no concatenation
        torch.mul(residual, torch.rsub(logvar, math.log(scale)).exp_(), out=d_mean_pre)  # w
        nll = (0.5 * (x.shape[-1] * LOG_2PI + logvar.sum(-1) + torch.linalg.vecdot(residual, d_mean_pre) / scale)
               if with_nll else None)
        d_logvar.fill_(0.5 * scale).addcmul_(residual, d_mean_pre, value=-0.5)
        d_mean_pre.mul_(mean)
        d_mean_pre.addcmul_(d_mean_pre, mean, value=-1.0)
        if self.logvar_min is not None:  # no gradient below the floor, as for a clamp
            d_logvar.masked_fill_(out.chunk(2, dim=-1)[1] <= self.logvar_min, 0.0)
        return nll, grad

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self._mean_logvar(out)[0]

    def sample(self, out: torch.Tensor, noise: Noise) -> torch.Tensor:
        mean, logvar = self._mean_logvar(out)
        return mean + torch.exp(0.5 * logvar) * noise.normal(*mean.shape[1:], dtype=mean.dtype)


# model.likelihood's choices.
LIKELIHOODS: dict[str, type[Likelihood]] = {"bernoulli": BernoulliPixels, "gaussian": GaussianPixels}
