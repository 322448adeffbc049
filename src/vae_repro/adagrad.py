"""The paper's optimizer: Adagrad with the N(0, I) weight prior as weight decay on the weight
matrices, computed by PyTorch's fused Adagrad kernel called directly.

`torch.optim.Adagrad(fused=True)` calls the same kernel, but first spends as long again in
Python on every step: grouping tensors by device and dtype, checking options, and a learning
rate scheduler for the warm-up. Here the lists the kernel takes are built once, and the
warm-up is a step size of 0 that the training loop switches off once. The result is the
same to the bit (tests/test_model.py), and `state_dict` has torch.optim.Adagrad's layout,
so checkpoints written with either load in both.
"""
from typing import Callable

import torch
from torch import nn

EPS = 1e-10  # torch.optim.Adagrad's default, added to the square root of the accumulator


class Adagrad:
    """Adagrad on `model`'s parameters: weight decay on its weight matrices (`model.weights()`), none on
    the biases. Each parameter has its own accumulator, so networks updated apart (wake-sleep) keep
    apart. `lr` is the step size used by the next update (0 during the warm-up)."""

    def __init__(self, model: nn.Module, lr: float, weight_decay: float):
        weights = model.weights()
        biases = [p for p in model.parameters() if all(p is not w for w in weights)]
        self.params = weights + biases  # torch.optim.Adagrad's order: the weight group, then the bias group
        self.n_weights, self.weight_decay = len(weights), weight_decay
        self.sums = [torch.zeros_like(p) for p in self.params]
        # The kernel reads a step count per parameter only to decay the step size, and lr_decay is 0:
        # the counts are kept as plain numbers, and given to it as tensors that never change (on the
        # parameters' device, where the CUDA kernel wants every tensor it is given).
        self.counts = [0] * len(self.params)
        self._steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]
        self.lr = lr

    def updater(self, params: list[nn.Parameter]) -> Callable[[], None]:
        """A function that takes one Adagrad step of `params` (some or all of the model's) from their .grad."""
        chosen = [any(p is q for q in params) for p in self.params]
        groups = []
        for indices, decay in ((range(self.n_weights), self.weight_decay), (range(self.n_weights, len(self.params)), 0.0)):
            indices = [i for i in indices if chosen[i]]
            groups.append(([self.params[i] for i in indices], [self.sums[i] for i in indices],
                           [self._steps[i] for i in indices], decay))
        counted = [i for i in range(len(self.params)) if chosen[i]]

        def update() -> None:
            for members, sums, steps, decay in groups:
                torch._fused_adagrad_(members, [p.grad for p in members], sums, steps, lr=self.lr, lr_decay=0.0,
                                      weight_decay=decay, eps=EPS, maximize=False)
            for i in counted:
                self.counts[i] += 1
        return update

    def state_dict(self) -> dict:
        """As torch.optim.Adagrad's: per parameter index its step and accumulator, and the two groups."""
        groups = [{"params": list(range(self.n_weights)), "weight_decay": self.weight_decay},
                  {"params": list(range(self.n_weights, len(self.params))), "weight_decay": 0.0}]
        for group in groups:
            group.update(lr=self.lr, lr_decay=0.0, eps=EPS, initial_accumulator_value=0.0, foreach=None,
                         maximize=False, differentiable=False, fused=True)
        return {"state": {i: {"step": torch.tensor(float(count)), "sum": accumulator.clone()}
                          for i, (count, accumulator) in enumerate(zip(self.counts, self.sums))},
                "param_groups": groups}

    def load_state_dict(self, state: dict) -> None:
        for i, accumulator in enumerate(self.sums):
            self.counts[i] = int(state["state"][i]["step"].item())
            accumulator.copy_(state["state"][i]["sum"])
