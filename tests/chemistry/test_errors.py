"""Bad input gives clear errors, under jit and vmap; failed runs are a mask, never silent NaN."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgal.chemistry import (
    ChemistryParams,
    GCEOptions,
    chempy_tng,
    evolve,
    load_yields,
)

GOOD = [-2.3, -2.89, -0.3, 0.55, 0.5, 8.0]


@pytest.fixture(scope="module")
def yields():
    return load_yields("default")  # offline, so these tests always run


@pytest.fixture(scope="module")
def run_batch(yields):
    @eqx.filter_jit
    def run(theta, time_grid=None):
        def one(row):
            hist = evolve(
                ChemistryParams.from_array(row),
                yields=yields,
                time_grid=time_grid,
                throw=False,
            )
            return hist.x_h()[-1]

        return jax.vmap(one)(theta)

    return run


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [
        (0, np.nan, r"`imf_slope` must be a finite number in \(-4, -1\)"),
        (1, np.inf, r"`log10_n_ia` must be a finite number"),
        (2, -np.inf, r"`log10_sfe` must be a finite number"),
        (4, 1.2, r"`outflow_fraction` \(x_out\) must lie in \[0, 1\]"),
        (4, -0.1, r"`outflow_fraction` \(x_out\) must lie in \[0, 1\]"),
        (5, 0.0, r"`birth_time` must lie in \(0, 13.797617\] Gyr"),
        (5, -1.0, r"`birth_time` must lie in \(0, 13.797617\] Gyr"),
        (5, 14.5, r"`birth_time` must lie in \(0, 13.797617\] Gyr"),
        (5, np.nan, r"`birth_time` must be a finite number in \(0, 13.797617\] Gyr"),
    ],
)
def test_bad_parameters_under_jit_and_vmap(run_batch, column, value, match):
    theta = np.array([GOOD, GOOD])
    theta[1, column] = value
    with pytest.raises(Exception, match=match):
        jax.block_until_ready(run_batch(jnp.asarray(theta)))


def test_bad_parameter_single_run_eager(yields):
    params = ChemistryParams(outflow_fraction=1.5)
    with pytest.raises(Exception, match=r"`outflow_fraction` \(x_out\) must lie in \[0, 1\]"):
        evolve(params, yields=yields)


def test_good_batch_runs(run_batch):
    out = run_batch(jnp.asarray([GOOD, GOOD]))
    assert np.isfinite(np.asarray(out)).all()


@pytest.mark.parametrize(
    "grid",
    [
        np.array([0.0, 0.5, 0.4, 1.0]),  # decreasing
        np.array([0.0, 0.5, 0.5, 1.0]),  # repeated node
        np.array([0.1, 0.5, 0.7, 1.0]),  # does not start at 0
        np.array([0.0, 0.5, 0.7, 0.9]),  # does not end at the birth time
    ],
)
def test_non_increasing_time_grid(run_batch, grid):
    with pytest.raises(Exception, match=r"`time_grid` must increase strictly from 0 to 1"):
        jax.block_until_ready(run_batch(jnp.asarray([GOOD]), jnp.asarray(grid)))


def test_time_grid_wrong_shape_is_a_trace_time_error(yields):
    with pytest.raises(ValueError, match=r"`time_grid` must be a 1-D array"):
        evolve(ChemistryParams(), yields=yields, time_grid=np.zeros((2, 3)))


def test_unknown_yield_set_lists_valid_names():
    with pytest.raises(ValueError, match=r"tng.*default|default.*tng"):
        load_yields("nomoto2006")


def test_unknown_element_lists_valid_symbols():
    with pytest.raises(ValueError, match=r"Xx"):
        load_yields("default", elements=("H", "He", "Fe", "Xx"))


def test_missing_data_names_data_dir_and_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFGAL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as info:
        load_yields("tng", data_dir=tmp_path)
    message = str(info.value)
    assert "DIFFGAL_DATA_DIR" in message
    assert "fetch_tng_yields" in message


def test_bad_options_and_theta_shape():
    with pytest.raises(ValueError, match=r"`dtd` must be one of \('nodes', 'bins'\)"):
        GCEOptions(dtd="node")
    with pytest.raises(ValueError, match=r"`mode` must be 'faithful' or 'smooth'"):
        GCEOptions.from_mode("fast")
    with pytest.raises(ValueError, match=r"`theta` must have shape \(N, 6\)"):
        chempy_tng(np.zeros((3, 5)), yields="default")


def test_failed_runs_are_masked_not_silent(tng_data_dir):
    """A run CHEMPY rejects comes back flagged; its row is NaN *and* `failed` says so."""
    theta = np.array([GOOD, [-2.3, -2.89, -0.3, 0.2, 0.5, 12.8]])  # second: SFR too low at T
    abundances, failed = chempy_tng(theta, data_dir=tng_data_dir)
    np.testing.assert_array_equal(np.asarray(failed), [False, True])
    assert np.isfinite(np.asarray(abundances)[0]).all()
    assert np.isnan(np.asarray(abundances)[1]).all()
    # Smooth mode never rejects: the same run is finite and not failed, with a negative margin.
    abundances, failed = chempy_tng(theta, mode="smooth", data_dir=tng_data_dir)
    assert not np.asarray(failed).any()
    assert np.isfinite(np.asarray(abundances)).all()


def test_throw_raises_for_rejected_run(tng_data_dir):
    params = ChemistryParams(log10_sfr_peak=0.2, birth_time=12.8)
    yields = load_yields("tng", data_dir=tng_data_dir)
    run = eqx.filter_jit(evolve)
    with pytest.raises(Exception, match="5% of the mean SFR"):
        run(params, yields=yields, throw=True)
    history = run(params, yields=yields, options=GCEOptions.smooth(), throw=True)
    assert float(history.margins.sfr_ratio) < 0
