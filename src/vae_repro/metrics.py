"""What a job measures: the ELBO and importance-weighted bounds on whole datasets, and the
marginal likelihood of their first images (when: schedule.py)."""
import torch

from vae_repro.config import Config
from vae_repro.data import to_unit_interval
from vae_repro.marginal import is_log_marginal, make_estimator
from vae_repro.model import VAE
from vae_repro.noise import Noise
from vae_repro.records import Measures, Row

EVAL_CHUNK = 1_000  # rows per forward pass in evaluation: large matmuls, temporaries of a few MB


def for_each_model(images: torch.Tensor, noise: Noise, binarize_dynamic: bool) -> torch.Tensor:
    """Images [N, D] (uint8 or in [0, 1]) as [K, N, D] in [0, 1], one view per model of the stack; binarized with
    each model's own noise if `data.binarize=dynamic`."""
    x = to_unit_interval(images).expand(len(noise.gens), -1, -1)
    return noise.bernoulli(x) if binarize_dynamic else x


@torch.inference_mode()
def evaluate(model: VAE, x: torch.Tensor, mc_samples: int, noise: Noise,
             binarize_dynamic: bool) -> list[tuple[float, float, float]]:
    """Per model of the stack, the average ELBO, E[log p(x|z)] and KL over all of the images `x`,
    with q(z|x) as the variational posterior whatever algorithm trained it."""
    totals = torch.zeros(len(noise.gens), 2, dtype=torch.float64, device=x.device)
    for chunk in x.split(EVAL_CHUNK):
        chunk = for_each_model(chunk, noise, binarize_dynamic)
        log_px, kl = model(chunk, noise.latent(mc_samples, chunk.shape[1]))
        totals += torch.stack([log_px.sum(1), kl.sum(1)], dim=1).double()
    return [(log_px - kl, log_px, kl) for log_px, kl in (totals / len(x)).tolist()]


@torch.inference_mode()
def evaluate_iwae(model: VAE, x: torch.Tensor, k: int, noise: Noise, binarize_dynamic: bool) -> list[float]:
    """Per model of the stack, the average IWAE-k bound over all of the images `x`: the log of the
    mean of k importance weights p(x, z) / q(z|x) with z ~ q(z|x)."""
    total = torch.zeros(len(noise.gens), dtype=torch.float64, device=x.device)
    for chunk in x.split(EVAL_CHUNK):
        total += is_log_marginal(model, for_each_model(chunk, noise, binarize_dynamic), k, noise).double().sum(1)
    return (total / len(x)).tolist()


@torch.inference_mode()
def active_units(model: VAE, x: torch.Tensor, threshold: float = 0.01) -> list[int]:
    """Per model of the stack, its active latent units on the images `x`: the units j whose
    encoder mean varies across the images, Cov_x(E_q[z_j]) > threshold (Burda et al., 2015, sec. 5.2)."""
    means = torch.cat([model.encode(to_unit_interval(chunk).expand(len(model.latent_dims), -1, -1))[0]
                       for chunk in x.split(EVAL_CHUNK)], dim=1)  # [K, N, N_z]; zero in the padding
    return (means.double().var(1) > threshold).sum(1).tolist()


@torch.inference_mode()
def evaluate_marginal(estimator, model: VAE, x: torch.Tensor, noise: Noise, binarize_dynamic: bool) -> list[float]:
    """Per model of the stack, the average estimated log p(x) of the images `x`."""
    return estimator(model, for_each_model(x, noise, binarize_dynamic), noise=noise).double().mean(1).tolist()


class Evaluation:
    """What a job measures at each evaluation: with an encoder, the ELBO of each whole split, its
    IWAE-k bounds (eval.iwae_k) and active units (eval.active_units); the marginal log-likelihood of
    each split's first images (eval.marginal). Each measure draws its noise afresh from the models' evaluation seeds, the same
    at every evaluation, so that successive points of a curve differ only by the training between them."""

    def __init__(self, cfg: Config, has_encoder: bool):
        self.has_encoder, self.mc_samples, self.iwae_k = has_encoder, cfg.train.mc_samples, list(cfg.eval.iwae_k)
        self.marginal, self.marginal_points = make_estimator(cfg), cfg.eval.marginal_points
        self.binarize_dynamic = str(cfg.data.binarize) == "dynamic"
        self.active_units = cfg.eval.active_units
        self.columns = list(Row.template(self.iwae_k, self.marginal is not None, self.active_units).by_column())

    @staticmethod
    def noise(model: VAE, seeds: list[int], device: torch.device) -> Noise:
        return Noise.seeded(seeds, model.latent_dims, device, model.latent_dim)

    def elbo(self, model: VAE, x: torch.Tensor, seeds: list[int]) -> list[tuple[float, float, float]]:
        """Each model's ELBO, E[log p(x|z)] and KL, averaged over the images `x`."""
        return evaluate(model, x, self.mc_samples, self.noise(model, seeds, x.device), self.binarize_dynamic)

    def of_split(self, model: VAE, x: torch.Tensor, seeds: list[int]) -> list[Measures]:
        """Each model's measures of the images `x`."""
        measures = [Measures() for _ in seeds]
        dynamic = self.binarize_dynamic
        if self.has_encoder:
            for m, (elbo, log_px, kl) in zip(measures, self.elbo(model, x, seeds)):
                m.elbo, m.log_px, m.kl = elbo, log_px, kl
            for k in self.iwae_k:
                bounds = evaluate_iwae(model, x, k, self.noise(model, seeds, x.device), dynamic)
                for m, bound in zip(measures, bounds):
                    m.iwae[k] = bound
            if self.active_units:
                for m, units in zip(measures, active_units(model, x)):
                    m.active_units = units
        if self.marginal is not None:
            x = x[:self.marginal_points]
            marginals = evaluate_marginal(self.marginal, model, x, self.noise(model, seeds, x.device), dynamic)
            for m, marginal in zip(measures, marginals):
                m.log_px_marginal = marginal
        return measures

    def rows(self, model: VAE, samples: int, train_x: torch.Tensor, test_x: torch.Tensor,
             seeds: list[int]) -> list[Row]:
        """Each model's row: its measures of the training and the test images, at `samples`."""
        train, test = self.of_split(model, train_x, seeds), self.of_split(model, test_x, seeds)
        return [Row(samples, *measures) for measures in zip(train, test)]
