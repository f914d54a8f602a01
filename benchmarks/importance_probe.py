"""Why the TIPS importance ignores training signals: TAS spread and importance with / without weights.

Builds the standard comparison's supernet (anytime_resnet(8, 16, 32), 2 blocks per stage), draws
one epoch of TIPS paths (T = 79 steps, P(on) = 0.5 as in epoch 1), and prints for several
couplings λ the range of TAS over the nodes, the per-gate importance unweighted and with random
per-path weights spread like the measured loss ratios (log-normal, sigma 0.5), and the largest TAS
change the weights cause. Command (from the repository root):

    .venv/bin/python benchmarks/importance_probe.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tips_keras as tips  # noqa: E402
from tips_keras import dtmc  # noqa: E402


def main(steps=79, seed=0, couplings=(1.0, 0.1, 0.01)):
    model = tips.zoo.anytime_resnet(input_shape=(28, 28, 1), num_classes=10, widths=(8, 16, 32),
                                    blocks_per_stage=2)
    topo = model.topology
    sampler = tips.sampling.get_sampler("tips", model.config_space)
    rng = np.random.default_rng(seed)
    vectors = np.concatenate([sampler.sample(rng) for _ in range(steps)])
    masks = topo.edge_masks(vectors, prune=False)
    weights = np.exp(rng.normal(0.0, 0.5, len(vectors)))
    print(f"T = {len(vectors)} sampled sub-networks, {topo.num_nodes} nodes, gates {model.config_space.gate_names}")
    print("| λ | TAS min | TAS max | importance (unweighted) | importance (weighted) | max TAS change |")
    print("|---|---|---|---|---|---|")
    for lam in couplings:
        args = (topo.num_nodes, topo.edges, topo.edge_gate, topo.num_gates, masks, topo.source, topo.sink)
        plain, tas_plain = dtmc.importance_from_configs(*args, lam=lam)
        weighted, tas_weighted = dtmc.importance_from_configs(*args, lam=lam, weights=weights)
        print(f"| {lam} | {tas_plain.min():.4f} | {tas_plain.max():.4f} | {np.round(plain, 3).tolist()} | "
              f"{np.round(weighted, 3).tolist()} | {np.abs(tas_plain - tas_weighted).max():.1e} |")


if __name__ == "__main__":
    main()
