"""A command line as the user types it, split into Hydra's options and the overrides.

Hydra reads its overrides as one run of positional arguments, so `latent_dim=2 -m seed=0,1`
(overrides on both sides of `-m`) is refused there, and so is any override appended after a
final `-m`. The command takes the options and the overrides in any order, and hands Hydra the
overrides first and the options after, the form `python -m vae_repro.run latent_dim=2,5 -m`.
"""
from dataclasses import dataclass

# Hydra's options that take a value (its --help lists them); --info takes one only from its choices.
VALUE_OPTIONS = {"-c", "--cfg", "-p", "--package", "-cp", "--config-path", "-cn", "--config-name", "-cd",
                 "--config-dir", "--experimental-rerun"}
INFO_OPTIONS = {"-i", "--info"}
INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
MULTIRUN = {"-m", "--multirun"}


@dataclass
class CommandLine:
    words: list[str]  # as the user typed them
    options: list[str]  # Hydra's, each followed by its value, in the user's order
    overrides: list[str]  # KEY=VALUE, +KEY=VALUE, ~KEY, in the user's order

    @property
    def multirun(self) -> bool:
        return bool(MULTIRUN & set(self.options))

    @property
    def other_options(self) -> list[str]:
        """The options but -m, each `--option=value` as two words."""
        words = [part for o in self.options for part in (o.split("=", 1) if o.startswith("--") else [o])]
        return [w for w in words if w not in MULTIRUN]

    def for_hydra(self) -> list[str]:
        """The words to hand Hydra: the overrides, then the options."""
        return [*self.overrides, *self.options]


def split_command_line(argv: list[str]) -> CommandLine:
    options, overrides = [], []
    at = 0
    while at < len(argv):
        word = argv[at]
        at += 1
        if not word.startswith("-"):
            overrides.append(word)
            continue
        options.append(word)
        takes_value = word in VALUE_OPTIONS or word in INFO_OPTIONS and at < len(argv) and argv[at] in INFO_CHOICES
        if takes_value and at < len(argv):
            options.append(argv[at])
            at += 1
    return CommandLine(list(argv), options, overrides)
