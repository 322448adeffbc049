"""The paper's VAE: one hidden layer each way, Gaussian q(z|x), a per-pixel p(x|z) (Bernoulli
or Gaussian, see likelihoods.py), and its ELBO.

Besides the autograd forward pass, the model has hand-written backward passes for the
training steps (at batch 100 on a CPU, autograd's bookkeeping costs about a fifth of a
step): the negative ELBO for AEVB, and the wake and sleep losses of wake-sleep. Each writes
its gradient into .grad of the parameters it trains and leaves the others' .grad as None;
none computes the loss itself, which the update does not need (a diverging run shows in
its weights). tests/test_model.py checks them against autograd.
"""
import logging

import torch
import torch.nn.functional as F
from torch import nn

from vae_repro.likelihoods import LOG_2PI, BernoulliPixels, GaussianPixels

ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": F.softplus, "relu": torch.relu}
# The same, overwriting their input: for the hand-written passes, which keep no pre-activation.
ACTIVATIONS_IN_PLACE = {"tanh": torch.tanh_, "sigmoid": torch.sigmoid_, "softplus": lambda x: F.softplus(x, out=x),
                        "relu": torch.relu_}
# Derivative of each activation, written in terms of its output y.
ACTIVATION_GRADS = {"tanh": lambda y: torch.addcmul(y.new_ones(()), y, y, value=-1.0),  # 1 - y * y in one pass
                    "sigmoid": lambda y: y * (1.0 - y), "softplus": lambda y: -torch.expm1(-y),
                    "relu": lambda y: (y > 0).to(y.dtype)}


def _set_grads(layer: nn.Linear, d_pre: torch.Tensor, layer_input: torch.Tensor) -> None:
    """Gradients of a linear layer from the gradient of its output and its input, written into
    the .grad tensors of the last step where they exist: a fresh large tensor each step costs
    page faults that show at this size."""
    if layer.weight.grad is None:
        layer.weight.grad, layer.bias.grad = torch.empty_like(layer.weight), torch.empty_like(layer.bias)
    torch.mm(d_pre.t(), layer_input, out=layer.weight.grad)
    torch.sum(d_pre, 0, out=layer.bias.grad)


