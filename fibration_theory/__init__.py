"""fibration-theory: the reference toolkit for Fibration Policy Optimization (arXiv 2603.08239).

>>> from fibration_theory import Hierarchy, losses, gating
"""

from fibration_theory import gating, losses
from fibration_theory.hierarchy import Hierarchy, Level, pad_ragged

__all__ = ["Hierarchy", "Level", "gating", "losses", "pad_ragged"]
__version__ = "0.1.0"
