"""The paper's optimizer: Adagrad with the N(0, I) weight prior as weight decay on the weight
matrices, computed by PyTorch's fused Adagrad kernel called directly.

`torch.optim.Adagrad(fused=True)` calls the same kernel, but first spends as long again in
Python on every step: grouping tensors by device and dtype, checking options, and a learning
rate scheduler for the warm-up. Here the lists the kernel takes are built once, and the
warm-up is a step size of 0 that the training loop switches off once. The result is the
same to the bit (tests/test_model.py), and each model's `own_state_dict` has torch.optim.Adagrad's
layout, so checkpoints written with either load in both.
"""
from typing import Callable

import torch
from torch import nn

from vae_repro.own_tensors import load_own_tensor, own_tensor

EPS = 1e-10  # torch.optim.Adagrad's default, added to the square root of the accumulator


class Adagrad:
    """Adagrad on a stack of models' parameters: weight decay on its weight matrices (`model.weights()`),
    none on the biases. Each parameter has its own accumulator, so networks updated apart (wake-sleep)
    keep apart. `lrs` are the models' step sizes used by the next update (0 during the warm-up): models
    that share one are updated by one call of the kernel, the whole stack where all do."""

    def __init__(self, model: nn.Module, lrs: list[float], weight_decay: float):
        weights = model.weights()
        named = list(model.named_parameters())
        # torch.optim.Adagrad's order: the weight group, then the bias group
        self.names = [n for n, p in named if any(p is w for w in weights)] + [
            n for n, p in named if all(p is not w for w in weights)]
        self.params = [model.get_parameter(n) for n in self.names]
        self.n_weights, self.weight_decay = len(weights), weight_decay
        self.sums = [torch.zeros_like(p) for p in self.params]
        # The kernel reads a step count per parameter only to decay the step size, and lr_decay is 0:
        # the counts are kept as plain numbers, and given to it as a tensor that never changes (on the
        # parameters' device, where the CUDA kernel wants every tensor it is given).
        self.counts = [0] * len(self.params)
        self._step = torch.zeros((), dtype=torch.float32, device=self.params[0].device)
        self.lrs = list(lrs)

    def _by_step_size(self) -> list[tuple[float, list[int] | None]]:
        """The models of each step size; None for all of them."""
        if len(set(self.lrs)) == 1:
            return [(self.lrs[0], None)]
        return [(lr, [k for k, own in enumerate(self.lrs) if own == lr]) for lr in dict.fromkeys(self.lrs)]

    def updater(self, params: list[nn.Parameter]) -> Callable[[], None]:
        """A function that takes one Adagrad step of `params` (some or all of the model's) from their .grad."""
        chosen = [i for i, p in enumerate(self.params) if any(p is q for q in params)]
        groups = [([i for i in chosen if i < self.n_weights], self.weight_decay),
                  ([i for i in chosen if i >= self.n_weights], 0.0)]

        @torch.no_grad()
        def update() -> None:
            for lr, models in self._by_step_size():
                for indices, decay in groups:
                    members = [self.params[i] for i in indices]
                    grads, sums = [p.grad for p in members], [self.sums[i] for i in indices]
                    if models is not None:  # each model's slices
                        members, grads, sums = ([t[k] for t in tensors for k in models]
                                                for tensors in (members, grads, sums))
                    torch._fused_adagrad_(members, grads, sums, [self._step] * len(members), lr=lr, lr_decay=0.0,
                                          weight_decay=decay, eps=EPS, maximize=False)
            for i in chosen:
                self.counts[i] += 1
        return update

    def own_state_dict(self, model: nn.Module, k: int) -> dict:
        """Model k's state as torch.optim.Adagrad's for the model alone: per parameter index its step and
        accumulator, and the two groups."""
        groups = [{"params": list(range(self.n_weights)), "weight_decay": self.weight_decay},
                  {"params": list(range(self.n_weights, len(self.params))), "weight_decay": 0.0}]
        for group in groups:
            group.update(lr=self.lrs[k], lr_decay=0.0, eps=EPS, initial_accumulator_value=0.0, foreach=None,
                         maximize=False, differentiable=False, fused=True)
        return {"state": {i: {"step": torch.tensor(float(count)), "sum": own_tensor(model, name, accumulator, k)}
                          for i, (name, count, accumulator) in enumerate(zip(self.names, self.counts, self.sums))},
                "param_groups": groups}

    def load_own_state_dict(self, model: nn.Module, k: int, state: dict) -> None:
        for i, (name, accumulator) in enumerate(zip(self.names, self.sums)):
            self.counts[i] = int(state["state"][i]["step"].item())
            load_own_tensor(model, name, accumulator, k, state["state"][i]["sum"])
