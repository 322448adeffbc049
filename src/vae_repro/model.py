"""The paper's VAE: one hidden layer each way, Gaussian q(z|x), Bernoulli p(x|z), and its ELBO."""
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": F.softplus, "relu": torch.relu}


class VAE(nn.Module):
    def __init__(self, input_dim: int, hidden_size: int, latent_dim: int, activation: str = "tanh",
                 init_std: float = 0.01):
        super().__init__()
        self.latent_dim = latent_dim
        self.act = ACTIVATIONS[activation]
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
