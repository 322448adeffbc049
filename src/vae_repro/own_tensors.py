"""Each model's own part of a stack's tensors, in the shapes the model would have alone: what
files in a single model's format hold (model.pt, a checkpoint's model and optimizer state), and
how a model of the stack is initialised as it would be alone.

Model k of a stack has latent_dims[k] units of z, padded to the stack's largest N_z: the rows
of the encoder's output layer (means, then log variances) and the columns of the decoder's
first layer past its own units are padding; every other tensor is the model's whole slice."""
import torch
from torch import nn


def own_parts(model: nn.Module, name: str, k: int) -> list[tuple]:
    """(index into model k's slice of the stacked tensor `name`, index into its own tensor) pairs."""
    units, padded = model.latent_dims[k], model.latent_dim
    if name.startswith("enc_out."):  # the means' rows, then the log variances'
        return [(slice(0, units), slice(0, units)), (slice(padded, padded + units), slice(units, 2 * units))]
    if name == "dec_hidden.weight":
        return [((slice(None), slice(0, units)), ...)]
    return [(..., ...)]


def own_shape(model: nn.Module, name: str, k: int) -> tuple[int, ...]:
    shape, units = list(model.get_parameter(name).shape[1:]), model.latent_dims[k]
    if name.startswith("enc_out."):
        shape[0] = 2 * units
    elif name == "dec_hidden.weight":
        shape[1] = units
    return tuple(shape)


def own_tensor(model: nn.Module, name: str, stacked: torch.Tensor, k: int) -> torch.Tensor:
    """Model k's part of `stacked`: the parameter `name` or a tensor of its shape (the optimizer's state)."""
    return torch.cat([stacked[k][part] for part, _ in own_parts(model, name, k)]).detach().clone()


def load_own_tensor(model: nn.Module, name: str, stacked: torch.Tensor, k: int, value: torch.Tensor) -> None:
    if tuple(value.shape) != own_shape(model, name, k):
        raise ValueError(f"{name}: shape {tuple(value.shape)}, expected {own_shape(model, name, k)}")
    with torch.no_grad():
        for part, own in own_parts(model, name, k):
            stacked[k][part] = value[own]


def own_state_dict(model: nn.Module, k: int) -> dict[str, torch.Tensor]:
    """Model k's parameters as a single model's state_dict."""
    return {name: own_tensor(model, name, p, k) for name, p in model.named_parameters()}


def load_own_state_dict(model: nn.Module, k: int, state: dict[str, torch.Tensor]) -> None:
    names = [name for name, _ in model.named_parameters()]
    if set(state) != set(names):
        raise ValueError(f"expected the keys {', '.join(names)}")
    for name in names:
        load_own_tensor(model, name, model.get_parameter(name), k, state[name])
