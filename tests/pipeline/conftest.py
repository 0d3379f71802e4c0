"""Shared, session-scoped pieces of the pipeline tests: one small float64 pipeline and its mock
observations, built once (JIT compilation dominates these tests, so everything reuses them).

The chemistry runs its time loop as one `lax.scan` (`GCEOptions.scan_segments=1`): the results
are identical to the default six segments (a performance option only) and the likelihood
gradient compiles several times faster on CPU. The demo test covers the default options.
"""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from diffgal.chemistry import GCEOptions
from diffgal.galaxy import make_mock_galaxy
from diffgal.ifu import Telescope
from diffgal.pipeline import (
    GalaxyParams,
    draw_birth_times,
    make_chemistry,
    make_pipeline,
    observe_abundances,
    observe_cube,
)
from diffgal.spectra import synthetic_grid

#: The renderer settings every test pipeline uses (a z = 0.05 disc seen at 60 degrees).
RENDER_KW = dict(redshift=0.05, inclination_deg=60.0, position_angle_deg=30.0, velscale=30.0,
                 v_max=450.0)
T_OBS = 12.5
N_PARTICLES = 3000
N_STARS = 40


def small_telescope(n_spaxels: int = 8, n_wave: int = 120) -> Telescope:
    return Telescope.from_fov(
        "T", fov_arcsec=float(n_spaxels), pixel_arcsec=1.0, wave_start_aa=4750.0, dwave_aa=2.5,
        n_wave=n_wave, lsf_fwhm_aa=2.51, medium="air",
    )


@pytest.fixture(scope="session")
def grid():
    return synthetic_grid(n_age=6, n_met=4)


@pytest.fixture(scope="session")
def telescope():
    return small_telescope()


@pytest.fixture(scope="session")
def chemistry():
    options = dataclasses.replace(GCEOptions.smooth(), scan_segments=1)
    return make_chemistry("default", options=options)


@pytest.fixture(scope="session")
def pipeline(telescope, grid, chemistry):
    """float64 renderer, offline `default` yields, one device."""
    return make_pipeline(telescope, grid, chemistry=chemistry, dtype=jnp.float64, **RENDER_KW)


@pytest.fixture(scope="session")
def truth():
    return jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), GalaxyParams())


@pytest.fixture(scope="session")
def galaxy():
    return make_mock_galaxy(jax.random.key(0), N_PARTICLES, age_gyr=T_OBS)


@pytest.fixture(scope="session")
def truth_cube(pipeline, galaxy, truth):
    # eager (the chemistry is compiled inside `history`): shares its op cache with other tests
    return pipeline.cube(truth, galaxy)


@pytest.fixture(scope="session")
def obs(truth_cube):
    return observe_cube(jax.random.key(1), truth_cube, snr_centre=30.0, min_snr=3.0)


@pytest.fixture(scope="session")
def stars(pipeline, truth):
    birth = draw_birth_times(jax.random.key(2), pipeline, truth, N_STARS, T_OBS)
    return observe_abundances(jax.random.key(3), pipeline, truth, birth, T_OBS, 0.05)
