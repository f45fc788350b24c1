"""``sodeep bench``: every differentiable ranker compared on speed, fidelity, learning to sort
multi-digit images, and downstream regression with SpearmanLoss.

An application like :mod:`sodeep.brainage`: the core library never imports it, and importing it
loads neither scikit-learn nor matplotlib (each part imports what it needs when it runs).
"""

from sodeep.benchmark.config import PARTS, BenchConfig

__all__ = ["PARTS", "BenchConfig"]
