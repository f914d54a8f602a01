"""The supernet: gated layers, `AnytimeModel`, its gate DAG, configurations, analytic FLOPs,
ready-made supernets (`zoo`) and `anytime(model)` for a user's own model.

Nothing here trains: `tips_keras.training` imports this package, never the other way round.
"""

from tips_keras.supernet import analytic_flops
from tips_keras.supernet import configs
from tips_keras.supernet import distribute
from tips_keras.supernet import graph_options
from tips_keras.supernet import layers
from tips_keras.supernet import model
from tips_keras.supernet import topology
from tips_keras.supernet import wrap
from tips_keras.supernet import zoo
from tips_keras.supernet.analytic_flops import cost
from tips_keras.supernet.analytic_flops import flops
from tips_keras.supernet.configs import ConfigSpace
from tips_keras.supernet.configs import Configuration
from tips_keras.supernet.distribute import fix_multi_worker_reduce
from tips_keras.supernet.layers import ExitHead
from tips_keras.supernet.layers import ExitSelector
from tips_keras.supernet.layers import PathGate
from tips_keras.supernet.layers import SubnetController
from tips_keras.supernet.model import AnytimeModel
from tips_keras.supernet.topology import read_topology
from tips_keras.supernet.wrap import anytime
