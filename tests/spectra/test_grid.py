"""Tests of `diffgal.spectra` template grids: lookup, clamping, gradients, I/O and errors."""

import importlib.util

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgal.spectra import (
    TemplateGrid,
    bilinear_weights,
    load_emiles,
    load_template_hdf5,
    load_template_npz,
    save_template_hdf5,
    save_template_npz,
    synthetic_grid,
)


@pytest.fixture(scope="module")
def grid() -> TemplateGrid:
    return synthetic_grid(n_age=8, n_met=4, wave_min=4000.0, wave_max=7000.0, dwave=1.0)


def _ages(grid):
    return 10.0 ** np.asarray(grid.log_age_gyr)


def test_node_lookup_is_exact(grid):
    for ia in range(len(grid.log_age_gyr)):
        for im in range(len(grid.metallicity_mh)):
            index, weight, outside = bilinear_weights(
                grid.log_age_gyr[ia], grid.metallicity_mh[im], grid.log_age_gyr, grid.metallicity_mh
            )
            corners = grid.flux[np.asarray(index[:, 0]), np.asarray(index[:, 1])]
            spec = jnp.einsum("c,cw->w", weight, corners)
            np.testing.assert_array_equal(spec, grid.flux[ia, im])
            assert not outside
    # through the age (Gyr) interface the log10(10**u) round trip costs at most an ulp or so
    spectra, n_outside = grid.lookup(_ages(grid), np.full(len(grid.log_age_gyr), 0.3))
    np.testing.assert_allclose(spectra, grid.flux[:, -1], rtol=1e-12)
    assert n_outside == 0


def test_bilinear_between_nodes_matches_analytic_mix(grid):
    ta, tm = 0.3, 0.7
    u = (1 - ta) * grid.log_age_gyr[2] + ta * grid.log_age_gyr[3]
    mh = (1 - tm) * grid.metallicity_mh[1] + tm * grid.metallicity_mh[2]
    f = grid.flux
    expected = (
        (1 - ta) * (1 - tm) * f[2, 1]
        + ta * (1 - tm) * f[3, 1]
        + (1 - ta) * tm * f[2, 2]
        + ta * tm * f[3, 2]
    )
    np.testing.assert_allclose(grid.spectrum(10.0**u, mh), expected, rtol=1e-12)


def test_age_units_gyr(grid):
    """A 9 Gyr star is interpolated near 9 Gyr, not handed the 1 Gyr template."""
    old = grid.spectrum(9.0, 0.0)
    young = grid.spectrum(1.0, 0.0)
    i = int(np.searchsorted(grid.wave_aa, 5500.0))
    assert old[i] < 0.5 * young[i]  # older populations are fainter per unit mass
    ia = int(np.searchsorted(grid.log_age_gyr, np.log10(9.0))) - 1
    lo, hi = grid.flux[ia : ia + 2, :, i].min(), grid.flux[ia : ia + 2, :, i].max()
    assert lo <= old[i] <= hi
    # ~1e-4 L_sun/A/M_sun at 5500 A for 10 Gyr, solar
    assert 0.8e-4 < grid.spectrum(10.0, 0.0)[i] < 1.25e-4


def test_outside_clamps_to_nonzero_edge(grid):
    ages = np.array([20.0, 5.0, 1e-3, 0.0, 5.0])
    mhs = np.array([0.0, 0.8, 0.0, -3.0, 0.0])
    spectra, n_outside = grid.lookup(ages, mhs)
    assert int(n_outside) == 4
    assert np.all(np.asarray(spectra[:4]) > 0)
    np.testing.assert_allclose(spectra[0], grid.spectrum(10.0 ** grid.log_age_gyr[-1], 0.0))
    np.testing.assert_allclose(spectra[1], grid.spectrum(5.0, grid.metallicity_mh[-1]))
    np.testing.assert_allclose(
        spectra[2], grid.spectrum(10.0 ** grid.log_age_gyr[0], 0.0), rtol=1e-12
    )
    np.testing.assert_allclose(spectra[3], grid.flux[0, 0], rtol=1e-12)


def test_weights_operator(grid):
    rng = np.random.default_rng(0)
    ages = 10.0 ** rng.uniform(-1.5, 1.5, 64)
    mhs = rng.uniform(-2.0, 0.6, 64)
    w = grid.weights(ages, mhs)
    assert w.shape == (64, 8, 4)
    np.testing.assert_allclose(w.sum(axis=(1, 2)), 1.0, rtol=1e-14)
    assert np.all(np.asarray(w) >= 0)
    spectra, _ = grid.lookup(ages, mhs)
    np.testing.assert_allclose(jnp.einsum("sam,amw->sw", w, grid.flux), spectra, rtol=1e-12)


