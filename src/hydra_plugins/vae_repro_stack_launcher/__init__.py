"""`hydra/launcher=stack`: a multirun's jobs trained as stacks of models (vae_repro.stacks), each
stack one process: this one, or one SLURM job per stack. Hydra finds it here, in its plugin
package; its options are in conf/hydra/launcher/stack.yaml."""
from hydra_plugins.vae_repro_stack_launcher.stack_launcher import StackLauncher

__all__ = ["StackLauncher"]
