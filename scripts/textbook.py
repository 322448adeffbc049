"""The baseline of scripts/benchmark.py: the VAE as tutorials write it (pytorch/examples vae/main.py),
with the paper's sizes, init and weight prior, trained by a DataLoader loop with autograd and
torch.optim.Adagrad."""
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vae_repro.data import DATASETS

LATENT, HIDDEN, INPUT, BATCH, LR = 20, 500, 784, 100, 0.02


def tanh_layers(sizes):
    return nn.Sequential(*(module for a, b in zip(sizes, sizes[1:]) for module in (nn.Linear(a, b), nn.Tanh())))


class TextbookVAE(nn.Module):
    """The VAE as tutorials write it (pytorch/examples vae/main.py), with the paper's sizes and init;
    `hidden` a list for more hidden layers (mirrored in the decoder); `gaussian` gives the Frey Face
    decoder (sigmoid means and a log variance per pixel)."""

    def __init__(self, input_dim=INPUT, hidden=HIDDEN, latent=LATENT, gaussian=False):
        super().__init__()
        hidden = [hidden] if isinstance(hidden, int) else hidden
        self.input_dim, self.gaussian = input_dim, gaussian
        self.encoder, self.decoder = tanh_layers([input_dim, *hidden]), tanh_layers([latent, *reversed(hidden)])
        self.fc21, self.fc22 = nn.Linear(hidden[-1], latent), nn.Linear(hidden[-1], latent)
        self.fc4 = nn.Linear(hidden[0], input_dim * (2 if gaussian else 1))
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, 0, 0.01)
                nn.init.zeros_(layer.bias)

    def forward(self, x):
        h = self.encoder(x.view(-1, self.input_dim))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        out = self.fc4(self.decoder(z))
        if self.gaussian:
            mean, x_logvar = out.chunk(2, dim=-1)
            return (torch.sigmoid(mean), x_logvar), mu, logvar
        return torch.sigmoid(out), mu, logvar


def textbook_loss(recon, mu, logvar, x):
    x = x.view(len(x), -1)
    if isinstance(recon, tuple):  # Gaussian decoder
        nll = -torch.distributions.Normal(recon[0], torch.exp(0.5 * recon[1])).log_prob(x).sum()
    else:
        nll = F.binary_cross_entropy(recon, x, reduction="sum")
    return nll - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


class Textbook:
    def __init__(self, train_set, test_set, device, model=None):
        self.train_set, self.test_set = train_set, test_set
        self.loader = DataLoader(self.train_set, batch_size=BATCH, shuffle=True)
        self.device = device
        torch.manual_seed(0)
        self.model = (model or TextbookVAE()).to(device)
        weight_decay = 1 / len(train_set)  # the N(0, I) weight prior per datapoint
        self.optimizer = torch.optim.Adagrad(self.model.parameters(), lr=LR, weight_decay=weight_decay)

    def train(self, samples):
        seen, train_loss = 0, 0.0
        while seen < samples:
            for x, _ in self.loader:
                x = x.to(self.device)
                self.optimizer.zero_grad()
                loss = textbook_loss(*self.model(x), x) / len(x)
                loss.backward()
                train_loss += loss.item()
                self.optimizer.step()
                seen += len(x)
                if seen >= samples:
                    break

    def evaluate(self):
        elbos = []
        with torch.no_grad():
            for dataset in (self.train_set, self.test_set):
                total = 0.0
                for x, _ in DataLoader(dataset, batch_size=BATCH):
                    x = x.to(self.device)
                    total -= textbook_loss(*self.model(x), x).item()
                elbos.append(total / len(dataset))
        return elbos


def textbook_mnist(dataset, root, device, model=None):
    """torchvision's dataset with a per-image ToTensor, as tutorials load MNIST; the paper's model
    unless `model` is given."""
    transform, dataset_cls = torchvision.transforms.ToTensor(), getattr(torchvision.datasets, DATASETS[dataset])
    return Textbook(*(dataset_cls(root, train=train, download=False, transform=transform) for train in (True, False)),
                    device, model)


def textbook_frey(train_x, test_x, device, hidden, latent, gaussian=True):
    """The images as one float tensor in a TensorDataset, as tutorials load a .mat file; the Gaussian
    decoder (the Bernoulli one with `gaussian` false)."""
    sets = [TensorDataset(x.float() / 255, torch.zeros(len(x))) for x in (train_x, test_x)]
    return Textbook(*sets, device, TextbookVAE(train_x.shape[1], hidden, latent, gaussian=gaussian))
