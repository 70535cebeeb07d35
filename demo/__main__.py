"""``make demo``: the main job, end to end, through the service on the embedded default.

1. prepare the demo's synthetic world, its resnet18 and its CLIP (``neurflow.world.setups.DEMO``:
   trained once, side by side, then cached);
2. start ``neurflow serve`` on loopback (SQLite job table, one spawn worker with a torch thread per
   idle core, a fresh API key);
3. upload the model and the held-out images through the API, submit one job for two classes with
   CLIP labeling, and follow its Server-Sent Events with a progress bar;
4. download the labeled circuits and every group's mosaic, print a table of labeled groups per layer
   (label, confidence, ground-truth part, purity) and how many labels name the ground-truth part,
   save each circuit's Label Studio export, GraphML and graph PNG, and write the interactive HTML
   viewer (``demo-out/report.html``);
5. stop the service.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from neurflow.client.process import NotReady, free_loopback_port, stop_process, wait_healthy
from neurflow.core.circuit import Circuit
from neurflow.core.circuit_arrays import read_circuit
from neurflow.core.cpu import idle_cores
from neurflow.world import score_circuit

OUT = Path("demo-out")
SERVICE_ROOT = Path(".cache") / "demo-service"
DEMO_LAYERS = ["fc", "layer4.1", "layer4.0", "layer3.1", "layer3.0"]
DEMO_CLASSES = [0, 5]


def demo_spec(model_spec: dict, model_id: str, dataset_id: str, labeling: dict | None) -> dict:
    spec = {
        "model": {**{k: v for k, v in model_spec.items() if k != "weights"}, "weights": model_id},
        "data": {"images": dataset_id, "target_class": DEMO_CLASSES, "select": "predicted", "max_images": 32},
        "engine": {"layers": DEMO_LAYERS, "tau": 6, "top_n": 50, "preset": "fast", "seed": 0},
    }
    if labeling is not None:
        spec["labeling"] = labeling
    return spec


class Service:
    """``neurflow serve`` as a child process on a free loopback port."""

    def __init__(self, data_dir: Path, asset_dirs: list[Path]) -> None:
        self.key = "nf_demo_" + secrets.token_urlsafe(16)
        self.port = free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        # The worker's torch threads: the cores idle now, unless the caller says otherwise. On a quiet
        # 2-core machine two threads ran the cached demo's job in 50 s against 83 s for one; on a busy
        # one, torch's two took 723 s against 176 s, spin-waiting for each other (docs/world.md).
        self.threads = os.environ.get("NEURFLOW_TORCH_THREADS") or str(max(1, idle_cores()))
        env = {"NEURFLOW_TORCH_THREADS": self.threads, **os.environ, "NEURFLOW_API_KEYS": self.key,
               "NEURFLOW_ASSET_DIRS": ",".join(str(p.resolve()) for p in asset_dirs)}
        self.log_path = data_dir / "service.log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "neurflow.cli", "serve", "--port", str(self.port), "--data-dir", str(data_dir),
             "--workers", "1", "--log-level", "warning"], stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 180.0) -> None:
        try:
            wait_healthy(self.url, self.proc, timeout)
        except NotReady as exc:
            raise RuntimeError(f"{exc}; see {self.log_path}") from None

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


def label_hits(circuit: Circuit, scores: dict) -> tuple[int, int]:
    """(groups whose top label is their ground-truth part, groups that have one)."""
    parts = {g["id"]: g["majority_part"] for g in scores["groups"] if g.get("majority_part")}
    hits = sum(1 for _, _, g in circuit.iter_groups() if g.id in parts and g.labels and g.labels[0].text == parts[g.id])
    return hits, len(parts)


def print_table(circuit: Circuit, scores: dict, class_name: str) -> None:
    by_id = {g["id"]: g for g in scores["groups"]}
    mean = scores.get("mean_purity")
    print(f"\n== class {circuit.target.class_index} ({class_name}): {scores['n_groups']} groups"
          + (f", mean purity {mean:.2f}" if mean is not None else ""))
    print(f"{'layer':<10} {'group':<7} {'label':<22} {'conf':>5}  {'ground-truth part':<18} {'purity':>6}")
    for _, layer, group in circuit.iter_groups():
        label = group.labels[0].text if group.labels else "-"
        conf = f"{group.confidence:.2f}" if group.confidence is not None else "  -  "
        s = by_id.get(group.id, {})
        purity = f"{s['purity']:.2f}" if s.get("purity") is not None else "-"
        print(f"{layer.name:<10} {group.id:<7} {label[:22]:<22} {conf:>5}  {str(s.get('majority_part')):<18} {purity:>6}")


def main() -> int:
    from neurflow.client.api import Client
    from neurflow.client.submit import progress_from_events
    from neurflow.progress import ProgressBars
    from neurflow.viewer.circuit_png import render_circuit_png
    from neurflow.viewer.report import ReportEntry, write_report
    from neurflow.world.setups import DEMO, ensure_setup

    start = time.time()
    model, bundle = ensure_setup(DEMO)
    print(f"world model: {model.directory} (held-out accuracy {model.heldout_accuracy:.3f})")
    labeling = None
    if bundle is not None:
        from neurflow.world.clip import METRICS_FILE, labeling_section

        labeling = labeling_section(bundle)
        metrics = json.loads((bundle / METRICS_FILE).read_text())
        print(f"world CLIP: {bundle} (zero-shot top-1 {metrics['zero_shot_top1']:.3f} on {metrics['n_crops']} "
              f"held-out part crops)")
    prepared = time.time()
    # a fresh data dir per run (the service's database and artifacts); removed when the demo succeeds
    service_dir = SERVICE_ROOT / f"run-{os.getpid()}"
    shutil.rmtree(service_dir, ignore_errors=True)
    service = Service(service_dir, [bundle] if bundle is not None else [])
    print(f"starting the service on {service.url} (data: {service_dir}, log: {service.log_path}, "
          f"{service.threads} torch thread(s) in its worker)")
    bar = ProgressBars()
    try:
        service.wait_ready()
        with Client(service.url, service.key, timeout=300) as client:
            spec = model.model_spec()
            uploaded = client.upload_model(spec["weights"], {k: v for k, v in spec.items() if k != "weights"})
            dataset = client.upload_dataset(model.images("heldout"), name="world-heldout")
            print(f"uploaded model {uploaded['id'][:12]}… and dataset {dataset['id']} ({dataset['n_images']} images)")
            job = client.submit(demo_spec(spec, uploaded["id"], dataset["id"], labeling))
            print(f"job {job['id']}: classes {DEMO_CLASSES}, layers {DEMO_LAYERS}"
                  + (", CLIP labeling" if labeling else ""))
            final = client.follow(job["id"], on_progress=progress_from_events(bar))
            bar.close()
            if final["state"] != "succeeded":
                print(f"job {final['state']}: {final['error']}", file=sys.stderr)
                return 1
            entries = []
            hits = [0, 0]
            for ref in final["result"]["circuits"]:
                folder = OUT / f"class-{ref['class_index']}"
                folder.mkdir(parents=True, exist_ok=True)
                circuit = read_circuit(client.download_circuit(ref["id"], folder))  # the document and its arrays file
                mosaics = {g.id: client.mosaic(ref["id"], g.id) for _, _, g in circuit.iter_groups() if g.exemplars}
                scores = score_circuit(circuit, model.world_root, model.images("heldout"))
                name = model.class_names[circuit.target.class_index]
                print_table(circuit, scores, name)
                hits = [a + b for a, b in zip(hits, label_hits(circuit, scores))]
                print(f"circuit: {folder / 'circuit.json'} (GET {service.url}/v1/circuits/{ref['id']})")
                # what an annotation team would pull: Label Studio config + tasks, and the graph as a picture
                (folder / "labelstudio.json").write_bytes(client.export(ref["id"], "labelstudio"))
                (folder / "circuit.graphml").write_bytes(client.export(ref["id"], "graphml"))
                render_circuit_png(circuit, folder / "circuit.png")
                print(f"exports: {folder / 'labelstudio.json'} (Label Studio), {folder / 'circuit.graphml'}, "
                      f"{folder / 'circuit.png'}")
                entries.append(ReportEntry(circuit=circuit, class_name=name, mosaics=mosaics, circuit_id=ref["id"],
                                           scores={g["id"]: g for g in scores["groups"]}))
    finally:
        bar.close()
        service.stop()
    shutil.rmtree(service_dir, ignore_errors=True)
    report = write_report(entries, OUT / "report.html", title="NeurFlow demo: labeled circuits of the synthetic world",
                          notes=f"Job {final['id']} through the NeurFlow service; ground truth from the world's part masks.")
    if labeling is not None:
        print(f"\nlabels: {hits[0]} of the {hits[1]} groups with a ground-truth part are labeled with that part")
    print(f"report: {report.resolve()}")
    print(f"demo finished in {time.time() - start:.0f} s (preparation {prepared - start:.0f} s, "
          f"service + job {time.time() - prepared:.0f} s)")
    print("next: `. .venv/bin/activate` puts the `neurflow` command on your PATH (`neurflow --help`); "
          "README.md shows how to explain your own model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
