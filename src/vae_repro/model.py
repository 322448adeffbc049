"""The paper's VAE: one hidden layer each way, Gaussian q(z|x), Bernoulli p(x|z), and its ELBO."""
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": F.softplus, "relu": torch.relu}
# Derivative of each activation, written in terms of its output y.
ACTIVATION_GRADS = {"tanh": lambda y: 1.0 - y * y, "sigmoid": lambda y: y * (1.0 - y),
                    "softplus": lambda y: -torch.expm1(-y), "relu": lambda y: (y > 0).to(y.dtype)}


class VAE(nn.Module):
    def __init__(self, input_dim: int, hidden_size: int, latent_dim: int, activation: str = "tanh",
                 init_std: float = 0.01):
        super().__init__()
        self.latent_dim = latent_dim
        self.act, self.act_grad = ACTIVATIONS[activation], ACTIVATION_GRADS[activation]
        self.enc_hidden = nn.Linear(input_dim, hidden_size)
        self.enc_out = nn.Linear(hidden_size, 2 * latent_dim)  # mean and log variance of q(z|x)
        self.dec_hidden = nn.Linear(latent_dim, hidden_size)
        self.dec_out = nn.Linear(hidden_size, input_dim)  # Bernoulli logits of p(x|z)
        for layer in (self.enc_hidden, self.enc_out, self.dec_hidden, self.dec_out):
            nn.init.normal_(layer.weight, 0.0, init_std)
            nn.init.zeros_(layer.bias)

    def weights(self) -> list[nn.Parameter]:
        """The weight matrices: the parameters under the N(0, I) prior (biases are not)."""
        return [p for name, p in self.named_parameters() if name.endswith("weight")]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.enc_out(self.act(self.enc_hidden(x))).chunk(2, dim=-1)
        return mean, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec_out(self.act(self.dec_hidden(z)))

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-datapoint E_q[log p(x|z)] and KL(q(z|x) || N(0, I)), in nats.

        x is [B, D]; eps is [L, B, latent_dim] standard normal noise, one slice per sample of z
        (the SGVB estimator of the paper's eq. 10 with L = eps.shape[0]).
        """
        mean, logvar = self.encode(x)
        z = mean + torch.exp(0.5 * logvar) * eps  # reparameterization, broadcast over L
        logits = self.decode(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(-1)
        return log_px.mean(0), kl

    @torch.no_grad()
    def negative_elbo_backward(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The mean over the batch of KL - E_q[log p(x|z)], as `forward` computes it, with its
        gradient written into every parameter's .grad.

        The backward pass is written out by hand: at batch 100 on a CPU, autograd's bookkeeping
        costs about a fifth of the step. tests/test_model.py checks it against autograd.
        """
        n_samples, batch = eps.shape[0], x.shape[0]
        h_enc = self.act(torch.addmm(self.enc_hidden.bias, x, self.enc_hidden.weight.t()))
        mean, logvar = torch.addmm(self.enc_out.bias, h_enc, self.enc_out.weight.t()).chunk(2, dim=-1)
        std = torch.exp(0.5 * logvar)
        z = (mean + std * eps).view(n_samples * batch, -1)
        h_dec = self.act(torch.addmm(self.dec_hidden.bias, z, self.dec_hidden.weight.t()))
        logits = torch.addmm(self.dec_out.bias, h_dec, self.dec_out.weight.t())
        xs = x.repeat(n_samples, 1) if n_samples > 1 else x
        loss = (F.binary_cross_entropy_with_logits(logits, xs, reduction="sum") / (n_samples * batch)
                + 0.5 * (mean.square() + std.square() - 1.0 - logvar).sum() / batch)

        # Gradients with respect to each layer's pre-activation, from the output back.
        d_logits = torch.sigmoid(logits).sub_(xs).div_(n_samples * batch)
        d_dec_hidden = d_logits.mm(self.dec_out.weight).mul_(self.act_grad(h_dec))
        d_z = d_dec_hidden.mm(self.dec_hidden.weight).view(n_samples, batch, -1)
        d_mean = d_z.sum(0) + mean / batch
        d_logvar = (d_z * eps).sum(0) * (0.5 * std) + (std.square() - 1.0) * (0.5 / batch)
        d_enc_out = torch.cat([d_mean, d_logvar], dim=-1)
        d_enc_hidden = d_enc_out.mm(self.enc_out.weight).mul_(self.act_grad(h_enc))
        for layer, d_pre, layer_input in ((self.dec_out, d_logits, h_dec), (self.dec_hidden, d_dec_hidden, z),
                                          (self.enc_out, d_enc_out, h_enc), (self.enc_hidden, d_enc_hidden, x)):
            layer.weight.grad = d_pre.t().mm(layer_input)
            layer.bias.grad = d_pre.sum(0)
        return loss
