from __future__ import annotations

import numpy as np
import torch

from neurflow.core.engine import NeurFlow
from neurflow.core.faithfulness import edge_correlation, fidelity_curves, group_ablation


def planted_circuit(planted):
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.uniform(0, 1, (16, 3, 8, 8)) * rng.uniform(0, 1, (16, 3, 1, 1)), dtype=torch.float32)
    circuit = NeurFlow(["fc", "up", "low"], tau=2, top_n=10, granularities=(1.0,), select="all",
                       ig_steps=8).fit(planted, x, 0).circuit_
    return circuit, x


def test_ablating_circuit_groups_beats_random(planted):
    circuit, x = planted_circuit(planted)
    report = group_ablation(planted, circuit, x, n_random=8)
    up_rows = [r for r in report["groups"] if r["layer"] == "up"]
    assert up_rows
    for row in up_rows:
        assert row["logit_change"] < 0  # every group holds up neuron 0 or 1, which feed the class-0 logit
        if row["size"] == 2:
            # {0, 1} is the whole input of the class-0 logit; random pairs of up's 3 channels usually
            # include channel 2, which does not feed it.
            assert row["logit_change"] < row["random_logit_change_mean"]


def test_fidelity_masking_core_neurons_hurts_more_than_random(planted):
    circuit, x = planted_circuit(planted)
    fid = fidelity_curves(planted, circuit, x, n_random=4)
    single = fid["curves"]["single_mask"][0]
    assert single["layer"] == "up"
    # Zeroing up channels 0 and 1 leaves only class 1's input: nothing is predicted as class 0.
    assert single["core"] == 0.0
    retain = fid["curves"]["single_retain"][0]
    assert retain["core"] >= retain["random_mean"]


def test_edge_weights_correlate_with_measured_effects(planted):
    circuit, x = planted_circuit(planted)
    out = edge_correlation(planted, circuit, x)
    assert out["n_edges"] == len(circuit.group_edges) >= 3
    assert out["pearson"] > 0.3 and out["spearman"] > 0.3
