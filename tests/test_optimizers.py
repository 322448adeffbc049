import pytest
import torch

from vae_repro.config import OptimizerConfig
from vae_repro.model import VAE
from vae_repro.optimizers import Optimizer

TORCH_OPTIMIZERS = {"adagrad": lambda groups: torch.optim.Adagrad(groups, lr=0.1, fused=True),
                    "adam": lambda groups: torch.optim.Adam(groups, lr=0.01, betas=(0.8, 0.99), eps=1e-4, fused=True)}
OPTIONS = {"adagrad": OptimizerConfig(name="adagrad", lr=0.1),
           "adam": OptimizerConfig(name="adam", lr=0.01, betas=[0.8, 0.99], eps=1e-4)}


@pytest.mark.parametrize("hidden", [8, [8, 6]])
@pytest.mark.parametrize("name", ["adagrad", "adam"])
def test_each_optimizer_is_torch_optims_to_the_bit(name, hidden):
    torch.manual_seed(0)
    mine, reference = VAE(30, hidden, 3), VAE(30, hidden, 3)
    reference.load_state_dict(mine.state_dict())
    biases = [p for n, p in reference.named_parameters() if not n.endswith("weight")]
    theirs_opt = TORCH_OPTIMIZERS[name]([{"params": reference.weights(), "weight_decay": 0.01},
                                         {"params": biases, "weight_decay": 0.0}])
    ours_opt = Optimizer(mine, [OPTIONS[name].lr], 0.01, OPTIONS[name])
    update_all, update_decoder = ours_opt.updater(list(mine.parameters())), ours_opt.updater(mine.decoder_parameters())
    x = torch.rand(1, 5, 30)
    for i in range(4):
        eps, z = torch.randn(1, 1, 5, 3), torch.randn(1, 5, 3)
        reference.negative_elbo_backward(x, eps) if i % 2 else reference.decoder_backward(z, x)
        theirs_opt.step()
        mine.negative_elbo_backward(x, eps) if i % 2 else mine.decoder_backward(z, x)
        update_all() if i % 2 else update_decoder()
    assert all(torch.equal(p, q) for p, q in zip(mine.parameters(), reference.parameters()))
    ours, theirs = ours_opt.own_state_dict(mine, 0), theirs_opt.state_dict()
    assert [g["params"] for g in ours["param_groups"]] == [g["params"] for g in theirs["param_groups"]]
    assert set(ours["param_groups"][0]) == set(theirs["param_groups"][0])
    for i, state in theirs["state"].items():  # a stack of one against a single model's state
        assert set(ours["state"][i]) == set(state)
        assert all(torch.equal(ours["state"][i][key], value[0] if key != "step" else value)
                   for key, value in state.items())
    again = Optimizer(VAE(30, hidden, 3), [0.1], 0.01, OPTIONS[name])
    model_alone = {"state": {i: {key: value[0] if key != "step" else value for key, value in state.items()}
                             for i, state in theirs["state"].items()}, "param_groups": theirs["param_groups"]}
    again.load_own_state_dict(mine, 0, model_alone)  # a checkpoint written with torch.optim
    assert all(torch.equal(a, b) for key in ours_opt.states for a, b in zip(again.states[key], ours_opt.states[key]))
    assert all(torch.equal(a, b) for a, b in zip(again.steps, ours_opt.steps))


@pytest.mark.parametrize("name", ["adagrad", "adam"])
def test_models_of_a_stack_take_their_own_step_sizes_as_they_would_alone(name):
    lrs, seeds = [0.01, 0.03, 0.01], [3, 4, 5]
    stack = VAE(20, [6, 5], [2, 3, 3], seeds=seeds)
    solos = [VAE(20, [6, 5], units, seeds=[seed]) for units, seed in zip([2, 3, 3], seeds)]
    stack_opt = Optimizer(stack, lrs, 0.01, OPTIONS[name])
    solo_opts = [Optimizer(solo, [lr], 0.01, OPTIONS[name]) for solo, lr in zip(solos, lrs)]
    updates = [opt.updater(list(m.parameters())) for opt, m in zip([stack_opt, *solo_opts], [stack, *solos])]
    torch.manual_seed(1)
    for _ in range(3):
        x = torch.rand(3, 4, 20)
        eps = torch.randn(3, 1, 4, 3) * (torch.arange(3) < torch.tensor([2, 3, 3]).view(3, 1)).view(3, 1, 1, 3)
        stack.negative_elbo_backward(x, eps)
        updates[0]()
        for k, solo in enumerate(solos):
            solo.negative_elbo_backward(x[k:k + 1], eps[k:k + 1, ..., :solo.latent_dim])
            updates[k + 1]()
    for k, (solo, opt) in enumerate(zip(solos, solo_opts)):
        theirs, ours = opt.own_state_dict(solo, 0), stack_opt.own_state_dict(stack, k)
        for i, state in theirs["state"].items():
            for key, value in state.items():
                torch.testing.assert_close(ours["state"][i][key], value, rtol=1e-5, atol=1e-7)