class VAE(nn.Module):
    def __init__(self, input_dim: int, hidden_size: int, latent_dim: int, activation: str = "tanh",
                 init_std: float = 0.01, likelihood: BernoulliPixels | GaussianPixels | None = None):
        super().__init__()
        self.latent_dim = latent_dim
        self.act, self.act_, self.act_grad = (ACTIVATIONS[activation], ACTIVATIONS_IN_PLACE[activation],
                                              ACTIVATION_GRADS[activation])
        self.likelihood = likelihood or BernoulliPixels()
        self.enc_hidden = nn.Linear(input_dim, hidden_size)
        self.enc_out = nn.Linear(hidden_size, 2 * latent_dim)  # mean and log variance of q(z|x)
        self.dec_hidden = nn.Linear(latent_dim, hidden_size)
        self.dec_out = nn.Linear(hidden_size, self.likelihood.outputs_per_pixel * input_dim)  # parameters of p(x|z)
        for layer in (self.enc_hidden, self.enc_out, self.dec_hidden, self.dec_out):
            nn.init.normal_(layer.weight, 0.0, init_std)
            nn.init.zeros_(layer.bias)

    def weights(self) -> list[nn.Parameter]:
        """The weight matrices: the parameters under the N(0, I) prior (biases are not)."""
        return [p for name, p in self.named_parameters() if name.endswith("weight")]

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [*self.enc_hidden.parameters(), *self.enc_out.parameters()]

    def decoder_parameters(self) -> list[nn.Parameter]:
        return [*self.dec_hidden.parameters(), *self.dec_out.parameters()]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.enc_out(self.act(self.enc_hidden(x))).chunk(2, dim=-1)
        return mean, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's output layer: the parameters of p(x|z)."""
        return self.dec_out(self.act(self.dec_hidden(z)))

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z): the pictures of Figures 4 and 5."""
        return self.likelihood.mean(self.decode(z))

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-datapoint E_q[log p(x|z)] and KL(q(z|x) || N(0, I)), in nats.

        x is [B, D]; eps is [L, B, latent_dim] standard normal noise, one slice per sample of z
        (the SGVB estimator of the paper's eq. 10 with L = eps.shape[0]).
        """
        mean, logvar = self.encode(x)
        z = mean + torch.exp(0.5 * logvar) * eps  # reparameterization, broadcast over L
        log_px = self.likelihood.log_prob(self.decode(z), x)
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(-1)
        return log_px.mean(0), kl

    # Hand-written passes. "pre" is a layer's output before its activation.

    def _encoder_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h_enc = self.act_(torch.addmm(self.enc_hidden.bias, x, self.enc_hidden.weight.t()))
        mean, logvar = torch.addmm(self.enc_out.bias, h_enc, self.enc_out.weight.t()).chunk(2, dim=-1)
        return h_enc, mean, logvar

    def _encoder_backward(self, x: torch.Tensor, h_enc: torch.Tensor, d_enc_out: torch.Tensor) -> None:
        """d_enc_out: the gradient of the encoder's output, mean and log variance side by side."""
        d_enc_hidden = d_enc_out.mm(self.enc_out.weight).mul_(self.act_grad(h_enc))
        _set_grads(self.enc_out, d_enc_out, h_enc)
        _set_grads(self.enc_hidden, d_enc_hidden, x)

    def _decoder_forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h_dec = self.act_(torch.addmm(self.dec_hidden.bias, z, self.dec_hidden.weight.t()))
        return h_dec, torch.addmm(self.dec_out.bias, h_dec, self.dec_out.weight.t())

    def _decoder_backward(self, z: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
        """The gradient of scale * -sum log p(x|z) over the rows of z and x, written into the decoder's
        .grad; returns its gradient with respect to the decoder's hidden pre-activation."""
        h_dec, out = self._decoder_forward(z)
        d_out = self.likelihood.nll_grad(out, x, scale)
        d_dec_hidden = d_out.mm(self.dec_out.weight).mul_(self.act_grad(h_dec))
        _set_grads(self.dec_out, d_out, h_dec)
        _set_grads(self.dec_hidden, d_dec_hidden, z)
        return d_dec_hidden

    @torch.no_grad()
    def negative_elbo_backward(self, x: torch.Tensor, eps: torch.Tensor) -> None:
        """The gradient of AEVB's loss, the mean over the batch of KL - E_q[log p(x|z)] as `forward`
        computes it, in every parameter's .grad."""
        n_samples, batch = eps.shape[0], x.shape[0]
        h_enc, mean, logvar = self._encoder_forward(x)
        std = torch.exp(0.5 * logvar)
        z = torch.addcmul(mean, std, eps).view(n_samples * batch, -1)
        xs = x.repeat(n_samples, 1) if n_samples > 1 else x
        d_dec_hidden = self._decoder_backward(z, xs, 1.0 / (n_samples * batch))
        d_z = d_dec_hidden.mm(self.dec_hidden.weight).view(n_samples, batch, -1)
        d_enc_out = torch.empty(batch, 2 * self.latent_dim, dtype=x.dtype, device=x.device)
        d_mean, d_logvar = d_enc_out.chunk(2, dim=-1)
        torch.add(d_z.sum(0), mean, alpha=1.0 / batch, out=d_mean)
        torch.add((d_z * eps).sum(0) * (0.5 * std), (std.square() - 1.0) * (0.5 / batch), out=d_logvar)
        self._encoder_backward(x, h_enc, d_enc_out)

    @torch.no_grad()
    def wake_backward(self, x: torch.Tensor, eps: torch.Tensor) -> None:
        """The gradient of the wake phase's loss, -E_q[log p(x|z)] with z = mean + std * eps from
        q(z|x) taken as fixed, averaged over the batch, in the decoder's .grad only."""
        n_samples, batch = eps.shape[0], x.shape[0]
        _, mean, logvar = self._encoder_forward(x)
        z = torch.addcmul(mean, torch.exp(0.5 * logvar), eps).view(n_samples * batch, -1)  # as AEVB's step
        self.decoder_backward(z, x.repeat(n_samples, 1) if n_samples > 1 else x)

    @torch.no_grad()
    def decoder_backward(self, z: torch.Tensor, x: torch.Tensor) -> None:
        """The gradient of -log p(x|z) averaged over the rows of the pairs (z, x), in the decoder's
        .grad only: the wake phase, and Monte Carlo EM's M-step."""
        for layer in (self.enc_hidden, self.enc_out):
            layer.weight.grad = layer.bias.grad = None
        self._decoder_backward(z, x, 1.0 / len(x))

    @torch.no_grad()
    def log_joint(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) + log p(z) of each row."""
        return self.likelihood.log_prob(self.decode(z), x) + standard_normal_log_prob(z)

    @torch.no_grad()
    def log_joint_and_grad(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(x|z) + log p(z) of each row and its gradient with respect to z: what HMC needs."""
        h_dec, out = self._decoder_forward(z)
        nll, d_out = self.likelihood.nll_backward(out, x, 1.0)
        d_z = d_out.mm(self.dec_out.weight).mul_(self.act_grad(h_dec)).mm(self.dec_hidden.weight)
        return standard_normal_log_prob(z) - nll, d_z.neg_().sub_(z)

    @torch.no_grad()
    def dream(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x ~ p(x|z): a sample, not the mean (Bernoulli draws, or Gaussian ones)."""
        return self.likelihood.sample(self.decode(z), generator)

    @torch.no_grad()
    def sleep_backward(self, x: torch.Tensor, z: torch.Tensor) -> None:
        """The gradient of the sleep phase's loss, -log q(z|x) averaged over the batch of dreamt
        pairs (z, x), in the encoder's .grad only."""
        batch = x.shape[0]
        h_enc, mean, logvar = self._encoder_forward(x)
        inv_var = torch.exp(-logvar)
        diff = z - mean
        sq = diff.square() * inv_var
        for layer in (self.dec_hidden, self.dec_out):
            layer.weight.grad = layer.bias.grad = None
        self._encoder_backward(x, h_enc, torch.cat([-diff * inv_var / batch, (1.0 - sq) * (0.5 / batch)], dim=-1))


# The passes a training step and an evaluation run, which `compile_passes` hands to torch.compile.
COMPILED_PASSES = ("forward", "negative_elbo_backward", "wake_backward", "sleep_backward", "decoder_backward",
                   "dream", "log_joint_and_grad")


def compile_passes(model: VAE) -> None:
    """Replace the model's passes by torch.compile'd ones (train.compile): each becomes a few fused
    loops instead of some forty small operations. The updates stay outside: PyTorch's fused
    Adagrad kernel cannot be compiled, and need not be. Rounding differs slightly from the
    eager passes; the method does not."""
    # torch.compile's C++ builder warns on every job of a CUDA build that finds no CUDA runtime.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    for name in COMPILED_PASSES:
        setattr(model, name, torch.compile(getattr(model, name), dynamic=False))


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) of each row."""
    return -0.5 * (z.square().sum(-1) + z.shape[-1] * LOG_2PI)
