"""The paper's VAE, at any depth: tanh hidden layers each way (the paper's one, or more, the
decoder's mirroring the encoder's), Gaussian q(z|x), a per-pixel p(x|z) (Bernoulli or
Gaussian, see likelihoods.py), and its ELBO; as a stack of K such models of one shape,
whose every product is one batched call for all K (a single model is the stack of one).

Besides the autograd forward pass, the model has hand-written backward passes for the
training steps (at batch 100 on a CPU, autograd's bookkeeping costs about a fifth of a
step): the negative ELBO for AEVB, IWAE's loss, and the wake and sleep losses of wake-sleep,
each a loop over the layers.
Each writes its gradient into .grad of the parameters it trains and leaves the others' .grad
as None; none computes the loss itself, which the update does not need (a diverging run shows
in its weights). tests/test_losses.py checks them against autograd of the losses in losses.py.
"""
import logging

import torch
import torch.nn.functional as F
from torch import nn

from vae_repro.config import Config, hidden_sizes
from vae_repro.likelihoods import LIKELIHOODS, LOG_2PI, BernoulliPixels, Likelihood
from vae_repro.noise import Noise
from vae_repro.own_tensors import load_own_tensor, own_shape

ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": F.softplus, "relu": torch.relu}
# The same, overwriting their input: for the hand-written passes, which keep no pre-activation.
ACTIVATIONS_IN_PLACE = {"tanh": torch.tanh_, "sigmoid": torch.sigmoid_, "softplus": lambda x: F.softplus(x, out=x),
                        "relu": torch.relu_}
# Derivative of each activation, written in terms of its output y.
ACTIVATION_GRADS = {"tanh": lambda y: torch.addcmul(y.new_ones(()), y, y, value=-1.0),  # 1 - y * y in one pass
                    "sigmoid": lambda y: y * (1.0 - y), "softplus": lambda y: -torch.expm1(-y),
                    "relu": lambda y: (y > 0).to(y.dtype)}


def _set_grads(layer: "StackedLinear", d_pre: torch.Tensor, layer_input: torch.Tensor) -> None:
    """Gradients of a stacked linear layer from the gradient of its output and its input, written
    into the .grad tensors of the last step where they exist: a fresh large tensor each step costs
    page faults that show at this size."""
    if layer.weight.grad is None:
        layer.weight.grad, layer.bias.grad = torch.empty_like(layer.weight), torch.empty_like(layer.bias)
    torch.bmm(d_pre.mT, layer_input, out=layer.weight.grad)
    torch.sum(d_pre, 1, out=layer.bias.grad)


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z = mean + std * eps for the L slices of eps ([K, L, B, N_z]) as [K, L * B, N_z], and std."""
    std = torch.exp(0.5 * logvar)
    return torch.addcmul(mean.unsqueeze(1), std.unsqueeze(1), eps).flatten(1, 2), std


class StackedLinear(nn.Module):
    """K linear layers of one shape, one per model of a stack: weight [K, out, in], bias [K, out]."""

    def __init__(self, stack: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(stack, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(stack, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[K, B, in] -> [K, B, out]: one batched product for the whole stack."""
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.mT)


