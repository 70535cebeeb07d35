"""A tiny world shared by the world tests: 8 classes x 3 images x 2 splits at the default 80x72."""

from __future__ import annotations

from pathlib import Path

import pytest

from neurflow.world.generate import generate_world
from neurflow.world.spec import WorldConfig

TINY_PER_CLASS = 3
TINY_SEED = 7


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> tuple[Path, WorldConfig]:
    root = tmp_path_factory.mktemp("world") / "tiny"
    config = generate_world(root, n_per_class=TINY_PER_CLASS, seed=TINY_SEED)
    return root, config
