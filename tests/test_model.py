import math

import pytest
import torch

from vae_repro.likelihoods import GaussianPixels
from vae_repro.model import VAE
from vae_repro.noise import Noise


def test_elbo_terms_equal_a_hand_computation():
    torch.manual_seed(0)
    model = VAE(input_dim=2, hidden_sizes=1, latent_dims=1, activation="tanh").double()
    values = {"enc_hidden.weight": [[0.5, -0.3]], "enc_hidden.bias": [0.1],
              "enc_out.weight": [[0.8], [-0.6]], "enc_out.bias": [0.2, -0.4],
              "dec_hidden.weight": [[1.5]], "dec_hidden.bias": [-0.2],
              "dec_out.weight": [[2.0], [-1.0]], "dec_out.bias": [0.3, 0.1]}
    with torch.no_grad():
        for name, value in values.items():
            model.get_parameter(name).copy_(torch.tensor(value, dtype=torch.float64))
    x, eps = [0.9, 0.2], 0.7

    h = math.tanh(0.5 * x[0] - 0.3 * x[1] + 0.1)
    mean, logvar = 0.8 * h + 0.2, -0.6 * h - 0.4
    z = mean + math.exp(0.5 * logvar) * eps
    g = math.tanh(1.5 * z - 0.2)
    logits = [2.0 * g + 0.3, -1.0 * g + 0.1]
    sigmoid = lambda a: 1 / (1 + math.exp(-a))  # noqa: E731
    log_px = sum(xi * math.log(sigmoid(a)) + (1 - xi) * math.log(1 - sigmoid(a)) for xi, a in zip(x, logits))
    kl = 0.5 * (mean ** 2 + math.exp(logvar) - 1 - logvar)

    got_log_px, got_kl = model(torch.tensor([[x]], dtype=torch.float64), torch.tensor([[[[eps]]]], dtype=torch.float64))
    assert math.isclose(got_log_px.item(), log_px, rel_tol=1e-12)
    assert math.isclose(got_kl.item(), kl, rel_tol=1e-12)


def test_several_mc_samples_are_averaged():
    torch.manual_seed(0)
    model = VAE(input_dim=6, hidden_sizes=4, latent_dims=3).double()
    x = torch.rand(1, 5, 6, dtype=torch.float64)
    eps = torch.randn(1, 4, 5, 3, dtype=torch.float64)
    log_px, kl = model(x, eps)
    singles = [model(x, eps[:, i:i + 1])[0] for i in range(4)]
    assert torch.allclose(log_px, torch.stack(singles).mean(0))
    assert torch.allclose(kl, model(x, eps[:, :1])[1])  # analytic, independent of the noise


def test_initialisation_and_prior_cover_the_weight_matrices_only():
    torch.manual_seed(0)
    model = VAE(input_dim=784, hidden_sizes=500, latent_dims=20, init_std=0.01)
    assert {tuple(w.shape) for w in model.weights()} == {(1, 500, 784), (1, 40, 500), (1, 500, 20), (1, 784, 500)}
    assert abs(model.enc_hidden.weight.std().item() - 0.01) < 1e-4
    assert all((p == 0).all() for name, p in model.named_parameters() if name.endswith("bias"))


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softplus", "relu"])
@pytest.mark.parametrize("mc_samples", [1, 3])
def test_hand_written_backward_equals_autograd(activation, mc_samples):
    torch.manual_seed(0)
    model = VAE(input_dim=12, hidden_sizes=7, latent_dims=4, activation=activation, init_std=0.5).double()
    x = torch.rand(1, 5, 12, dtype=torch.float64)
    eps = torch.randn(1, mc_samples, 5, 4, dtype=torch.float64)

    log_px, kl = model(x, eps)
    expected_loss = (kl - log_px).mean()
    expected_loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    assert model.negative_elbo_backward(x, eps) is None  # the gradient only: the loss is not needed
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, expected[name], rtol=1e-9, atol=1e-12), name


def tiny_model(activation="tanh"):
    torch.manual_seed(0)
    return VAE(input_dim=12, hidden_sizes=7, latent_dims=4, activation=activation, init_std=0.5).double()


ENCODER = ("enc_hidden.weight", "enc_hidden.bias", "enc_out.weight", "enc_out.bias")
DECODER = ("dec_hidden.weight", "dec_hidden.bias", "dec_out.weight", "dec_out.bias")


def assert_phase_matches_autograd(model, result, expected_loss, trained, untouched):
    """A hand-written phase gave autograd's gradients for `trained`, and no .grad to `untouched`."""
    assert result is None
    expected = torch.autograd.grad(expected_loss, [model.get_parameter(name) for name in trained])
    for name, grad in zip(trained, expected):
        assert torch.allclose(model.get_parameter(name).grad, grad, rtol=1e-9, atol=1e-12), name
    assert all(model.get_parameter(name).grad is None for name in untouched)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("mc_samples", [1, 3])
