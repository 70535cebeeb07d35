"""Service settings: one msgspec Struct, built from defaults < config file < ``NEURFLOW_*`` env < flags.

The config file is TOML or JSON with the field names below as keys. Environment variables are the
upper-cased field names with the ``NEURFLOW_`` prefix (``NEURFLOW_PORT=9000``,
``NEURFLOW_API_KEYS=key1,key2``); lists are comma separated, booleans ``1/0/true/false``.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping

import msgspec

ENV_PREFIX = "NEURFLOW_"
MB = 1024 * 1024


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "neurflow-data"  # SQLite file, local artifact root, worker scratch
    storage_url: str | None = None  # fsspec URL of the artifact root; default <data_dir>/artifacts
    workers: int = 1  # worker subprocesses, one per device; 0 = API only (jobs wait in the queue)
    devices: list[str] | None = None  # e.g. ["cuda:0", "cuda:1"]; default "cpu" for every worker
    # security and limits
    auth: bool = True  # require X-API-Key on /v1
    api_keys: list[str] = []  # plaintext keys accepted at startup; only their hashes are stored
    rate_limit_per_minute: int = 600  # per API key (or per client address without auth)
    auth_failures_per_minute: int = 30  # requests with a missing, unknown or revoked key, per client address
    max_jobs_per_key: int = 50  # queued + running jobs of one key (429 past it)
    max_streams_per_key: int = 8  # open SSE job streams of one key
    max_uploads_per_key: int = 2  # model, dataset and debug-image uploads of one key in progress at once
    max_body_kb: int = 1024  # every route without its own limit
    max_weights_mb: int = 1024  # POST /v1/models
    max_dataset_mb: int = 512  # POST /v1/datasets (the zip itself)
    max_image_mb: int = 16  # POST /v1/circuits/{id}/debug
    max_zip_entries: int = 20000
    max_zip_uncompressed_mb: int = 2048
    max_image_pixels: int = 40_000_000  # per image, against decompression bombs
    max_dataset_pixels: int = 2_000_000_000  # all images of one dataset zip together (the decode budget)
    image_check_memory_mb: int = 1024  # address space of the child process that decodes an upload's images
    max_image_checks: int = 2  # image checks (child processes) at once; more uploads wait for a slot
    max_predict_kb: int = 4096  # POST /predict of the Label Studio backend (a batch of task references)
    max_job_cost: int = 200_000_000  # estimated IG sample passes of one run (service.jobs.limits.estimated_cost)
    job_timeout_s: float = 6 * 3600.0  # wall-clock limit of one job attempt; the job fails, the worker is replaced
    worker_memory_mb: int = 0  # resident memory limit of one worker; 0 = 80% of the machine's memory / workers
    cors_origins: list[str] = []
    asset_dirs: list[str] = []  # folders a job's labeling section may read (CLIP weights, vocabularies)
    captioner_urls: list[str] = []  # OpenAI-compatible base URLs a job's captioner may call
    # base URL -> name of the environment variable holding that endpoint's key: the operator's choice,
    # never a client's (env: NEURFLOW_CAPTIONER_KEYS=https://host/v1=ENV_NAME,...)
    captioner_keys: dict[str, str] = {}
    # jobs
    max_attempts: int = 2  # a job whose worker died is retried until it has run this many times
    cancel_grace_s: float = 10.0  # after a cancel request, kill the worker if the job has not stopped
    worker_start_timeout_s: float = 120.0
    model_cache_size: int = 2  # models kept loaded in each worker between jobs
    sync_wait_s: float = 120.0  # default wait of /debug and /evaluate before answering 202
    torch_threads: int = 0  # intra-op threads per worker; 0 = torch's default
    # executors (service.executors): "local" worker processes, or "ray" tasks on a Ray cluster
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # "host:port" of a running Ray cluster; unset: start a local one
    ray_num_gpus: float = 0.0  # GPUs each Ray task of a job asks for (0: CPU tasks)
    ray_num_cpus: float = 1.0  # CPUs each Ray task of a job asks for
    ray_max_jobs: int = 4  # jobs the Ray executor runs at once (their classes run as parallel tasks)
    # the GPU path (service.executors.gpu)
    autocast: Literal["off", "bf16", "fp16"] = "off"  # autocast of the engine's passes; circuits record it
    deterministic: bool = False  # torch.use_deterministic_algorithms in every worker

    # -- derived paths ---------------------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def db_path(self) -> Path:
        return self.data_path / "neurflow.db"

    @property
    def artifact_url(self) -> str:
        return self.storage_url or str(self.data_path / "artifacts")

    @property
    def scratch_path(self) -> Path:
        return self.data_path / "scratch"

    @property
    def asset_paths(self) -> list[Path]:
        return [self.data_path / "assets"] + [Path(p).expanduser().resolve() for p in self.asset_dirs]

    @property
    def worker_memory_bytes(self) -> int:
        if self.worker_memory_mb > 0:
            return self.worker_memory_mb * MB
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return int(0.8 * total / max(1, len(self.device_list())))

    def device_list(self) -> list[str]:
        if self.devices:
            return list(self.devices)
        return ["cpu"] * max(0, self.workers)


def _coerce_env(name: str, raw: str, annotation: Any) -> Any:
    text = str(annotation)
    if text.startswith("dict"):
        pairs = [item.strip().rpartition("=") for item in raw.split(",") if item.strip()]
        if any(not sep or not k or not v for k, sep, v in pairs):
            raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} must be KEY=VALUE pairs separated by commas")
        return {k.strip(): v.strip() for k, _, v in pairs}
    if "list" in text:
        return [item.strip() for item in raw.split(",") if item.strip()]
    if "bool" in text:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a boolean (use 1/0/true/false)")
    if "int" in text and "float" not in text and "str" not in text:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not an integer") from None
    if "float" in text:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a number") from None
    return raw


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    environ = os.environ if environ is None else environ
    hints = Settings.__annotations__
    out: dict[str, Any] = {}
    for name in Settings.__struct_fields__:
        key = ENV_PREFIX + name.upper()
        if key in environ:
            out[name] = _coerce_env(name, environ[key], hints.get(name, "str"))
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode())
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a table/object of settings")
    return data


def load_settings(
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge defaults, the config file (or ``NEURFLOW_CONFIG``), env vars and explicit overrides."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG")
    if config_file:
        merged.update(read_config_file(config_file))
    merged.update(from_env(environ))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return msgspec.convert(merged, type=Settings)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid settings: {exc}") from None
