"""Training an anytime supernet inside ``model.fit``.

One module per concept: `callback` (`TIPSCallback`, the entry point), `recipes` (named defaults
and argument checks), `step` (the multi-path, multi-exit training step), `teacher` (the EMA
teacher of in-place distillation), `optimizer` (masked updates), `schedule` (warm-up + cosine
learning rate), `sampling` (which sub-networks a step trains), `signals` (training signals for
the DTMC), `batchnorm` (BatchNorm statistics per configuration), `calibration` (the training
images kept on the model for it), `evaluation` (compiled accuracy
of configurations) and `validation` (what the callback takes from ``fit`` and reports).
"""

from tips_keras.training import batchnorm
from tips_keras.training import calibration
from tips_keras.training import evaluation
from tips_keras.training import optimizer
from tips_keras.training import recipes
from tips_keras.training import importance
from tips_keras.training import sampling
from tips_keras.training import schedule
from tips_keras.training import signals
from tips_keras.training import state
from tips_keras.training import step
from tips_keras.training import teacher
from tips_keras.training import validation
from tips_keras.training.batchnorm import recalibrate_batchnorm
from tips_keras.training.batchnorm import recalibrated
from tips_keras.training.callback import TIPSCallback
from tips_keras.training.recipes import RECIPES
