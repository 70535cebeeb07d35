"""NeurFlow: find, group and label the internal circuits of vision networks.

The installed distribution holds one import name; each layer lives in its own subpackage, from the
bottom up: ``neurflow.core`` (engine) and ``neurflow.prompts``, ``neurflow.labeler`` (CLIP labels,
captions, evaluation), ``neurflow.exports`` and ``neurflow.viewer`` (what consumes a circuit),
``neurflow.world`` (the synthetic concept world), ``neurflow.service`` (the REST application) and
``neurflow.cli`` (the command line).
"""

from importlib.metadata import PackageNotFoundError, version as _distribution_version

try:
    __version__ = _distribution_version("neurflow")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