def _flux_sum(grid, age, mh):
    return jnp.sum(grid.spectrum(age, mh))


@pytest.mark.parametrize(("age", "mh"), [(0.5, -1.0), (3.7, 0.1), (9.0, -0.5)])
def test_gradient_matches_finite_differences(grid, age, mh):
    g_age, g_mh = jax.grad(_flux_sum, argnums=(1, 2))(grid, age, mh)
    h_age, h_mh = 1e-6 * age, 1e-6
    fd_age = (_flux_sum(grid, age + h_age, mh) - _flux_sum(grid, age - h_age, mh)) / (2 * h_age)
    fd_mh = (_flux_sum(grid, age, mh + h_mh) - _flux_sum(grid, age, mh - h_mh)) / (2 * h_mh)
    np.testing.assert_allclose(g_age, fd_age, rtol=1e-6)
    np.testing.assert_allclose(g_mh, fd_mh, rtol=1e-6)
    assert g_age != 0 and g_mh != 0
    # forward mode and vmap agree
    jf = jax.jacfwd(_flux_sum, argnums=(1, 2))(grid, age, mh)
    np.testing.assert_allclose(jf, (g_age, g_mh), rtol=1e-10)
    vg = jax.vmap(jax.grad(_flux_sum, argnums=1), in_axes=(None, 0, 0))(
        grid, jnp.array([age, age]), jnp.array([mh, mh])
    )
    np.testing.assert_allclose(vg, [g_age, g_age], rtol=1e-10)


@pytest.mark.parametrize(
    ("age", "mh"), [(20.0, 0.0), (1e-3, 0.0), (5.0, 0.8), (5.0, -3.0), (0.0, 0.0)]
)
def test_gradient_finite_outside_and_at_edges(grid, age, mh):
    grads = jax.grad(_flux_sum, argnums=(1, 2))(grid, age, mh)
    assert all(np.isfinite(g) for g in grads)
    edge = 10.0 ** grid.log_age_gyr[-1]
    grads = jax.grad(_flux_sum, argnums=(1, 2))(grid, edge, grid.metallicity_mh[0])
    assert all(np.isfinite(g) for g in grads)


def test_gradient_wrt_flux_table(grid):
    """The table is an ordinary leaf: d(spectrum)/d(flux) is the weight operator."""
    g = eqx.filter_grad(lambda gr: jnp.sum(gr.lookup(jnp.array([3.0]), jnp.array([-0.2]))[0]))(grid)
    w = grid.weights(np.array([3.0]), np.array([-0.2]))[0]
    np.testing.assert_allclose(g.flux, np.broadcast_to(w[..., None], grid.flux.shape))


def test_jit_and_vmap(grid):
    ages = jnp.array([0.2, 2.0, 9.0, 20.0])
    mhs = jnp.array([-1.0, 0.0, 0.2, 0.0])

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def run(gr, a, m):
        return gr.lookup(a, m)

    spectra, n_outside = run(grid, ages, mhs)
    spectra2, _ = run(grid, ages * 1.01, mhs)
    assert spectra2.shape == spectra.shape
    assert int(n_outside) == 1
    vspec = jax.vmap(grid.spectrum)(ages, mhs)
    np.testing.assert_allclose(vspec, spectra, rtol=1e-14)
    wj = eqx.filter_jit(grid.weights)(ages, mhs)
    np.testing.assert_allclose(wj, grid.weights(ages, mhs))


def _assert_same(a: TemplateGrid, b: TemplateGrid):
    for key in ("log_age_gyr", "metallicity_mh", "wave_aa", "flux", "surviving_mass_fraction"):
        x, y = np.asarray(getattr(a, key)), np.asarray(getattr(b, key))
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes(), key
    for key in ("medium", "z_sun", "name", "licence", "source"):
        assert getattr(a, key) == getattr(b, key), key


def test_npz_round_trip(grid, tmp_path):
    path = tmp_path / "grid.npz"
    save_template_npz(path, grid)
    _assert_same(grid, load_template_npz(path))


def test_hdf5_round_trip(grid, tmp_path):
    path = tmp_path / "grid.h5"
    save_template_hdf5(path, grid)
    _assert_same(grid, load_template_hdf5(path))


