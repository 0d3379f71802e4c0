"""The composed model against independent calculations: SFH inversion and its gradient, ages and
metallicities of the particles, abundance columns, the cube, the likelihood terms, HDF5 I/O."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, special, stats

from diffgal.chemistry import GammaSFH, bracket_x_h
from diffgal.chemistry._solar import atomic_weights, solar_log_eps
from diffgal.galaxy import (
    MockGalaxy,
    load_mock_galaxy,
    load_particles_hdf5,
    make_mock_galaxy,
    save_mock_galaxy,
    save_particles_hdf5,
)
from diffgal.ifu import StellarParticles
from diffgal.pipeline import (
    CubeObservation,
    abundance_columns,
    abundance_loglik,
    cube_chi2,
    draw_birth_times,
    metallicity_mh,
    sfh_birth_times,
)

from .conftest import T_OBS

LN10 = np.log(10.0)


def gamma2_cdf(t, log10_peak):
    """C(t) of the Gamma(2) SFH, from scipy."""
    return special.gammainc(2.0, np.asarray(t) / 10.0**log10_peak)


def age_cdf(age, log10_peak, t_obs=T_OBS):
    """P(stellar age <= a) for stars formed by t_obs: 1 - C(t_obs - a) / C(t_obs)."""
    return 1.0 - gamma2_cdf(t_obs - np.asarray(age), log10_peak) / gamma2_cdf(t_obs, log10_peak)


_birth_times = eqx.filter_jit(sfh_birth_times)


@eqx.filter_jit
def _pipeline_birth_times_and_tangent(pipe, params, gal):
    """The pipeline's birth times and their derivative with respect to log10_sfr_peak."""

    def f(lp):
        return pipe.birth_times(params.replace(log10_sfr_peak=lp), gal)

    lp = jnp.asarray(params.log10_sfr_peak)
    return jax.jvp(f, (lp,), (jnp.ones_like(lp),))


def implicit_dt_dlp(t, u, log10_peak, t_obs=T_OBS):
    """dt/dlog10_peak of C(t) = u C(t_obs) for the Gamma(2) SFH, analytically: with
    x = t/theta, dC/dp = -x^2 e^-x ln10 and g = dC/dt = x e^-x / theta."""
    theta = 10.0**log10_peak
    x, x_end = np.asarray(t) / theta, t_obs / theta

    def dc_dp(x):
        return -(x**2) * np.exp(-x) * LN10

    return -(dc_dp(x) - np.asarray(u) * dc_dp(x_end)) / (x * np.exp(-x) / theta)


# --- star-formation history -------------------------------------------------------------------


@pytest.mark.parametrize("log10_peak", [-0.9, 0.3, 0.55, 1.1])
def test_sfh_birth_times_invert_the_cdf(log10_peak):
    """C(t(u)) / C(T) = u to 1e-10 over the whole range, including tiny quantiles where C rises
    as t^2 (log10_peak spans the support of log10_sfr_peak)."""
    u = jnp.concatenate([jnp.logspace(-10, -3, 50, endpoint=False),
                         jnp.linspace(1e-3, 1.0 - 1e-6, 2000)])
    t = np.asarray(_birth_times(GammaSFH(jnp.asarray(log10_peak)), u, T_OBS))
    assert np.all((t > 0) & (t < T_OBS)) and np.all(np.diff(t) > 0)
    err = np.abs(gamma2_cdf(t, log10_peak) / gamma2_cdf(T_OBS, log10_peak) - np.asarray(u))
    assert err.max() < 1e-10
    small = np.asarray(u) < 1e-3  # relative accuracy where the quantile is tiny
    assert np.max(err[small] / np.asarray(u)[small]) < 1e-8


