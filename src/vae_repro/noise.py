"""The random draws of a stack of K models, each from its own generator, so that model k draws
exactly what it would draw alone: N(0, I) in its own N_z units of z (zero in the padding up to
the stack's largest N_z), and normal, uniform or Bernoulli tensors of any shape. A draw is K
calls, one per model; on CUDA each generator is registered with the step's graph."""
import torch


class Noise:
    def __init__(self, gens: list[torch.Generator], latent_dims: list[int], width: int | None = None):
        self.gens, self.latent_dims = list(gens), list(latent_dims)
        self.width = width or max(latent_dims)  # the stack's N_z, padding included

    @classmethod
    def seeded(cls, seeds: list[int], latent_dims: list[int], device: torch.device | str = "cpu",
               width: int | None = None) -> "Noise":
        return cls([torch.Generator(device=device).manual_seed(s) for s in seeds], latent_dims, width)

    def _device(self) -> torch.device:
        return self.gens[0].device

    def latent(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[K, *shape, N_z of the largest model]: each model's N(0, I) draws in its own units, zeros after them."""
        padded = self.width
        out = (torch.empty if min(self.latent_dims) == padded else torch.zeros)(
            len(self.gens), *shape, padded, dtype=dtype, device=self._device())
        for k, (gen, units) in enumerate(zip(self.gens, self.latent_dims)):
            if units == padded:
                torch.randn(*shape, units, generator=gen, dtype=dtype, device=out.device, out=out[k])
            else:
                out[k, ..., :units] = torch.randn(*shape, units, generator=gen, dtype=dtype, device=out.device)
        return out

    def normal(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        out = torch.empty(len(self.gens), *shape, dtype=dtype, device=self._device())
        for k, gen in enumerate(self.gens):
            torch.randn(*shape, generator=gen, dtype=dtype, device=out.device, out=out[k])
        return out

    def uniform(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        out = torch.empty(len(self.gens), *shape, dtype=dtype, device=self._device())
        for k, gen in enumerate(self.gens):
            torch.rand(*shape, generator=gen, dtype=dtype, device=out.device, out=out[k])
        return out

    def bernoulli(self, probs: torch.Tensor) -> torch.Tensor:
        """[K, ...] draws with the probabilities `probs` ([K, ...]), model k's from its own generator."""
        return torch.stack([torch.bernoulli(p, generator=gen) for p, gen in zip(probs, self.gens)])

    def permutations(self, n: int) -> torch.Tensor:
        """[K, n]: a random order of n items per model."""
        return torch.stack([torch.randperm(n, generator=gen, device=self._device()) for gen in self.gens])
