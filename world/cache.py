"""Where generated worlds and trained world models are kept, and how they are published safely.

The cache root is ``$NEURFLOW_CACHE`` when set, else ``.cache/neurflow`` under the repository root.
Each world lives in ``world-v<version>-<config hash>/``; each model trained on it in a sub-folder
keyed by its training config. An entry is built in a temporary sibling folder and renamed into
place when complete, under a file lock, so a crashed or concurrent build never leaves a half
entry that a later call would trust, and two processes never build the same entry twice.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from neurflow.world.generate import WORLD_FILE, write_world
from neurflow.world.spec import WORLD_VERSION, WorldConfig

ENV_VAR = "NEURFLOW_CACHE"
_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def _default_root() -> Path:
    # In a source checkout the cache sits beside the code (``make clean`` removes it); an installed
    # package has no such place and uses the user's cache folder.
    if (_SOURCE_ROOT / "pyproject.toml").is_file():
        return _SOURCE_ROOT / ".cache" / "neurflow"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "neurflow"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir`` if given, else ``$NEURFLOW_CACHE``, else ``<repo>/.cache/neurflow`` in a source
    checkout and ``~/.cache/neurflow`` in an installed package."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else _default_root()


def world_dir(config: WorldConfig, cache_dir: str | Path | None = None) -> Path:
    return cache_root(cache_dir) / f"world-v{WORLD_VERSION}-{config.key()}"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (a lock file), held for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, the atomic rename still protects entries
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_entry(final: Path, marker: str, build: Callable[[Path], object], *, force: bool = False) -> Path:
    """Return ``final`` if it holds ``marker``; else run ``build(tmp)`` and rename tmp to ``final``.
    With ``force`` the entry is rebuilt and replaces the existing one."""
    if not force and (final / marker).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with locked(final.parent / f".{final.name}.lock"):
        if not force and (final / marker).is_file():  # built by another process while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            build(tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any build output
            if final.exists():  # forced rebuild, or an incomplete leftover
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_world(config: WorldConfig | None = None, cache_dir: str | Path | None = None, *, progress: bool = False) -> Path:
    """The root of the world ``config`` (default: the standard world) in the cache, generating it
    once. Pass ``<root>/images/train`` to the engine."""
    config = config or WorldConfig()
    final = world_dir(config, cache_dir)
    return build_entry(final, WORLD_FILE, lambda tmp: write_world(tmp, config, overwrite=True, progress=progress))
