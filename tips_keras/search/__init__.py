"""Search the exit and gates of a trained supernet for each FLOPs budget (keras-tuner driven).

Pieces, one per module: `SearchSpace` (configurations, exact FLOPs, budgets, repairs),
`TIPSOracle` / `RandomOracle` (keras-tuner oracles that enforce the budgets),
`SharedPrefixEvaluator` (the default evaluation: each feature map computed once per state of the
gates before it, BatchNorm recalibrated per block, cached in a `FeatureCache`; optionally with
bfloat16 convolutions, `precision`), `ConfigEvaluator`
(one compiled evaluation function per configuration, no training, no rebuild), `ConfigTuner` (the keras-tuner
`Tuner`), `ParetoFront` (table, best per budget, JSON, plot) and `ExitSearch`, which ties them
together. `cli_search` is the command-line entry point.

Example:
    >>> search = tips.search.ExitSearch(model, validation_data=(x_val, y_val),
    ...                                 budgets=[0.25, 0.5, 0.75, 1.0], max_trials=300,
    ...                                 directory="runs/search")  # doctest: +SKIP
    >>> front = search.run()  # doctest: +SKIP
    >>> print(front.table())  # doctest: +SKIP
    >>> front.best(0.5).config  # doctest: +SKIP
    >>> front.plot("pareto.png")  # doctest: +SKIP
"""

from tips_keras.search.cli import add_arguments
from tips_keras.search.cli import cli_search
from tips_keras.search.cli import run_from_args
from tips_keras.training.evaluation import ConfigEvaluator
from tips_keras.search.exit_search import ExitSearch
from tips_keras.search.feature_cache import FeatureCache
from tips_keras.search.front import ParetoFront
from tips_keras.search.front import ParetoPoint
from tips_keras.search.oracle import ConfigOracle
from tips_keras.search.oracle import RandomOracle
from tips_keras.search.oracle import TIPSOracle
from tips_keras.search.oracle import get_oracle
from tips_keras.search.space import SearchSpace
from tips_keras.search.space import budget_to_flops
from tips_keras.search.shared_prefix import SharedPrefixEvaluator
from tips_keras.search.shared_prefix import UnsupportedModelError
from tips_keras.search.tuner import ConfigTuner

__all__ = [
    "ConfigEvaluator", "ConfigOracle", "ConfigTuner", "ExitSearch", "FeatureCache", "ParetoFront",
    "ParetoPoint", "RandomOracle", "SearchSpace", "SharedPrefixEvaluator", "TIPSOracle",
    "UnsupportedModelError", "add_arguments", "budget_to_flops", "cli_search", "get_oracle",
    "run_from_args",
]
