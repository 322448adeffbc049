"""Reproduces the experiments of Kingma & Welling (2013), Auto-Encoding Variational Bayes."""
import os

# Before MKL's first product (it reads this then, even after `import torch`): MKL's strict
# reproducible mode gives the same products to the bit whatever the number of threads, for a
# few percent of their speed. So a job's results do not depend on its launcher's share of the
# cores, and its threads may follow the machine's load (machine.ThreadCount).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
