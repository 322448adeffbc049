"""The training algorithms of Figure 2, each one step function chosen once per job.

A step takes a minibatch x ([B, D], values in [0, 1]) and the job's random generator, from
which it draws all of its noise; it updates the model's parameters and returns its loss,
still on the device, for the divergence check. Both algorithms train the same VAE module,
so evaluation, checkpoints and `load_run` treat them alike.
"""
from typing import Callable

import torch

from vae_repro.model import VAE

Step = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def make_optimizer(model: VAE, lr: float, weight_decay: float,
                   warmup_steps: int) -> tuple[torch.optim.Adagrad, torch.optim.lr_scheduler.LambdaLR]:
    """Adagrad with the N(0, I) prior as weight decay on the weight matrices, and a schedule whose
    first `warmup_steps` minibatches have step size 0: they only fill the accumulator, as in the
    author's code. Adagrad keeps an accumulator per parameter, so wake-sleep's two networks each
    have their own."""
    biases = [p for name, p in model.named_parameters() if not name.endswith("weight")]
    groups = [{"params": model.weights(), "weight_decay": weight_decay}, {"params": biases, "weight_decay": 0.0}]
    optimizer = torch.optim.Adagrad(groups, lr=lr, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: float(step >= warmup_steps))
    return optimizer, schedule


def aevb_step(model: VAE, optimizer: torch.optim.Optimizer, mc_samples: int) -> Step:
    """One Adagrad step on the negative ELBO averaged over the batch, with L = mc_samples."""
    def step(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        eps = torch.randn(mc_samples, len(x), model.latent_dim, generator=gen, device=x.device)
        loss = model.negative_elbo_backward(x, eps)
        optimizer.step()
        return loss
    return step


def wake_sleep_step(model: VAE, optimizer: torch.optim.Optimizer, mc_samples: int) -> Step:
    """Wake: z ~ q(z|x), one step of p(x|z) on -log p(x|z). Sleep: z ~ N(0, I) and x ~ p(x|z) from
    the updated p, one step of q(z|x) on -log q(z|x). As `step_wakesleep` in dpkingma/anglepy."""
    def step(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        eps = torch.randn(mc_samples, len(x), model.latent_dim, generator=gen, device=x.device)
        wake_loss = model.wake_backward(x, eps)
        optimizer.step()
        z = torch.randn(len(x), model.latent_dim, generator=gen, device=x.device)
        sleep_loss = model.sleep_backward(model.dream(z, gen), z)
        optimizer.step()
        return wake_loss + sleep_loss
    return step


STEPS = {"aevb": aevb_step, "wake_sleep": wake_sleep_step}
