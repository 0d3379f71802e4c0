"""diffgal: a JAX-native framework for differentiable galaxy modelling."""

import importlib.metadata

from . import (
    chemistry as chemistry,
    galaxy as galaxy,
    ifu as ifu,
    lagrangian as lagrangian,
    pipeline as pipeline,
    spectra as spectra,
)
from ._citation import citation as citation
from ._data import data_dir as data_dir, fetch_tng_yields as fetch_tng_yields

try:
    __version__ = importlib.metadata.version("diffgal")
except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
