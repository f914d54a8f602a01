"""tips-keras: TIPS (Topologically Important Path Sampling) for anytime networks in Keras 3.

The public API reads like tensorflow-model-optimization's: build or wrap a gated supernet, fit it
with the TIPS callback, search configurations under FLOPs budgets, extract and export them.

Example:
    >>> import tips_keras as tips
    >>> model = tips.zoo.anytime_resnet(input_shape=(28, 28, 1), num_classes=10)
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    >>> cb = tips.TIPSCallback(sampler="tips")
    >>> model.fit(x, y, epochs=5, callbacks=[cb])  # doctest: +SKIP
    >>> cb.importance, tips.flops(model, "smallest")  # doctest: +SKIP
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # silence TF C++ start-up logs unless the user set it

from tips_keras import supernet  # noqa: E402
from tips_keras import training
from tips_keras import data
from tips_keras import dtmc
from tips_keras import extraction
from tips_keras import io
from tips_keras import plots
from tips_keras import search
from tips_keras.extraction import extract
from tips_keras.io import load_supernet
from tips_keras.supernet import analytic_flops
from tips_keras.supernet import configs
from tips_keras.supernet import zoo
from tips_keras.supernet import AnytimeModel
from tips_keras.supernet import ConfigSpace
from tips_keras.supernet import Configuration
from tips_keras.supernet import ExitHead
from tips_keras.supernet import ExitSelector
from tips_keras.supernet import PathGate
from tips_keras.supernet import SubnetController
from tips_keras.supernet import anytime
from tips_keras.supernet import cost
from tips_keras.supernet import flops
from tips_keras.supernet import read_topology
from tips_keras.training import TIPSCallback
from tips_keras.training import batchnorm
from tips_keras.training import recalibrate_batchnorm
from tips_keras.training import recalibrated
from tips_keras.training import sampling
from tips_keras.training import signals

__version__ = "0.1.0"