def test_wake_phase_trains_the_decoder_alone_on_log_p_x_given_z(activation, mc_samples):
    model = tiny_model(activation)
    x = torch.rand(1, 5, 12, dtype=torch.float64)
    eps = torch.randn(1, mc_samples, 5, 4, dtype=torch.float64)
    for p in model.parameters():  # stale gradients of the other network must not survive
        p.grad = torch.ones_like(p)

    with torch.no_grad():  # z ~ q(z|x) is data for the wake phase: no gradient flows into q
        mean, logvar = model.encode(x)
        z = (mean.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * eps).flatten(1, 2)
    logits = model.decode(z)
    bernoulli = torch.distributions.Bernoulli(logits=logits, validate_args=False)  # grey x in [0, 1]
    expected_loss = -bernoulli.log_prob(x.repeat(1, mc_samples, 1)).sum(-1).mean()
    assert_phase_matches_autograd(model, model.wake_backward(x, eps), expected_loss, DECODER, ENCODER)


@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_sleep_phase_trains_the_encoder_alone_on_log_q_z_given_x(activation):
    model = tiny_model(activation)
    x = torch.bernoulli(torch.full((1, 6, 12), 0.5, dtype=torch.float64))
    z = torch.randn(1, 6, 4, dtype=torch.float64)
    for p in model.parameters():
        p.grad = torch.ones_like(p)

    mean, logvar = model.encode(x)
    gaussian = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    expected_loss = -gaussian.log_prob(z).sum(-1).mean()
    assert_phase_matches_autograd(model, model.sleep_backward(x, z), expected_loss, ENCODER, DECODER)


def test_sleep_gradient_of_a_one_pixel_model_equals_a_hand_computation():
    model = VAE(input_dim=1, hidden_sizes=1, latent_dims=1).double()
    values = {"enc_hidden.weight": [[0.5]], "enc_hidden.bias": [0.1],
              "enc_out.weight": [[0.8], [-0.6]], "enc_out.bias": [0.2, -0.4]}
    with torch.no_grad():
        for name, value in values.items():
            model.get_parameter(name).copy_(torch.tensor(value, dtype=torch.float64))
    h = math.tanh(0.5 * 1.0 + 0.1)
    mean, logvar = 0.8 * h + 0.2, -0.6 * h - 0.4
    z = 0.3
    # -log q = 0.5 (log 2 pi + logvar + (z - mean)^2 / exp(logvar)), differentiated by hand
    d_mean, d_logvar = -(z - mean) / math.exp(logvar), 0.5 * (1 - (z - mean) ** 2 / math.exp(logvar))
    model.sleep_backward(torch.tensor([[[1.0]]], dtype=torch.float64), torch.tensor([[[z]]], dtype=torch.float64))
    assert torch.allclose(model.enc_out.bias.grad, torch.tensor([[d_mean, d_logvar]], dtype=torch.float64), rtol=1e-12)


def test_dreams_are_bernoulli_draws_from_the_decoder():
    model = tiny_model()
    z = torch.randn(1, 1, 4, dtype=torch.float64).expand(1, 40_000, 4)
    x = model.dream(z, Noise.seeded([0], [4]))[0]
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    probs = torch.sigmoid(model.decode(z[:, :1]))[0, 0]
    assert torch.allclose(x.mean(0), probs, atol=0.01)  # 4 standard errors at p = 0.5


def test_gaussian_log_density_of_a_one_pixel_decoder_equals_a_hand_computation():
    model = VAE(input_dim=1, hidden_sizes=1, latent_dims=1, likelihood=GaussianPixels()).double()
    values = {"dec_hidden.weight": [[1.5]], "dec_hidden.bias": [-0.2],
              "dec_out.weight": [[2.0], [-1.0]], "dec_out.bias": [0.3, 0.1]}  # mean pre-activation, log variance
    with torch.no_grad():
        for name, value in values.items():
            model.get_parameter(name).copy_(torch.tensor(value, dtype=torch.float64))
    z, x = 0.4, 0.8
    g = math.tanh(1.5 * z - 0.2)
    mean, logvar = 1 / (1 + math.exp(-(2.0 * g + 0.3))), -1.0 * g + 0.1
    log_px = -0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 / math.exp(logvar))
    out = model.decode(torch.tensor([[[z]]], dtype=torch.float64))
    got = model.likelihood.log_prob(out, torch.tensor([[[x]]], dtype=torch.float64))
    assert math.isclose(got.item(), log_px, rel_tol=1e-12)
    assert math.isclose(model.decode_mean(torch.tensor([[[z]]], dtype=torch.float64)).item(), mean, rel_tol=1e-12)


