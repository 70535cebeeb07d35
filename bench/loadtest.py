"""Load test of the API read endpoints: many concurrent clients against a real server on loopback.

``python -m bench.loadtest [--clients 32] [--seconds 10]`` (``make bench`` calls :func:`run`):
starts ``neurflow serve`` with one worker in a temporary folder, runs one tiny real job (a random
resnet18 at 32 px on 18 generated images) so there is a circuit to read, then has ``clients``
concurrent keep-alive clients cycle through the read endpoints for ``seconds`` and prints requests
per second and p50/p99 latency, per endpoint and overall. Then a hostile-upload burst: ``burst`` dataset
uploads at once, each a small zip of large plain PNGs (cheap to send, costly to decode), while one client
probes ``/health``; it prints the web process's resident memory (idle, peak, after) and the probes' p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from neurflow.client.process import NotReady, free_loopback_port, stop_process, wait_healthy

KEY = "loadtest-key"


def _tiny_assets(root: Path) -> tuple[Path, bytes]:
    import torch
    import torchvision
    from PIL import Image
    from safetensors.torch import save_file

    torch.manual_seed(0)
    weights = root / "tiny.safetensors"
    save_file(torchvision.models.resnet18(num_classes=3).state_dict(), str(weights))
    rng = random.Random(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for c in range(3):
            for i in range(6):
                im = Image.new("RGB", (40, 40), tuple(rng.randrange(256) for _ in range(3)))
                png = io.BytesIO()
                im.save(png, "PNG")
                zf.writestr(f"c{c}/{i}.png", png.getvalue())
    return weights, buf.getvalue()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def _drive(url: str, paths: list[str], clients: int, seconds: float) -> dict[str, Any]:
    import httpx

    latencies: dict[str, list[float]] = {p: [] for p in paths}
    errors = 0
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": KEY}, limits=limits, timeout=30) as http:
        async def one(worker: int) -> None:
            nonlocal errors
            k = worker
            while time.perf_counter() < stop_at:
                path = paths[k % len(paths)]
                k += 1
                t0 = time.perf_counter()
                r = await http.get(path)
                dt = time.perf_counter() - t0
                if r.status_code != 200:
                    errors += 1
                latencies[path].append(dt)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed}


def _bomb_zip(images: int = 4, side: int = 4000) -> bytes:
    """A zip of ``images`` plain ``side`` x ``side`` PNGs: kilobytes to send, 48 MB of pixels each to decode."""
    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (side, side), (90, 140, 200)).save(png, "PNG")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(images):
            zf.writestr(f"c/{i}.png", png.getvalue())
    return buf.getvalue()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _burst(url: str, pid: int, uploads: int, payload: bytes) -> dict[str, Any]:
    """``uploads`` dataset uploads at once while /health is probed and the web process's RSS sampled."""
    import httpx

    probes: list[float] = []
    peak = [_rss_mb(pid)]
    statuses: list[int] = []
    done = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": KEY}, timeout=300) as http:
        async def upload() -> None:
            r = await http.post("/v1/datasets", files={"file": ("bomb.zip", payload, "application/zip")})
            statuses.append(r.status_code)

        async def probe() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                await http.get("/health")
                probes.append(time.perf_counter() - t0)
                peak.append(_rss_mb(pid))
                await asyncio.sleep(0.05)

        prober = asyncio.create_task(probe())
        await asyncio.gather(*(upload() for _ in range(uploads)))
        done.set()
        await prober
    return {"statuses": statuses, "probes": probes, "peak_mb": max(peak)}