@pytest.mark.parametrize("log10_peak", [0.3, 0.55, 0.9])
def test_sfh_birth_time_gradient_is_the_implicit_function_value(log10_peak):
    """dt/dlog10_peak from jax = -(dC/dp(t) - u dC/dp(T)) / g(t) = central differences."""
    u = jnp.linspace(1e-4, 1.0 - 1e-4, 801)

    def t_of(lp):
        return _birth_times(GammaSFH(lp), u, T_OBS)

    lp = jnp.asarray(log10_peak)
    jac = np.asarray(eqx.filter_jit(jax.jacfwd(lambda p: sfh_birth_times(GammaSFH(p), u,
                                                                         T_OBS)))(lp))
    implicit = implicit_dt_dlp(t_of(lp), u, log10_peak)
    assert np.all(implicit > 0)  # a later peak moves every birth later
    np.testing.assert_allclose(jac, implicit, rtol=1e-8)
    h = 1e-6
    fd = (np.asarray(t_of(lp + h)) - np.asarray(t_of(lp - h))) / (2 * h)
    np.testing.assert_allclose(jac, fd, rtol=1e-6, atol=1e-7 * np.abs(implicit).max())


@pytest.mark.parametrize("sampling", ["random", "qmc"])
def test_mock_galaxy_ages_follow_the_sfh(pipeline, truth, sampling):
    """Particle ages (t_obs - t(u) for uniform birth quantiles u) have the SFH's age
    distribution (KS against scipy's Gamma(2) CDF), and not that of a shifted peak."""
    n = 20_000
    gal = make_mock_galaxy(jax.random.key(5), n, age_gyr=T_OBS, sampling=sampling)
    t_birth, dt_dlp = map(np.asarray, _pipeline_birth_times_and_tangent(pipeline, truth, gal))
    age = gal.age_gyr - t_birth
    lp = float(truth.log10_sfr_peak)
    res = stats.kstest(age, lambda a: age_cdf(a, lp))
    if sampling == "random":
        assert res.pvalue > 0.01, res
    else:  # a low-discrepancy sequence: far below the ~1/sqrt(n) of random draws
        assert res.statistic < 1e-3, res
    wrong = stats.kstest(age, lambda a: age_cdf(a, lp + 0.1))
    assert wrong.pvalue < 1e-10 and wrong.statistic > 0.02
    # the ages move with the SFH peak, particle by particle, as the implicit function says
    expected = implicit_dt_dlp(t_birth, gal.birth_quantile, lp)
    np.testing.assert_allclose(dt_dlp, expected, rtol=1e-8, atol=1e-12)


def test_fixed_birth_times_do_not_depend_on_the_sfh(pipeline, truth, galaxy):
    fixed = MockGalaxy(galaxy.position, galaxy.velocity, galaxy.mass, None,
                       jnp.linspace(0.5, 12.0, galaxy.n_star), age_gyr=T_OBS)
    t, dt = _pipeline_birth_times_and_tangent(pipeline, truth, fixed)
    np.testing.assert_array_equal(np.asarray(t), np.asarray(fixed.birth_time))
    assert np.all(np.asarray(dt) == 0.0)


def test_draw_birth_times_follow_the_truncated_sfh(pipeline, truth):
    t = np.asarray(draw_birth_times(jax.random.key(7), pipeline, truth, 4000, T_OBS, t_min=1.0))
    assert t.min() >= 1.0 and t.max() <= T_OBS
    lp = float(truth.log10_sfr_peak)
    c_lo, c_hi = gamma2_cdf(1.0, lp), gamma2_cdf(T_OBS, lp)
    res = stats.kstest(t, lambda s: (gamma2_cdf(s, lp) - c_lo) / (c_hi - c_lo))
    assert res.pvalue > 0.01, res


# --- chemistry -> particles and abundances ----------------------------------------------------


def _solar_masses(elements):
    """ISM element masses with the Asplund+09 solar composition (per unit H mass)."""
    eps = solar_log_eps(elements)
    return 10.0 ** (eps - 12.0) * atomic_weights(elements) / atomic_weights(("H",))[0]