@pytest.mark.parametrize("logvar_min", [None, -0.5])
@pytest.mark.parametrize("mc_samples", [1, 2])
def test_gaussian_decoder_backward_equals_autograd(logvar_min, mc_samples):
    torch.manual_seed(0)
    model = VAE(input_dim=12, hidden_sizes=7, latent_dims=4, init_std=0.5, likelihood=GaussianPixels(logvar_min)).double()
    x = torch.rand(1, 5, 12, dtype=torch.float64)
    eps = torch.randn(1, mc_samples, 5, 4, dtype=torch.float64)
    if logvar_min is not None:  # put part of the log variances below the floor
        assert (model.decode(torch.randn(1, 5, 4, dtype=torch.float64)).chunk(2, -1)[1] < logvar_min).any()

    log_px, kl = model(x, eps)
    expected_loss = (kl - log_px).mean()
    expected = dict(zip([n for n, _ in model.named_parameters()], torch.autograd.grad(expected_loss, list(model.parameters()))))
    model.negative_elbo_backward(x, eps)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, expected[name], rtol=1e-9, atol=1e-12), name

    with torch.no_grad():
        mean, logvar = model.encode(x)
        z = (mean.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * eps).flatten(1, 2)
    wake_loss = -model.likelihood.log_prob(model.decode(z), x.repeat(1, mc_samples, 1)).mean()
    assert_phase_matches_autograd(model, model.wake_backward(x, eps), wake_loss, DECODER, ENCODER)


def test_gaussian_dreams_are_draws_around_the_decoder_mean():
    torch.manual_seed(0)
    model = VAE(input_dim=3, hidden_sizes=4, latent_dims=2, init_std=0.5, likelihood=GaussianPixels()).double()
    z = torch.randn(1, 1, 2, dtype=torch.float64).expand(1, 40_000, 2)
    x = model.dream(z, Noise.seeded([0], [2]))[0]
    mean_pre, logvar = model.decode(z[:, :1]).chunk(2, -1)
    assert torch.allclose(x.mean(0), torch.sigmoid(mean_pre)[0, 0], atol=0.02)
    assert torch.allclose(x.var(0), torch.exp(logvar)[0, 0], rtol=0.05)


@pytest.mark.parametrize("hidden", [7, [7, 5, 4]], ids=["1 layer", "3 layers"])
@pytest.mark.parametrize("likelihood", [None, GaussianPixels()], ids=["bernoulli", "gaussian"])
@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_log_joint_and_its_gradient_in_z_equal_autograd(likelihood, activation, hidden):
    torch.manual_seed(0)
    model = VAE(input_dim=12, hidden_sizes=hidden, latent_dims=3, activation=activation, init_std=0.5,
                likelihood=likelihood).double()
    x, z = torch.rand(1, 5, 12, dtype=torch.float64), torch.randn(1, 5, 3, dtype=torch.float64, requires_grad=True)
    reference = model.likelihood.log_prob(model.decode(z), x) - 0.5 * (z.square().sum(-1) + 3 * math.log(2 * math.pi))
    (expected_grad,) = torch.autograd.grad(reference.sum(), z)
    log_joint, grad = model.log_joint_and_grad(z.detach(), x)
    assert torch.allclose(log_joint, reference.detach()) and torch.allclose(model.log_joint(z.detach(), x), log_joint)
    assert torch.allclose(grad, expected_grad)
    assert all(p.grad is None for p in model.parameters())  # HMC's gradient leaves the weights alone


def iwae_loss(model, x, eps):
    """-mean over the batch of log (1/k) sum_i p(x, z_i) / q(z_i|x), by autograd's own distributions."""
    mean, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    z = mean.unsqueeze(1) + std.unsqueeze(1) * eps  # [K, k, B, N_z]
    stack, k, batch, units = z.shape
    out = model.decode(z.flatten(1, 2))
    log_px = model.likelihood.log_prob(out, x.repeat(1, k, 1)).view(stack, k, batch)
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_qz = torch.distributions.Normal(mean.unsqueeze(1), std.unsqueeze(1)).log_prob(z).sum(-1)
    return -(torch.logsumexp(log_px + log_pz - log_qz, 1) - math.log(k)).mean()


@pytest.mark.parametrize("likelihood", [None, GaussianPixels(-0.5)], ids=["bernoulli", "gaussian"])
@pytest.mark.parametrize("k", [1, 5])
def test_iwae_backward_equals_autograd(likelihood, k):
    torch.manual_seed(0)
    model = VAE(input_dim=12, hidden_sizes=7, latent_dims=4, init_std=0.5, likelihood=likelihood).double()
    x = torch.rand(1, 5, 12, dtype=torch.float64)
    eps = torch.randn(1, k, 5, 4, dtype=torch.float64)
    expected = dict(zip([n for n, _ in model.named_parameters()],
                        torch.autograd.grad(iwae_loss(model, x, eps), list(model.parameters()))))
    assert model.iwae_backward(x, eps) is None
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, expected[name], rtol=1e-9, atol=1e-12), name
