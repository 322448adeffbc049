"""Which jobs of a sweep train together as one stack (the stack launcher's plan).

Jobs stack when they differ only in seed, latent_dim and optimizer.lr (config.STACKABLE) and
stand at the same point (the samples of their checkpoints: a resumed sweep continues each
model where it was). Within such a group, jobs are taken by N_z, and a stack closes when the
padding of its smallest model to the largest N_z would cost that model more than `max_padding`
of its own work, or when it holds `max_models`.
"""
from vae_repro.config import Config, hidden_sizes, stack_key
from vae_repro.likelihoods import LIKELIHOODS


def work_per_sample(cfg: Config, input_dim: int, latent_dim: int) -> int:
    """The weights a step multiplies by, per sample: its products' work, padded to `latent_dim`."""
    outputs, sizes = LIKELIHOODS[str(cfg.model.likelihood)].outputs_per_pixel, hidden_sizes(cfg.model)
    between = sum(a * b for a, b in zip(sizes, sizes[1:]))  # each inner product in the encoder and the decoder
    return input_dim * sizes[0] * (1 + outputs) + 3 * latent_dim * sizes[-1] + 2 * between


def plan_stacks(cfgs: list[Config], positions: list[int], input_dims: list[int], max_models: int,
                max_padding: float) -> list[list[int]]:
    """The jobs (indices into `cfgs`) of each stack, each stack in N_z order, the stacks in the order
    of their first job. positions: the samples of each job's checkpoint (0 without one);
    input_dims: the pixels of each job's images."""
    groups: dict[tuple, list[int]] = {}
    for i, (cfg, position) in enumerate(zip(cfgs, positions)):
        groups.setdefault((stack_key(cfg), position), []).append(i)
    stacks = []
    for members in groups.values():
        stack: list[int] = []
        for i in sorted(members, key=lambda i: cfgs[i].latent_dim):
            smallest, input_dim = cfgs[stack[0] if stack else i], input_dims[i]
            padded = work_per_sample(smallest, input_dim, cfgs[i].latent_dim)
            if stack and (len(stack) == max_models or
                          padded > (1 + max_padding) * work_per_sample(smallest, input_dim, smallest.latent_dim)):
                stacks.append(stack)
                stack = []
            stack.append(i)
        stacks.append(stack)
    return sorted(stacks, key=min)