def test_round_trip_without_surviving_fraction(grid, tmp_path):
    bare = eqx.tree_at(lambda g: g.surviving_mass_fraction, grid, None, is_leaf=lambda x: x is None)
    assert bare.surviving_mass_fraction is None
    save_template_npz(tmp_path / "a.npz", bare)
    save_template_hdf5(tmp_path / "a.h5", bare)
    assert load_template_npz(tmp_path / "a.npz").surviving_mass_fraction is None
    assert load_template_hdf5(tmp_path / "a.h5").surviving_mass_fraction is None


def test_missing_files_and_keys(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_template_npz(missing)
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        load_template_hdf5(tmp_path / "nope.h5")
    np.savez(tmp_path / "partial.npz", log_age_gyr=np.arange(3.0))
    with pytest.raises(ValueError, match="wave_aa"):
        load_template_npz(tmp_path / "partial.npz")


def _kwargs(grid, **changes):
    kwargs = dict(
        log_age_gyr=np.asarray(grid.log_age_gyr),
        metallicity_mh=np.asarray(grid.metallicity_mh),
        wave_aa=np.asarray(grid.wave_aa),
        flux=np.asarray(grid.flux),
        surviving_mass_fraction=np.asarray(grid.surviving_mass_fraction),
    )
    kwargs.update(changes)
    return kwargs


def test_bad_grids_raise(grid):
    flux = np.asarray(grid.flux)
    cases = {
        "flux": dict(flux=flux[:, :, :-1]),
        "surviving_mass_fraction": dict(surviving_mass_fraction=np.ones((3, 3))),
        "log_age_gyr": dict(log_age_gyr=np.asarray(grid.log_age_gyr)[::-1]),
        "metallicity_mh": dict(metallicity_mh=np.array([0.0, 0.0, 0.1, 0.2])),
        "wave_aa": dict(wave_aa=np.where(np.arange(flux.shape[2]) == 5, np.nan, grid.wave_aa)),
        "medium": dict(medium="glass"),
    }
    for field, change in cases.items():
        with pytest.raises(ValueError, match=f"`{field}`"):
            TemplateGrid(**_kwargs(grid, **change))
    with pytest.raises(ValueError, match="`log_age_gyr`"):
        TemplateGrid(**_kwargs(grid, log_age_gyr=np.zeros((8, 1))))
    with pytest.raises(ValueError, match="same length"):
        grid.lookup(np.ones(3), np.ones(2))


def test_construction_under_jit_skips_value_checks(grid):
    @jax.jit
    def build(log_age):
        return TemplateGrid(**_kwargs(grid, log_age_gyr=log_age)).spectrum(2.0, 0.0)

    np.testing.assert_allclose(build(grid.log_age_gyr), grid.spectrum(2.0, 0.0), rtol=1e-14)


def test_single_metallicity_grid():
    g = synthetic_grid(n_age=3, n_met=1, wave_min=5000.0, wave_max=5010.0)
    spectra, n_outside = g.lookup(np.array([1.0, 1.0]), np.array([0.0, 0.5]))
    np.testing.assert_allclose(spectra[0], spectra[1])
    assert int(n_outside) == 1
    np.testing.assert_allclose(g.weights(np.array([1.0]), np.array([0.0])).sum(), 1.0)


@pytest.mark.skipif(importlib.util.find_spec("ppxf") is not None, reason="ppxf is installed")
def test_load_emiles_needs_extra():
    with pytest.raises(ImportError, match=r"diffgal\[emiles\]"):
        load_emiles()


def test_float32(grid):
    g32 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), grid)
    ages = jnp.array([0.2, 2.0, 9.0, 20.0], jnp.float32)
    mhs = jnp.array([-1.0, 0.0, 0.2, 0.0], jnp.float32)
    spectra, n_outside = g32.lookup(ages, mhs)
    assert spectra.dtype == jnp.float32
    assert g32.weights(ages, mhs).dtype == jnp.float32
    assert int(n_outside) == 1
    ref, _ = grid.lookup(np.asarray(ages, np.float64), np.asarray(mhs, np.float64))
    np.testing.assert_allclose(spectra, ref, rtol=2e-5)
    g = jax.grad(lambda a: jnp.sum(g32.spectrum(a, jnp.float32(0.0))))(jnp.float32(3.0))
    assert g.dtype == jnp.float32 and np.isfinite(g)
