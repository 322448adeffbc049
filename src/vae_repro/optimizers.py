"""The optimizers, Adagrad (the paper's) and Adam, on a stack of models: PyTorch's fused kernels
called directly, with the N(0, I) weight prior as weight decay on the weight matrices.

`torch.optim.Adagrad(fused=True)` and `torch.optim.Adam(fused=True)` call the same kernels, but
first spend as long again in Python on every step: grouping tensors by device and dtype, and
checking options. Here the lists the kernel takes are built once, and Adagrad's warm-up is a step
size of 0 that the training loop switches off once. The result is torch.optim's to the bit
(tests/test_optimizers.py), and each model's `own_state_dict` has torch.optim's layout, so
checkpoints written with either load in both.
"""
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from vae_repro.config import OptimizerConfig
from vae_repro.own_tensors import load_own_tensor, own_tensor


@dataclass(frozen=True)
class Rule:
    """An update rule: the state it keeps per parameter (besides the step count), the fused kernel's
    call, and the options torch.optim's state dict records for it."""
    state_names: tuple[str, ...]
    kernel: Callable[..., None]  # (params, grads, states..., steps, lr=, weight_decay=, cfg=)
    group_options: Callable[[OptimizerConfig], dict]


def adagrad_kernel(params, grads, sums, steps, *, lr, weight_decay, cfg):
    torch._fused_adagrad_(params, grads, sums, steps, lr=lr, lr_decay=0.0, weight_decay=weight_decay, eps=cfg.eps,
                          maximize=False)


def adam_kernel(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, weight_decay, cfg):
    torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=lr, beta1=cfg.betas[0],
                       beta2=cfg.betas[1], weight_decay=weight_decay, eps=cfg.eps, amsgrad=False, maximize=False)


RULES = {
    "adagrad": Rule(("sum",), adagrad_kernel, lambda cfg: dict(
        lr_decay=0.0, eps=cfg.eps, initial_accumulator_value=0.0, foreach=None, maximize=False, differentiable=False,
        fused=True)),
    "adam": Rule(("exp_avg", "exp_avg_sq"), adam_kernel, lambda cfg: dict(
        betas=tuple(cfg.betas), eps=cfg.eps, amsgrad=False, maximize=False, foreach=None, capturable=False,
        differentiable=False, fused=True, decoupled_weight_decay=False)),
}


class Optimizer:
    """`optimizer.name`'s rule on a stack of models' parameters: weight decay on its weight matrices
    (`model.weights()`), none on the biases. Each parameter has its own state and step count, so
    networks updated apart (wake-sleep) keep apart. `lrs` are the models' step sizes used by the next
    update (0 during the warm-up): models that share one are updated by one call of the kernel, the
    whole stack where all do."""

    def __init__(self, model: nn.Module, lrs: list[float], weight_decay: float, cfg: OptimizerConfig):
        self.cfg, self.rule = cfg, RULES[str(cfg.name)]
        weights = model.weights()
        named = list(model.named_parameters())
        # torch.optim's order: the weight group, then the bias group
        self.names = [n for n, p in named if any(p is w for w in weights)] + [
            n for n, p in named if all(p is not w for w in weights)]
        self.params = [model.get_parameter(n) for n in self.names]
        self.n_weights, self.weight_decay = len(weights), weight_decay
        self.states = {name: [torch.zeros_like(p) for p in self.params] for name in self.rule.state_names}
        # Tensors on the parameters' device, where the CUDA kernels (and a CUDA graph) want them.
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]
        self.lrs = list(lrs)

    def _by_step_size(self) -> list[tuple[float, list[int] | None]]:
        """The models of each step size; None for all of them."""
        if len(set(self.lrs)) == 1:
            return [(self.lrs[0], None)]
        return [(lr, [k for k, own in enumerate(self.lrs) if own == lr]) for lr in dict.fromkeys(self.lrs)]

    def updater(self, params: list[nn.Parameter]) -> Callable[[], None]:
        """A function that takes one step of `params` (some or all of the model's) from their .grad."""
        chosen = [i for i, p in enumerate(self.params) if any(p is q for q in params)]
        groups = [([i for i in chosen if i < self.n_weights], self.weight_decay),
                  ([i for i in chosen if i >= self.n_weights], 0.0)]
        steps = [self.steps[i] for i in chosen]

        @torch.no_grad()
        def update() -> None:
            torch._foreach_add_(steps, 1)
            for lr, models in self._by_step_size():
                for indices, decay in groups:
                    tensors = [[self.params[i] for i in indices], [self.params[i].grad for i in indices],
                               *([state[i] for i in indices] for state in self.states.values()),
                               [self.steps[i] for i in indices]]
                    if models is not None:  # each model's slices; a parameter's slices share its step count
                        tensors = [[t[k] for t in ts for k in models] for ts in tensors[:-1]] + [
                            [t for t in tensors[-1] for _ in models]]
                    self.rule.kernel(*tensors, lr=lr, weight_decay=decay, cfg=self.cfg)
        return update

    def keep(self, take: Callable) -> None:
        """Go on with some models of the stack: `take` cuts a [K, ...] tensor or a list to them."""
        self.states = {name: [take(t) for t in state] for name, state in self.states.items()}
        self.lrs = take(self.lrs)

    def own_state_dict(self, model: nn.Module, k: int) -> dict:
        """Model k's state as torch.optim's for the model alone: per parameter index its step and state,
        and the two groups."""
        groups = [{"params": list(range(self.n_weights)), "weight_decay": self.weight_decay},
                  {"params": list(range(self.n_weights, len(self.params))), "weight_decay": 0.0}]
        for group in groups:
            group.update(lr=self.lrs[k], **self.rule.group_options(self.cfg))
        return {"state": {i: {"step": self.steps[i].detach().cpu().clone(),
                              **{key: own_tensor(model, name, state[i], k) for key, state in self.states.items()}}
                          for i, name in enumerate(self.names)},
                "param_groups": groups}

    def load_own_state_dict(self, model: nn.Module, k: int, state: dict) -> None:
        for i, name in enumerate(self.names):
            own = state["state"][i]
            missing = [key for key in self.states if key not in own]
            if missing:
                raise ValueError(f"no {', '.join(missing)} for {name}: the state of another optimizer")
            self.steps[i].fill_(float(own["step"].item()))
            for key, tensors in self.states.items():
                load_own_tensor(model, name, tensors[i], k, own[key])
