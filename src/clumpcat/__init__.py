"""clumpcat: giant star-forming clumps found in galaxy images and catalogued.

The pipeline of Popp et al. (Faster R-CNN with ResNet50 backbones initialised
from Zoobot or ImageNet, trained on Galaxy Zoo: Clump Scout labels) as a
Python package with one module per stage and a ``clumpcat`` command.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clumpcat")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