class VAE(nn.Module):
    """A stack of K of the paper's VAEs of one shape, trained side by side with batched products:
    model k has latent_dims[k] units of z, padded with inert units (zero weights, zero noise,
    no gradient) to the largest, `latent_dim`. A single model is the stack of one. Every pass
    takes and returns tensors with the stack as their first dimension."""

    def __init__(self, input_dim: int, hidden_sizes: int | list[int], latent_dims: int | list[int],
                 activation: str = "tanh", init_std: float = 0.01, likelihood: Likelihood | None = None,
                 seeds: list[int] | None = None):
        super().__init__()
        hidden = [hidden_sizes] if isinstance(hidden_sizes, int) else list(hidden_sizes)
        self.latent_dims = [latent_dims] if isinstance(latent_dims, int) else list(latent_dims)
        self.latent_dim, stack = max(self.latent_dims), len(self.latent_dims)
        self.act, self.act_, self.act_grad = (ACTIVATIONS[activation], ACTIVATIONS_IN_PLACE[activation],
                                              ACTIVATION_GRADS[activation])
        self.likelihood = likelihood or BernoulliPixels()
        # The encoder's hidden layers as listed, the decoder's mirrored. A network's layers in order, as
        # plain lists for the passes: the first and the output layers keep the names of the paper's
        # one-layer model (enc_hidden, enc_out, dec_hidden, dec_out), deeper ones are enc_hidden_2, ...
        self.enc_layers = self._add_layers("enc", stack, [input_dim, *hidden, 2 * self.latent_dim])
        self.dec_layers = self._add_layers("dec", stack, [self.latent_dim, *reversed(hidden),
                                                          self.likelihood.outputs_per_pixel * input_dim])
        self._set_padding()
        names = [name for name, _ in self.named_parameters() if name.endswith(".weight")]
        for k in range(stack):
            if seeds is not None:
                torch.manual_seed(seeds[k])
            # Model k's weights drawn as a model alone has always drawn them: nn.Linear's own initialisation
            # first (which takes its share of the random stream), then N(0, init_std^2), so that a seed
            # gives the same model as before stacks.
            own = [nn.Linear(*reversed(own_shape(self, name, k))) for name in names]
            for name, layer in zip(names, own):
                nn.init.normal_(layer.weight, 0.0, init_std)
                load_own_tensor(self, name, self.get_parameter(name), k, layer.weight.detach())

    def _add_layers(self, network: str, stack: int, sizes: list[int]) -> list[StackedLinear]:
        """The layers between `sizes`, registered in order as network_hidden, network_hidden_2, ..., network_out."""
        names = [f"{network}_hidden" + (f"_{i + 1}" if i else "") for i in range(len(sizes) - 2)] + [f"{network}_out"]
        for name, n_in, n_out in zip(names, sizes, sizes[1:]):
            self.add_module(name, StackedLinear(stack, n_in, n_out))
        return [self.get_submodule(name) for name in names]

    def _set_padding(self) -> None:
        """The stack's masks of each model's own latent units, None where no model is padded."""
        own = torch.arange(self.latent_dim) < torch.tensor(self.latent_dims).unsqueeze(-1)  # [K, N_z]
        padded = bool(self.latent_dims) and min(self.latent_dims) < self.latent_dim
        device = self.enc_out.weight.device
        # Zero on the padding of the encoder's output: the sleep phase and IWAE would train it.
        self.own_outputs = own.repeat(1, 2).unsqueeze(1).to(device, torch.float32) if padded else None
        self.own_units = torch.tensor(self.latent_dims, dtype=torch.float32, device=device)

    def _apply(self, fn, *args, **kwargs):  # .to(device) and .double() move the masks too
        super()._apply(fn, *args, **kwargs)
        self.own_units = fn(self.own_units)
        self.own_outputs = fn(self.own_outputs) if self.own_outputs is not None else None
        return self

    def set_latent_dims(self, latent_dims: list[int]) -> None:
        """Its models' N_z, once the parameters are cut to the models that stay in the stack: the
        padding masks follow."""
        self.latent_dims, dtype = list(latent_dims), self.own_units.dtype
        self._set_padding()
        self.own_units = self.own_units.to(dtype)
        self.own_outputs = self.own_outputs.to(dtype) if self.own_outputs is not None else None

    def weights(self) -> list[nn.Parameter]:
        """The weight matrices: the parameters under the N(0, I) prior (biases are not)."""
        return [p for name, p in self.named_parameters() if name.endswith("weight")]

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.enc_layers for p in layer.parameters()]

    def decoder_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.dec_layers for p in layer.parameters()]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.enc_layers[:-1]:
            x = self.act(layer(x))
        mean, logvar = self.enc_out(x).chunk(2, dim=-1)
        return mean, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's output layer: the parameters of p(x|z)."""
        for layer in self.dec_layers[:-1]:
            z = self.act(layer(z))
        return self.dec_out(z)

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z): the pictures of Figures 4 and 5."""
        return self.likelihood.mean(self.decode(z))

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-datapoint E_q[log p(x|z)] and KL(q(z|x) || N(0, I)), in nats, as [K, B].

        x is [K, B, D]; eps is [K, L, B, N_z] standard normal noise, one slice per sample of z
        (the SGVB estimator of the paper's eq. 10 with L = eps.shape[1]).
        """
        mean, logvar = self.encode(x)
        z, _ = reparameterize(mean, logvar, eps)
        n_samples = eps.shape[1]
        xs = x.repeat(1, n_samples, 1) if n_samples > 1 else x
        log_px = self.likelihood.log_prob(self.decode(z), xs).unflatten(1, (n_samples, -1))
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(-1)
        return log_px.mean(1), kl

    # Hand-written passes. "pre" is a layer's output before its activation; `hs` are the outputs of a
    # network's hidden layers, after it.

    def _hidden_forward(self, layers: list[StackedLinear], x: torch.Tensor) -> list[torch.Tensor]:
        hs = []
        for layer in layers:
            x = self.act_(layer(x))
            hs.append(x)
        return hs

    def _layers_backward(self, layers: list[StackedLinear], inputs: list[torch.Tensor], d_out: torch.Tensor
                         ) -> torch.Tensor:
        """The .grad of a network's `layers` from the gradient of the last one's output; inputs[i] is the
        input of layers[i]. Returns the gradient of the first layer's output (its pre-activation)."""
        d_pre = d_out
        for layer, layer_input in zip(layers[:0:-1], inputs[:0:-1]):
            d_below = d_pre.bmm(layer.weight).mul_(self.act_grad(layer_input))
            _set_grads(layer, d_pre, layer_input)
            d_pre = d_below
        _set_grads(layers[0], d_pre, inputs[0])
        return d_pre

    def _encoder_forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        hs = self._hidden_forward(self.enc_layers[:-1], x)
        mean, logvar = self.enc_out(hs[-1]).chunk(2, dim=-1)
        return hs, mean, logvar

    def _encoder_backward(self, x: torch.Tensor, hs: list[torch.Tensor], d_enc_out: torch.Tensor) -> None:
        """d_enc_out: the gradient of the encoder's output, mean and log variance side by side."""
        self._layers_backward(self.enc_layers, [x, *hs], d_enc_out)

    def _decoder_forward(self, z: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        hs = self._hidden_forward(self.dec_layers[:-1], z)
        return hs, self.dec_out(hs[-1])

    def _decoder_backward(self, z: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
        """The gradient of scale * -sum log p(x|z) over the rows of z and x, written into the decoder's
        .grad; returns its gradient with respect to the decoder's first pre-activation."""
        hs, out = self._decoder_forward(z)
        return self._decoder_backward_from(z, hs, self.likelihood.nll_grad(out, x, scale))

    def _decoder_backward_from(self, z: torch.Tensor, hs: list[torch.Tensor], d_out: torch.Tensor) -> torch.Tensor:
        """The decoder's .grad from the gradient of its output layer; returns the gradient of its first
        pre-activation."""
        return self._layers_backward(self.dec_layers, [z, *hs], d_out)

    @torch.no_grad()
    def negative_elbo_backward(self, x: torch.Tensor, eps: torch.Tensor) -> None:
        """The gradient of AEVB's loss, the mean over the batch of KL - E_q[log p(x|z)] as `forward`
        computes it, in every parameter's .grad."""
        stack, n_samples, batch = eps.shape[:3]
        hs_enc, mean, logvar = self._encoder_forward(x)
        z, std = reparameterize(mean, logvar, eps)
        xs = x.repeat(1, n_samples, 1) if n_samples > 1 else x
        d_dec_hidden = self._decoder_backward(z, xs, 1.0 / (n_samples * batch))
        d_z = d_dec_hidden.bmm(self.dec_hidden.weight).view(stack, n_samples, batch, -1)
        d_enc_out = torch.empty(stack, batch, 2 * self.latent_dim, dtype=x.dtype, device=x.device)
        d_mean, d_logvar = d_enc_out.chunk(2, dim=-1)
        torch.add(d_z.sum(1), mean, alpha=1.0 / batch, out=d_mean)
        torch.add((d_z * eps).sum(1) * (0.5 * std), (std.square() - 1.0) * (0.5 / batch), out=d_logvar)
        self._encoder_backward(x, hs_enc, d_enc_out)

    @torch.no_grad()
    def iwae_backward(self, x: torch.Tensor, eps: torch.Tensor) -> None:
        """The gradient of IWAE's loss, the mean over the batch of -log (1/k) sum_i w_i with the k
        importance weights w_i = p(x, z_i) / q(z_i|x), z_i = mean + std * eps_i, in every parameter's
        .grad: each sample's gradient of log w_i weighted by its normalized weight (Burda et al.,
        2015, eq. 14). log q(z_i|x) and log p(z_i) count each model's own units of z."""
        stack, n_samples, batch = eps.shape[:3]
        hs_enc, mean, logvar = self._encoder_forward(x)
        z, std = reparameterize(mean, logvar, eps)
        hs_dec, out = self._decoder_forward(z)
        nll, d_out = self.likelihood.nll_backward(out, x.repeat(1, n_samples, 1) if n_samples > 1 else x, 1.0)
        log_q = -0.5 * (self.own_units.view(-1, 1, 1) * LOG_2PI + logvar.sum(-1).unsqueeze(1) + eps.square().sum(-1))
        log_w = (self.log_prior(z) - nll).view(stack, n_samples, batch) - log_q
        # Normalized per datapoint along the last dim: along dim 1, softmax's result depends on the thread count.
        weights = torch.softmax(log_w.transpose(1, 2), dim=-1).div_(batch).transpose(1, 2).reshape(stack, -1, 1)
        d_dec_hidden = self._decoder_backward_from(z, hs_dec, d_out.mul_(weights))
        d_z = torch.baddbmm(weights * z, d_dec_hidden, self.dec_hidden.weight).view(stack, n_samples, batch, -1)
        d_enc_out = torch.empty(stack, batch, 2 * self.latent_dim, dtype=x.dtype, device=x.device)
        d_mean, d_logvar = d_enc_out.chunk(2, dim=-1)
        torch.sum(d_z, 1, out=d_mean)
        torch.sub((d_z * eps).sum(1) * (0.5 * std), 0.5 / batch, out=d_logvar)
        if self.own_outputs is not None:  # the padding's log variance would have the constant's gradient
            d_enc_out.mul_(self.own_outputs)
        self._encoder_backward(x, hs_enc, d_enc_out)

    @torch.no_grad()
    def wake_backward(self, x: torch.Tensor, eps: torch.Tensor) -> None:
        """The gradient of the wake phase's loss, -E_q[log p(x|z)] with z = mean + std * eps from
        q(z|x) taken as fixed, averaged over the batch, in the decoder's .grad only."""
        n_samples = eps.shape[1]
        _, mean, logvar = self._encoder_forward(x)
        z, _ = reparameterize(mean, logvar, eps)  # as AEVB's step
        self.decoder_backward(z, x.repeat(1, n_samples, 1) if n_samples > 1 else x)

    @torch.no_grad()
    def decoder_backward(self, z: torch.Tensor, x: torch.Tensor) -> None:
        """The gradient of -log p(x|z) averaged over the rows of the pairs (z, x), in the decoder's
        .grad only: the wake phase, and Monte Carlo EM's M-step."""
        for layer in self.enc_layers:
            layer.weight.grad = layer.bias.grad = None
        self._decoder_backward(z, x, 1.0 / x.shape[1])

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I) of each row of z ([K, B, N_z]), in each model's own units."""
        return -0.5 * (z.square().sum(-1) + self.own_units.unsqueeze(-1) * LOG_2PI)

    @torch.no_grad()
    def log_joint(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) + log p(z) of each row."""
        return self.likelihood.log_prob(self.decode(z), x) + self.log_prior(z)

    @torch.no_grad()
    def log_joint_and_grad(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(x|z) + log p(z) of each row and its gradient with respect to z: what HMC needs."""
        hs, out = self._decoder_forward(z)
        nll, d_out = self.likelihood.nll_backward(out, x, 1.0)
        d_pre = d_out
        for layer, layer_input in zip(self.dec_layers[:0:-1], hs[::-1]):
            d_pre = d_pre.bmm(layer.weight).mul_(self.act_grad(layer_input))
        d_z = d_pre.bmm(self.dec_hidden.weight)
        return self.log_prior(z) - nll, d_z.neg_().sub_(z)

    @torch.no_grad()
    def dream(self, z: torch.Tensor, noise: Noise) -> torch.Tensor:
        """x ~ p(x|z): a sample, not the mean (Bernoulli draws, or Gaussian ones)."""
        return self.likelihood.sample(self.decode(z), noise)

    @torch.no_grad()
    def sleep_backward(self, x: torch.Tensor, z: torch.Tensor) -> None:
        """The gradient of the sleep phase's loss, -log q(z|x) averaged over the batch of dreamt
        pairs (z, x), in the encoder's .grad only."""
        batch = x.shape[1]
        hs_enc, mean, logvar = self._encoder_forward(x)
        inv_var = torch.exp(-logvar)
        diff = z - mean
        sq = diff.square() * inv_var
        for layer in self.dec_layers:
            layer.weight.grad = layer.bias.grad = None
        d_enc_out = torch.cat([-diff * inv_var / batch, (1.0 - sq) * (0.5 / batch)], dim=-1)
        if self.own_outputs is not None:
            d_enc_out.mul_(self.own_outputs)
        self._encoder_backward(x, hs_enc, d_enc_out)


def build_model(cfgs: list[Config], input_dim: int) -> VAE:
    """The stack of the models of `cfgs` (which differ at most in seed, latent_dim and step size),
    each initialised as it would be alone."""
    model = cfgs[0].model
    return VAE(input_dim, hidden_sizes(model), [c.latent_dim for c in cfgs], str(model.activation), model.init_std,
               LIKELIHOODS[str(model.likelihood)].from_config(model), seeds=[c.seed for c in cfgs])


# The passes an evaluation runs (the ELBO's, and HMC's for the marginal likelihood), which
# `compile_passes` compiles beside the training step's.
EVALUATION_PASSES = ("forward", "log_joint_and_grad")


def compile_passes(model: VAE, step_passes: tuple[str, ...]) -> None:
    """Replace the model's passes by torch.compile'd ones (train.compile): each becomes a few fused
    loops instead of some forty small operations. The updates stay outside: PyTorch's fused
    Adagrad kernel cannot be compiled, and need not be. Rounding differs slightly from the
    eager passes; the method does not."""
    # torch.compile's C++ builder warns on every job of a CUDA build that finds no CUDA runtime.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    for name in dict.fromkeys(step_passes + EVALUATION_PASSES):
        setattr(model, name, torch.compile(getattr(model, name), dynamic=False))

