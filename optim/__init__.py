"""Optimizers of Tang et al. 2023: one scaled base optimizer, one rule each.

Import after TF_USE_LEGACY_KERAS=1 is set (the entry points and tests do).
"""

from optim.factory import METHODS, build_optimizer
from optim.rules import (RULES, adagc_scale, agc_scale, clippy_scale,
                         gc_scale, lamb_scale, make_rule, naive_scale,
                         spike_clip, stable_scale, zclip_scale)
from optim.scaled_adagrad import ScaledAdagrad
from optim.scaled_adam import ScaledAdam
from optim.scaled_optimizer import DIAGNOSTICS