def test_metallicity_mh_of_solar_composition(pipeline):
    elements = pipeline.elements
    sun = _solar_masses(elements)
    metals = np.array([e not in ("H", "He") for e in elements])
    assert float(metallicity_mh(jnp.asarray(sun), elements)) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(np.asarray(bracket_x_h(jnp.asarray(sun), elements)), 0.0,
                               atol=1e-12)
    # [M/H] is log10 of the metal-to-hydrogen mass ratio relative to solar
    for factor in (1e-2, 0.5, 3.0):
        scaled = np.where(metals, sun * factor, sun)
        assert float(metallicity_mh(jnp.asarray(scaled), elements)) == pytest.approx(
            np.log10(factor), abs=1e-12)
    # more helium or hydrogen mass at fixed metals: [M/H] ignores He and follows 1/X
    assert float(metallicity_mh(jnp.asarray(np.where(np.asarray(elements) == "H", 2 * sun, sun)),
                                elements)) == pytest.approx(-np.log10(2.0), abs=1e-12)
    helium = np.where(np.asarray(elements) == "He", 5 * sun, sun)
    assert float(metallicity_mh(jnp.asarray(helium), elements)) == pytest.approx(0.0, abs=1e-12)


def test_particles_take_the_ism_metallicity_at_their_birth(pipeline, truth, galaxy):
    """[M/H] of each particle = log10(Z/X / (Z/X)_sun) of the ISM interpolated (numpy) to its
    birth time; age = t_obs - birth time."""
    history = pipeline.history(truth, T_OBS)
    particles = pipeline.particles(truth, galaxy, history)
    t = np.asarray(pipeline.birth_times(truth, galaxy))
    time, ism = np.asarray(history.time), np.asarray(history.ism_mass)
    masses = np.stack([np.interp(t, time, ism[:, k]) for k in range(ism.shape[1])], axis=-1)
    elements = pipeline.elements
    metals = np.array([e not in ("H", "He") for e in elements])
    h = elements.index("H")
    sun = _solar_masses(elements)
    z_over_x = masses[:, metals].sum(-1) / masses[:, h]
    expected = np.log10(np.maximum(z_over_x, 1e-12) / (sun[metals].sum() / sun[h]))
    np.testing.assert_allclose(np.asarray(particles.metallicity), expected, atol=1e-10)
    np.testing.assert_allclose(np.asarray(particles.age), T_OBS - t, rtol=0, atol=1e-12)
    assert particles.metal_kind == "MH"
    # a real spread: early stars metal-poor, late ones near solar
    mh = np.asarray(particles.metallicity)
    late = t > 10.0
    assert mh[late].min() > -0.5 and np.median(mh[t < 1.0]) < mh[late].min() - 0.5


def test_abundances_are_bracket_differences(pipeline, truth):
    elements = pipeline.elements
    cols = pipeline.columns
    assert cols == abundance_columns(elements)
    assert cols[0] == "[Fe/H]"
    assert cols[1:] == tuple(f"[{e}/Fe]" for e in elements if e not in ("H", "He", "Fe"))
    t = jnp.linspace(0.5, T_OBS, 37)
    pred = np.asarray(pipeline.abundances(truth, t, T_OBS))
    assert pred.shape == (37, len(cols))
    xh = np.asarray(bracket_x_h(pipeline.history(truth, T_OBS).ism_mass_at(t), elements))
    fe = xh[:, elements.index("Fe")]
    for k, col in enumerate(cols):
        num, den = col.strip("[]").split("/")
        expected = xh[:, elements.index(num)] - (0.0 if den == "H" else fe)
        np.testing.assert_allclose(pred[:, k], expected, atol=1e-12, err_msg=col)
    # [Fe/H] rises with time (monotone enrichment in a closed-ish box)
    assert np.all(np.diff(pred[:, 0]) > 0)


# --- cube -------------------------------------------------------------------------------------


