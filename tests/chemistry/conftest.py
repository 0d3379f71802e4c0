"""Fixtures shared by the chemistry tests."""

import pytest

from diffgal._data import tng_files_present
from diffgal.chemistry import load_yields


@pytest.fixture(scope="module", params=["tng", "default"])
def yields(request, data_dir):
    """Every built-in yield set; `tng` skips without its data files."""
    if request.param == "tng":
        if not tng_files_present(data_dir):
            pytest.skip("TNG yield tables not found: set DIFFGAL_DATA_DIR (see fetch_tng_yields)")
        return load_yields("tng", data_dir=data_dir)
    return load_yields("default")
