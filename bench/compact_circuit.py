"""Size and load time of a real-size circuit document, full JSON against compact (JSON + sidecar).

The circuit is synthetic but shaped like a ResNet-50 fit at 224 px, tau 16, top_n 50, 50 images,
five layers (fc, layer4, layer3, layer2, layer1): the neuron counts and vector widths of such a fit,
random numbers in them. ``python -m bench.compact_circuit [--neurons 1,16,256,512]`` prints one
JSON line: bytes and seconds to load each way. ``--shape measured`` takes the layers of the real
fit in ``bench/results/realsize-5layers-50images-fast.md`` instead (fc, layer4.2, layer4.1, layer4.0,
layer3.5, layer3.4: wider vectors) with the core-neuron counts that fit reached (1/16/128/301/281).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from neurflow.core.circuit import (SCHEMA_VERSION, Circuit, Concept, Edge, Exemplar, Group, GroupEdge, ImageRef, Label,
                                   Layer, Member, ModelInfo, Neuron, Target)
from neurflow.core.params import EngineParams
from neurflow.core.circuit_arrays import read_circuit, write_circuit

LAYERS = [("fc", [1000]), ("layer4", [2048, 7, 7]), ("layer3", [1024, 14, 14]), ("layer2", [512, 28, 28]),
          ("layer1", [256, 56, 56])]
#: the layers and core-neuron counts of the real ResNet-50 fit of realsize-5layers-50images-fast (fast preset)
MEASURED = ([("fc", [1000]), ("layer4.2", [2048, 7, 7]), ("layer4.1", [2048, 7, 7]), ("layer4.0", [2048, 7, 7]),
             ("layer3.5", [1024, 14, 14]), ("layer3.4", [1024, 14, 14])], "1,16,128,301,281")


def synthetic_circuit(neurons: list[int], n_images: int = 50, top_n: int = 50, tau: int = 16, concepts: int = 4,
                      seed: int = 0, shape: list | None = None) -> Circuit:
    rng = np.random.default_rng(seed)
    table = shape or LAYERS

    def patch() -> Exemplar:
        x, y = (int(v) for v in rng.integers(0, 200, 2))
        return Exemplar(image=int(rng.integers(n_images)), box=[x, y, x + 56, y + 56],
                        activation=float(rng.normal()), granularity=0.25)

    layers, edges = [], []
    for li, (name, dims) in enumerate(table):
        count = neurons[li] if li < len(neurons) else 0
        width = table[li + 1][1][0] if li + 1 < len(table) else 0
        layer_neurons = []
        for n in range(count if li + 1 < len(table) else 0):
            cs = []
            for k in range(concepts):
                size = top_n // concepts
                cs.append(Concept(id=k, activation=float(rng.normal()), size=size, exemplars=[patch() for _ in range(5)],
                                  patches=[patch() for _ in range(size)],
                                  edges=[Edge(neuron=int(j), weight=float(rng.normal())) for j in rng.choice(width, tau)],
                                  vector=rng.normal(size=width).tolist()))
            layer_neurons.append(Neuron(id=n, importance=float(rng.random()), concepts=cs))
        groups = [Group(id=f"l{li}g{g}", members=[Member(neuron=n, concept=0) for n in range(g, count, 8)],
                        exemplars=[patch() for _ in range(5)], labels=[Label(text="fur", score=0.3, source="clip")])
                  for g in range(min(8, count))] if layer_neurons else []
        layers.append(Layer(name=name, shape=dims, neurons=layer_neurons, groups=groups))
        if li and groups and layers[li - 1].groups:
            edges += [GroupEdge(source=u.id, target=g.id, weight=float(rng.random()))
                      for u in layers[li - 1].groups for g in groups]
    return Circuit(schema=SCHEMA_VERSION,
                   model=ModelInfo(arch="torchvision:resnet50", weights_sha256=None, num_classes=1000, input_size=224,
                                   mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
                   target=Target(class_index=1, name="goldfish"), params=EngineParams(layers=[lay.name for lay in layers], tau=tau, top_n=top_n),
                   images=[ImageRef(id=i, path=f"img{i}.jpg", width=500, height=375) for i in range(n_images)],
                   layers=layers, group_edges=edges, timings={})


def timed(fn, repeat: int = 3) -> tuple[float, float]:
    """Best wall and CPU seconds of ``fn`` over ``repeat`` runs (CPU time stands in for the wall
    time of a quiet machine when the machine is shared)."""
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
    return round(wall, 3), round(cpu, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--neurons", default=None, help="core neurons per upper layer (default 1,16,256,512; "
                                                         "with --shape measured, the counts that fit reached)")
    parser.add_argument("--shape", choices=["suggested", "measured"], default="suggested",
                        help="suggested: fc, layer4 ... layer1; measured: the layers of the real fit")
    args = parser.parse_args()
    shape, counts = MEASURED if args.shape == "measured" else (LAYERS, "1,16,256,512")
    args.neurons = args.neurons or counts
    circuit = synthetic_circuit([int(v) for v in args.neurons.split(",")], shape=shape)
    with tempfile.TemporaryDirectory() as tmp:
        full, compact = Path(tmp) / "full" / "circuit.json", Path(tmp) / "compact" / "circuit.json"
        write_circuit(circuit, full, compact=False)
        side, _ = write_circuit(circuit, compact)
        assert read_circuit(compact) == read_circuit(full)
        print(json.dumps({
            "shape": args.shape, "layers": [name for name, _ in shape], "neurons": args.neurons,
            "full_json_bytes": full.stat().st_size, "compact_json_bytes": compact.stat().st_size,
            "sidecar_bytes": side.stat().st_size,
            "full_load_wall_cpu_s": timed(lambda: read_circuit(full)),
            "compact_load_wall_cpu_s": timed(lambda: read_circuit(compact)),
        }))


if __name__ == "__main__":
    main()