def test_cube_is_the_render_of_the_pipeline_particles(pipeline, truth, galaxy, truth_cube):
    particles = pipeline.particles(truth, galaxy)
    direct = pipeline.renderer(particles)
    flux = np.asarray(truth_cube.flux)
    np.testing.assert_allclose(flux, np.asarray(direct.flux), rtol=1e-12, atol=1e-14 * flux.max())
    assert float(np.sum(flux)) == pytest.approx(float(jnp.sum(direct.flux)), rel=1e-12)
    assert flux.shape == pipeline.renderer.telescope.shape and flux.min() >= 0.0
    # flux conservation: the cube is additive over any split of the particles
    half = jnp.arange(galaxy.n_star) % 2 == 0
    parts = [eqx.tree_at(lambda g: g.mass, galaxy, jnp.where(sel, galaxy.mass, 0.0))
             for sel in (half, ~half)]
    cubes = [pipeline.cube(truth, g) for g in parts]
    total = np.asarray(cubes[0].flux) + np.asarray(cubes[1].flux)
    np.testing.assert_allclose(total, flux, rtol=1e-10, atol=1e-12 * flux.max())
    mass = np.asarray(cubes[0].mass_map) + np.asarray(cubes[1].mass_map)
    np.testing.assert_allclose(mass, np.asarray(truth_cube.mass_map), rtol=1e-10)
    # every particle's mass is on the grid unless it falls outside the field
    inside = float(np.sum(np.asarray(truth_cube.mass_map)))
    assert inside <= float(jnp.sum(galaxy.mass)) * (1 + 1e-12)
    if int(truth_cube.n_outside_fov) == 0:
        assert inside == pytest.approx(float(jnp.sum(galaxy.mass)), rel=1e-10)


def test_observed_cube_noise_matches_the_requested_snr(truth_cube, obs):
    mask = np.asarray(obs.mask)
    clean = np.asarray(truth_cube.flux)[mask]
    pulls = (np.asarray(obs.flux)[mask] - clean) / np.sqrt(np.asarray(obs.variance)[mask])
    assert abs(pulls.mean()) < 0.05 and abs(pulls.std() - 1.0) < 0.05
    mean_flux = np.asarray(truth_cube.flux).mean(-1)
    i, j = np.unravel_index(np.argmax(mean_flux), mean_flux.shape)
    snr = mean_flux[i, j] / np.sqrt(np.asarray(obs.variance)[i, j].mean())
    assert snr == pytest.approx(30.0, rel=0.05)
    # the fitted spaxels are those of the aperture with observed S/N >= min_snr = 3
    snr_map = np.asarray(obs.flux).mean(-1) / np.sqrt(np.asarray(obs.variance).mean(-1))
    aperture = np.asarray(truth_cube.mask)
    np.testing.assert_array_equal(mask, aperture & (snr_map >= 3.0))
    assert 0 < mask.sum() < mask.size


# --- likelihood terms -------------------------------------------------------------------------


def test_cube_chi2_fixed_and_per_spaxel(truth_cube, obs):
    model = np.asarray(truth_cube.flux)
    var, mask = np.asarray(obs.variance), np.asarray(obs.mask)
    scaled = CubeObservation(jnp.asarray(2.5 * model), obs.variance, obs.mask)
    fixed = float(cube_chi2(truth_cube.flux, scaled, "fixed"))
    assert fixed == pytest.approx(np.sum((1.5 * model[mask]) ** 2 / var[mask]), rel=1e-12)
    assert fixed > 1e3
    # a free amplitude per spaxel absorbs a pure rescaling
    assert abs(float(cube_chi2(truth_cube.flux, scaled, "per_spaxel"))) < 1e-10 * fixed

    # general data: per_spaxel = sum over masked spaxels of min_a sum_w (d - a m)^2 / var
    rng = np.random.default_rng(3)
    data = model * rng.uniform(0.5, 2.0, model.shape[:2])[..., None] + rng.normal(
        size=model.shape) * np.sqrt(var)
    data_obs = CubeObservation(jnp.asarray(data), obs.variance, obs.mask)
    per = float(cube_chi2(truth_cube.flux, data_obs, "per_spaxel"))
    expected = 0.0
    for i, j in zip(*np.nonzero(mask), strict=True):
        res = optimize.minimize_scalar(
            lambda a, i=i, j=j: np.sum((data[i, j] - a * model[i, j]) ** 2 / var[i, j]),
            bracket=(0.0, 1.0), tol=1e-12)
        expected += res.fun
    assert per == pytest.approx(expected, rel=1e-9)
    fixed = float(cube_chi2(truth_cube.flux, data_obs, "fixed"))
    assert fixed == pytest.approx(np.sum((data - model)[mask] ** 2 / var[mask]), rel=1e-12)
    assert per < fixed
    # spaxels outside the mask do not count, whatever they hold
    junk = np.where(mask[..., None], data, 1e30)
    junk_obs = CubeObservation(jnp.asarray(junk), obs.variance, obs.mask)
    for norm, value in (("fixed", fixed), ("per_spaxel", per)):
        assert float(cube_chi2(truth_cube.flux, junk_obs, norm)) == pytest.approx(value,
                                                                                  rel=1e-12)