def run(clients: int = 32, seconds: float = 10.0, log=print, burst: int = 6) -> dict[str, Any]:
    from neurflow.client.api import Client

    with tempfile.TemporaryDirectory(prefix="neurflow-load-") as tmp:
        root = Path(tmp)
        weights, zipped = _tiny_assets(root)
        port = free_loopback_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "NEURFLOW_API_KEYS": KEY, "NEURFLOW_RATE_LIMIT_PER_MINUTE": "100000000",
               "NEURFLOW_MAX_UPLOADS_PER_KEY": str(max(2, burst))}  # the burst is one key's: let it through
        log_file = open(root / "server.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "neurflow.cli", "serve", "--port", str(port), "--data-dir",
                                 str(root / "data"), "--workers", "1", "--log-level", "warning"],
                                stdout=log_file, stderr=subprocess.STDOUT, env=env)
        try:
            try:
                wait_healthy(url, proc, 180, interval=0.2)
            except NotReady as exc:
                raise RuntimeError(f"{exc}: " + (root / "server.log").read_text()[-2000:]) from None
            with Client(url, KEY, timeout=600) as c:  # a loaded machine: the first upload waits for the checker
                model = c.upload_model(weights, {"arch": "resnet18", "num_classes": 3, "input_size": 32})
                ds = c.json("POST", "/v1/datasets", files={"file": ("d.zip", zipped, "application/zip")})
                job = c.submit({"model": {"arch": "resnet18", "weights": model["id"], "num_classes": 3,
                                          "input_size": 32},
                                "data": {"images": ds["id"], "target_class": 0, "select": "all"},
                                "engine": {"layers": ["layer4", "layer3"], "tau": 2, "top_n": 6, "ig_steps": 4,
                                           "granularities": [1.0, 0.5]}})
                final = c.follow(job["id"])
                if final["state"] != "succeeded":
                    raise RuntimeError(f"seed job {final['state']}: {final['error']}")
                cid = final["result"]["circuits"][0]["id"]
                doc = c.circuit(cid)
                gid = next(g["id"] for layer in doc["layers"] for g in layer["groups"] if g["exemplars"])
            paths = [f"/v1/jobs/{job['id']}", f"/v1/circuits/{cid}", f"/v1/circuits/{cid}/info",
                     f"/v1/circuits/{cid}/groups/{gid}/mosaic.png", f"/v1/models/{model['id']}", "/v1/circuits"]
            result = asyncio.run(_drive(url, paths, clients, seconds))
            idle_mb = _rss_mb(proc.pid)
            hostile = asyncio.run(_burst(url, proc.pid, burst, _bomb_zip())) if burst else None
            after_mb = _rss_mb(proc.pid)
        finally:
            stop_process(proc, grace=20)
            log_file.close()
    lat = result["latencies"]
    everything = [x for v in lat.values() for x in v]
    rows = []
    for path, values in lat.items():
        rows.append({"endpoint": path.replace(cid, "{id}").replace(job["id"], "{id}").replace(model["id"], "{id}")
                     .replace(gid, "{group}"), "requests": len(values), "rps": len(values) / result["elapsed"],
                     "p50_ms": 1000 * _percentile(values, 0.5), "p99_ms": 1000 * _percentile(values, 0.99)})
    summary = {"clients": clients, "seconds": round(result["elapsed"], 2), "requests": len(everything),
               "errors": result["errors"], "rps": len(everything) / result["elapsed"],
               "p50_ms": 1000 * _percentile(everything, 0.5), "p99_ms": 1000 * _percentile(everything, 0.99),
               "endpoints": rows}
    log(f"\nAPI read load: {clients} concurrent clients for {summary['seconds']} s, "
        f"{summary['requests']} requests, {summary['errors']} errors")
    log(f"{'endpoint':<46} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for row in rows:
        log(f"{row['endpoint']:<46} {row['rps']:>8.1f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f}")
    log(f"{'all':<46} {summary['rps']:>8.1f} {summary['p50_ms']:>8.1f} {summary['p99_ms']:>8.1f}")
    if hostile is not None:
        summary["hostile_burst"] = {
            "uploads": burst, "statuses": sorted(hostile["statuses"]), "web_rss_idle_mb": round(idle_mb, 1),
            "web_rss_peak_mb": round(hostile["peak_mb"], 1), "web_rss_after_mb": round(after_mb, 1),
            "health_probes": len(hostile["probes"]), "health_p50_ms": 1000 * _percentile(hostile["probes"], 0.5),
            "health_p99_ms": 1000 * _percentile(hostile["probes"], 0.99)}
        b = summary["hostile_burst"]
        log(f"\nHostile-upload burst: {burst} uploads at once of a zip of four 4000x4000 PNGs "
            f"(answers {b['statuses']})")
        log(f"web process RSS: idle {b['web_rss_idle_mb']} MB, peak {b['web_rss_peak_mb']} MB, after "
            f"{b['web_rss_after_mb']} MB; /health p50 {b['health_p50_ms']:.1f} ms, p99 {b['health_p99_ms']:.1f} ms "
            f"({b['health_probes']} probes)")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=6, help="hostile uploads at once (0: none)")
    args = parser.parse_args(argv)
    run(args.clients, args.seconds, burst=args.burst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
