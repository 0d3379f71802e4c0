"""Test-wide setup: float64 and four fake CPU devices, configured before JAX is imported."""

import os

_FAKE_DEVICES = "--xla_force_host_platform_device_count=4"
if _FAKE_DEVICES not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAKE_DEVICES}".strip()

import gc  # noqa: E402
import pathlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
TNG_FILES = ("SNII.hdf5", "AGB.hdf5", "SNIa.hdf5")


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path | None:
    """The diffgal data directory: `$DIFFGAL_DATA_DIR`, else `../shared/data`, else `None`."""
    if env := os.environ.get("DIFFGAL_DATA_DIR"):
        return pathlib.Path(env)
    candidate = SHARED / "data"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def tng_data_dir(data_dir: pathlib.Path | None) -> pathlib.Path:
    """A data directory holding `yields/tng/{SNII,AGB,SNIa}.hdf5`; skips the test otherwise."""
    if data_dir is None or not all((data_dir / "yields" / "tng" / f).is_file() for f in TNG_FILES):
        pytest.skip(
            "TNG yield tables not found: set DIFFGAL_DATA_DIR (see diffgal.fetch_tng_yields)"
        )
    return data_dir


@pytest.fixture(scope="session")
def reference_dir() -> pathlib.Path:
    """The CHEMPY (ChempyMulti) reference outputs, `.../reference/chempy_tng/`; skips otherwise.

    `$DIFFGAL_REFERENCE_DIR` may point at the `reference` folder or at `chempy_tng` itself.
    """
    roots = []
    if env := os.environ.get("DIFFGAL_REFERENCE_DIR"):
        roots.append(pathlib.Path(env))
    roots.append(SHARED / "reference")
    for root in roots:
        for candidate in (root / "chempy_tng", root):
            if (candidate / "visible.npz").is_file():
                return candidate
    pytest.skip(
        "ChempyMulti reference data not found: set DIFFGAL_REFERENCE_DIR or provide "
        "shared/reference/chempy_tng/"
    )


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_executables():
    """Drop JAX's compiled executables after each test module.

    A full run compiles thousands of XLA CPU executables; kept alive in one process they exhaust
    the kernel's memory-map limit (`vm.max_map_count`, 65530 by default) and the next LLVM
    compilation segfaults. Nothing is shared between modules, so clearing costs no recompiles.
    """
    yield
    jax.clear_caches()
    gc.collect()