def test_abundance_loglik_is_the_gaussian_log_density(pipeline, truth, stars):
    pred = pipeline.abundances(truth, stars.birth_time, T_OBS)
    ll = float(abundance_loglik(pred, stars))
    expected = stats.norm.logpdf(np.asarray(stars.values), loc=np.asarray(pred),
                                 scale=np.asarray(stars.errors)).sum()
    assert ll == pytest.approx(expected, rel=1e-12)
    # the mock catalogue scatters about the model with the stated errors
    pulls = (np.asarray(stars.values) - np.asarray(pred)) / np.asarray(stars.errors)
    assert abs(pulls.std() - 1.0) < 0.15 and abs(pulls.mean()) < 0.15
    # a worse model has a lower likelihood
    worse = pipeline.abundances(truth.replace(log10_n_ia=truth.log10_n_ia + 0.3),
                                stars.birth_time, T_OBS)
    assert float(abundance_loglik(worse, stars)) < ll - 10.0


# --- HDF5 -------------------------------------------------------------------------------------


def test_mock_galaxy_hdf5_round_trip(tmp_path, pipeline, truth, galaxy):
    particles = pipeline.particles(truth, galaxy)
    path = tmp_path / "mock.h5"
    save_mock_galaxy(path, galaxy, particles, attrs={"truth": truth.as_dict()})
    back = load_mock_galaxy(path)
    for name in ("position", "velocity", "mass", "birth_quantile"):
        a, b = np.asarray(getattr(galaxy, name)), np.asarray(getattr(back, name))
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(b, a, err_msg=name)
    assert back.birth_time is None and back.age_gyr == galaxy.age_gyr
    # readers of the base star-particle format see this model evaluation
    base = load_particles_hdf5(path)
    np.testing.assert_array_equal(np.asarray(base.age), np.asarray(particles.age))
    np.testing.assert_array_equal(np.asarray(base.metallicity), np.asarray(particles.metallicity))

    fixed = MockGalaxy(galaxy.position, galaxy.velocity, galaxy.mass, None,
                       jnp.asarray(T_OBS - np.asarray(particles.age)), age_gyr=T_OBS)
    save_mock_galaxy(tmp_path / "fixed.h5", fixed)
    back = load_mock_galaxy(tmp_path / "fixed.h5")
    assert back.birth_quantile is None and back.age_gyr == T_OBS
    np.testing.assert_array_equal(np.asarray(back.birth_time), np.asarray(fixed.birth_time))


def test_plain_star_particle_file_loads_with_fixed_birth_times(tmp_path):
    rng = np.random.default_rng(0)
    n = 50
    age = rng.uniform(0.1, 9.873, n)
    age[0] = 9.873
    plain = StellarParticles(jnp.asarray(rng.normal(size=(n, 3))),
                             jnp.asarray(rng.normal(size=(n, 3))),
                             jnp.full(n, 1e5), jnp.asarray(age), jnp.zeros(n), metal_kind="MH")
    save_particles_hdf5(tmp_path / "plain.h5", plain)
    gal = load_mock_galaxy(tmp_path / "plain.h5")
    assert gal.birth_quantile is None
    assert gal.age_gyr == pytest.approx(9.88, abs=1e-12)  # oldest age rounded up to 0.01 Gyr
    np.testing.assert_allclose(np.asarray(gal.birth_time), gal.age_gyr - age, rtol=0,
                               atol=1e-12)
    assert np.all(np.asarray(gal.birth_time) >= 0.0)
    np.testing.assert_array_equal(np.asarray(gal.position), np.asarray(plain.position))
