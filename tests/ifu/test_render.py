"""Physics of the IFU renderer against analytic references (synthetic templates, float64)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgal.ifu import (
    StellarParticles,
    get_telescope,
    make_renderer,
    render,
    rotation_matrix,
)
from diffgal.spectra import synthetic_grid

C_KMS = 299792.458
LSUN = 3.828e33
MPC = 3.0856775814913673e24


@pytest.fixture(scope="module")
def grid():
    return synthetic_grid()


def small_telescope(n=8, n_wave=800, lsf=0.0, **kw):
    return get_telescope("MUSE").replace(n_x=n, n_y=n, n_wave=n_wave, lsf_fwhm_aa=lsf, **kw)


def particles(pos, vel, mass, age, mh):
    return StellarParticles(
        jnp.asarray(pos, float), jnp.asarray(vel, float), jnp.asarray(mass, float),
        jnp.asarray(age, float), jnp.asarray(mh, float)
    )


# --- an independent numpy reference ----------------------------------------------------------


def _node_weights(x, nodes):
    x = np.clip(x, nodes[0], nodes[-1])
    i = np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, len(nodes) - 2)
    t = (x - nodes[i]) / (nodes[i + 1] - nodes[i])
    return i, t


def reference_template(grid, age, mh):
    """The bilinear (log age, [M/H]) template of one star, numpy float64."""
    ia, ta = _node_weights(np.log10(age), np.asarray(grid.log_age_gyr))
    im, tm = _node_weights(mh, np.asarray(grid.metallicity_mh))
    f = np.asarray(grid.flux, np.float64)
    return ((1 - ta) * (1 - tm) * f[ia, im] + ta * (1 - tm) * f[ia + 1, im]
            + (1 - ta) * tm * f[ia, im + 1] + ta * tm * f[ia + 1, im + 1])


def band_integral(wave, flux, lo, hi):
    """Exact integral of the piecewise-linear (wave, flux) over [lo, hi] (numpy)."""
    def cum(x):
        j = np.clip(np.searchsorted(wave, x, side="right") - 1, 0, len(wave) - 2)
        steps = np.concatenate([[0.0], np.cumsum(0.5 * (flux[1:] + flux[:-1]) * np.diff(wave))])
        dx = x - wave[j]
        slope = (flux[j + 1] - flux[j]) / (wave[j + 1] - wave[j])
        return steps[j] + dx * flux[j] + 0.5 * slope * dx**2

    return cum(hi) - cum(lo)


# --- acceptance 1: physics ---------------------------------------------------------------------


def test_cube_total_equals_luminosity_in_field(grid):
    """Before the PSF, Σ cube · Δλ equals Σ over particles in the field of m ∫T (1e-5)."""
    tel = small_telescope(n=8, n_wave=800)
    d_mpc = 10.0
    r = make_renderer(tel, grid, distance_mpc=d_mpc, v_max=300.0, flux_scale=1.0)
    rng = np.random.default_rng(1)
    n = 300
    p_kpc = float(r.pixel_kpc)
    pos = rng.uniform(-6 * p_kpc, 6 * p_kpc, (n, 3))  # many particles outside the 8x8 field
    vel = rng.normal(0, 120, (n, 3))
    mass = rng.uniform(1e3, 1e4, n)
    age = 10 ** rng.uniform(-1.0, 1.0, n)
    mh = rng.uniform(-1.4, 0.2, n)
    cube = r(particles(pos, vel, mass, age, mh))
    edges = tel.wave_edges()
    total = float(np.sum(np.asarray(cube.flux) * np.diff(edges)))
    inside = (np.abs(pos[:, 0]) < 4 * p_kpc) & (np.abs(pos[:, 1]) < 4 * p_kpc)
    wave = np.asarray(grid.wave_aa)
    expected = 0.0
    for i in np.flatnonzero(inside):
        s = math.exp(vel[i, 2] / C_KMS)
        t = reference_template(grid, age[i], mh[i])
        expected += mass[i] * band_integral(wave, t, edges[0] / s, edges[-1] / s)
    expected *= LSUN / (4 * math.pi * (d_mpc * MPC) ** 2)
    assert 40 < inside.sum() < n
    assert total == pytest.approx(expected, rel=1e-5)
    assert int(cube.n_outside_fov) == n - inside.sum()


def test_template_node_reproduced_exactly(grid):
    """A star at a grid node, v = 0, no LSF: the cube is m × the pixel means of that node."""
    tel = small_telescope(n=4, n_wave=600)
    r = make_renderer(tel, grid, distance_mpc=1.0, output_units="lsun_per_A", v_max=100.0)
    a, m = 5, 2
    age = 10 ** float(grid.log_age_gyr[a])
    mass = 2.5e4
    cube = r(particles([[0.1 * float(r.pixel_kpc), 0.2 * float(r.pixel_kpc), 0.0]],
                       [[0.0, 0.0, 0.0]], [mass], [age], [float(grid.metallicity_mh[m])]))
    spec = np.asarray(cube.flux).sum(axis=(0, 1))
    edges = tel.wave_edges()
    node = np.asarray(grid.flux)[a, m]
    expected = mass * band_integral(np.asarray(grid.wave_aa), node, edges[:-1], edges[1:])
    expected /= np.diff(edges)
    np.testing.assert_allclose(spec, expected, rtol=1e-12)
    # ... and the same node straight from the grid's own lookup:
    np.testing.assert_array_equal(np.asarray(grid.spectrum(age, grid.metallicity_mh[m])), node)


def test_luminosity_and_flux_units(grid):
    tel = small_telescope(n=4, n_wave=400)
    p = particles([[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [1e6], [3.0], [-0.3])
    lum = make_renderer(tel, grid, distance_mpc=20.0, output_units="lsun_per_A", v_max=100.0)(p)
    flux = make_renderer(tel, grid, distance_mpc=20.0, flux_scale=1e-20, v_max=100.0)(p)
    ratio = np.asarray(flux.flux).sum() / np.asarray(lum.flux).sum()
    assert ratio == pytest.approx(LSUN / (4 * math.pi * (20 * MPC) ** 2) / 1e-20, rel=1e-12)
    assert flux.unit == "10**(-20)*erg/s/cm**2/Angstrom"
    assert lum.unit == "solLum/Angstrom"


def test_redshift_moves_a_line_by_one_plus_z(grid):
    """At z = 0.1 the 4861 Å line lands at 4861 × 1.1 Å (within 0.1 pixel)."""
    tel = get_telescope("MUSE").replace(n_x=2, n_y=2, lsf_fwhm_aa=0.0, wave_start_aa=5200.0,
                                        n_wave=600)
    r = make_renderer(tel, grid, redshift=0.1, v_max=100.0)
    p = particles([[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [1e6], [10.0], [0.0])
    spec = np.asarray(r(p).flux).sum(axis=(0, 1))
    wave = tel.wavelength()
    sel = np.abs(wave - 4861 * 1.1) < 15
    cont = np.polyval(np.polyfit(wave[sel & (np.abs(wave - 5347) > 6)],
                                 spec[sel & (np.abs(wave - 5347) > 6)], 2), wave[sel])
    depth = 1 - spec[sel] / cont
    centre = np.sum(wave[sel] * depth) / np.sum(depth)
    assert abs(centre - 4861 * 1.1) < 0.1 * tel.dwave_aa
    assert dict(r.meta)["distance_mpc"] == pytest.approx(475.34, rel=2e-4)


def _xcorr_velocity(wave, spec, ref, v_range=400.0, step=0.5):
    """Velocity of `spec` relative to `ref` by cross-correlation on a ln λ grid."""
    ln = np.arange(np.log(wave[40]), np.log(wave[-40]), step / C_KMS)
    def prep(s):
        y = np.interp(ln, np.log(wave), s)
        y = y / np.polyval(np.polyfit(ln - ln.mean(), y, 5), ln - ln.mean()) - 1.0
        return y
    a, b = prep(spec), prep(ref)
    lags = np.arange(-int(v_range / step), int(v_range / step) + 1)
    cc = np.array([np.dot(a[max(k, 0): len(a) + min(k, 0)], b[max(-k, 0): len(b) + min(-k, 0)])
                   for k in lags])
    k = int(np.argmax(cc))
    y0, y1, y2 = cc[k - 1], cc[k], cc[k + 1]
    return (lags[k] + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)) * step


@pytest.mark.parametrize("v_los", [137.3, -61.9])
def test_single_particle_velocity_by_cross_correlation(grid, v_los):
    tel = get_telescope("MUSE").replace(n_x=2, n_y=2)  # full MUSE band, MUSE LSF
    r = make_renderer(tel, grid, distance_mpc=10.0, v_max=300.0)

    def spectrum(v):
        p = particles([[0.0, 0.0, 0.0]], [[0.0, 0.0, v]], [1e6], [2.0], [-0.2])
        return np.asarray(r(p).flux).sum(axis=(0, 1))

    v = _xcorr_velocity(tel.wavelength(), spectrum(v_los), spectrum(0.0))
    assert abs(v - v_los) < 0.5


def test_psf_conserves_flux_and_has_the_right_width(grid):
    base = small_telescope(n=24, n_wave=200)
    p_kpc = make_renderer(base, grid, v_max=100.0).pixel_kpc
    # a point at the centre of spaxel (12, 12)
    pos = [[0.5 * float(p_kpc), 0.5 * float(p_kpc), 0.0]]
    p = particles(pos, [[0.0, 0.0, 0.0]], [1e6], [3.0], [0.0])
    ref = make_renderer(base, grid, v_max=100.0)(p)
    fwhm = 0.6
    for kind in ("gaussian", "moffat"):
        tel = base.replace(psf=kind, psf_fwhm_arcsec=fwhm)
        cube = make_renderer(tel, grid, v_max=100.0)(p)
        assert float(cube.flux.sum()) == pytest.approx(float(ref.flux.sum()), rel=1e-6)
        assert float(cube.mass_map.sum()) == pytest.approx(1e6, rel=1e-6)
    tel = base.replace(psf="gaussian", psf_fwhm_arcsec=fwhm)
    image = np.asarray(make_renderer(tel, grid, v_max=100.0)(p).mass_map)
    x = np.arange(24) - 12.0
    var_x = np.sum(image.sum(1) * x**2) / image.sum()
    sigma_px = fwhm / 0.2 / (2 * math.sqrt(2 * math.log(2)))
    assert var_x == pytest.approx(sigma_px**2, rel=0.01)


def test_lsf_conserves_flux_and_broadens_in_quadrature(grid):
    """Template FWHM 2.3548 Å (s = 1 Å); a 4 Å telescope LSF gives 4 Å lines, same flux."""
    kw = dict(n=2, n_wave=1600)
    p = particles([[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [1e6], [10.0], [0.0])
    sharp = make_renderer(small_telescope(lsf=0.0, **kw), grid, v_max=100.0)(p)
    broad = make_renderer(small_telescope(lsf=4.0, **kw), grid, v_max=100.0)(p)
    a = np.asarray(sharp.flux).sum(axis=(0, 1))
    b = np.asarray(broad.flux).sum(axis=(0, 1))
    interior = slice(50, -50)
    assert b[interior].sum() == pytest.approx(a[interior].sum(), rel=1e-6)
    wave = small_telescope(**kw).wavelength()

    def line_fwhm(s, centre=5270.0):
        sel = np.abs(wave - centre) < 20
        cont = np.polyval(np.polyfit(wave[sel & (np.abs(wave - centre) > 12)],
                                     s[sel & (np.abs(wave - centre) > 12)], 1), wave[sel])
        depth = 1 - s[sel] / cont
        mu = np.sum(wave[sel] * depth) / depth.sum()
        var = np.sum((wave[sel] - mu) ** 2 * depth) / depth.sum()
        return 2 * math.sqrt(2 * math.log(2)) * math.sqrt(var - tel_pixel**2 / 12)

    tel_pixel = 1.25
    assert line_fwhm(b) == pytest.approx(4.0, rel=0.02)
    assert line_fwhm(a) == pytest.approx(2.3548, rel=0.03)


def test_rotation_gives_analytic_projected_positions(grid):
    tel = small_telescope(n=16, n_wave=50)
    inc, pa = 50.0, 30.0
    r = make_renderer(tel, grid, v_max=100.0, spatial="ngp", inclination_deg=inc,
                      position_angle_deg=pa)
    p_kpc = float(r.pixel_kpc)
    rng = np.random.default_rng(3)
    pos = rng.uniform(-5 * p_kpc, 5 * p_kpc, (6, 3))
    masses = np.arange(1, 7) * 1e3
    cube = r(particles(pos, np.zeros((6, 3)), masses, np.full(6, 3.0), np.zeros(6)))
    i, a = math.radians(inc), math.radians(pa)
    x, y, z = pos.T
    yi = math.cos(i) * y - math.sin(i) * z  # tilt about x
    xs = math.cos(a) * x - math.sin(a) * yi
    ys = math.sin(a) * x + math.cos(a) * yi
    ix = np.floor(xs / p_kpc + 8).astype(int)
    iy = np.floor(ys / p_kpc + 8).astype(int)
    expected = np.zeros((16, 16))
    np.add.at(expected, (ix, iy), masses)
    np.testing.assert_allclose(np.asarray(cube.mass_map), expected, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(rotation_matrix(inc, pa)) @ pos.T,
                               np.stack([xs, ys, math.sin(i) * y + math.cos(i) * z]),
                               rtol=1e-12, atol=1e-15)


def test_quarter_turn_about_the_line_of_sight_rotates_the_cube_exactly(grid):
    tel = small_telescope(n=10, n_wave=60)
    rng = np.random.default_rng(4)
    r0 = make_renderer(tel, grid, v_max=200.0)
    r90 = make_renderer(tel, grid, v_max=200.0, position_angle_deg=90.0)
    p_kpc = float(r0.pixel_kpc)
    p = particles(rng.uniform(-4 * p_kpc, 4 * p_kpc, (50, 3)), rng.normal(0, 50, (50, 3)),
                  rng.uniform(1, 2, 50) * 1e4, rng.uniform(1, 9, 50), rng.uniform(-1, 0, 50))
    a = np.asarray(r0(p).flux)
    b = np.asarray(r90(p).flux)
    # (x, y) -> (-y, x): new[i, j] = old[j, n-1-i]
    np.testing.assert_allclose(b, np.rot90(a, k=1, axes=(0, 1)), rtol=1e-10, atol=1e-12 * a.max())


def test_linearity_in_mass_and_union(grid):
    tel = small_telescope(n=6, n_wave=100)
    r = make_renderer(tel, grid, v_max=200.0)
    rng = np.random.default_rng(5)
    p_kpc = float(r.pixel_kpc)

    def random(n):
        return particles(rng.uniform(-3 * p_kpc, 3 * p_kpc, (n, 3)), rng.normal(0, 60, (n, 3)),
                         rng.uniform(1, 2, n) * 1e4, rng.uniform(0.2, 9, n),
                         rng.uniform(-1, 0.1, n))

    a, b = random(40), random(30)
    both = jax.tree.map(lambda x, y: jnp.concatenate([x, y]), a, b)
    fa, fb, fab = (np.asarray(r(q).flux) for q in (a, b, both))
    np.testing.assert_allclose(fab, fa + fb, rtol=1e-10, atol=1e-14 * fab.max())
    scaled = eqx.tree_at(lambda q: q.mass, a, 3.0 * a.mass)
    np.testing.assert_allclose(np.asarray(r(scaled).flux), 3.0 * fa, rtol=1e-12)


def test_out_of_grid_stars_are_clamped_and_counted_never_zeroed(grid):
    tel = small_telescope(n=4, n_wave=100)
    r = make_renderer(tel, grid, v_max=100.0)
    p = particles(np.zeros((3, 3)), np.zeros((3, 3)), [1e4, 1e4, 1e4], [20.0, 0.001, 5.0],
                  [0.0, -3.0, 0.6])
    cube = r(p)
    assert int(cube.n_clamped) == 3
    spec = np.asarray(cube.flux).sum(axis=(0, 1))
    assert np.all(spec > 0)


def test_current_masses_are_divided_by_the_surviving_fraction(grid):
    tel = small_telescope(n=4, n_wave=100)
    r = make_renderer(tel, grid, v_max=100.0)
    a = 6
    age = 10 ** float(grid.log_age_gyr[a])
    args = ([[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [1e4], [age], [0.0 + grid.metallicity_mh[2]])
    initial = r(particles(*args))
    q = particles(*args)
    current = r(StellarParticles(q.position, q.velocity, q.mass, q.age, q.metallicity,
                                 mass_kind="current"))
    f = float(np.asarray(grid.surviving_mass_fraction)[a, 2])
    assert float(current.flux.sum()) == pytest.approx(float(initial.flux.sum()) / f, rel=1e-12)


def test_velocity_clipping_is_reported(grid):
    tel = small_telescope(n=4, n_wave=100)
    r = make_renderer(tel, grid, v_max=100.0)
    p = particles(np.zeros((2, 3)), [[0, 0, 50.0], [0, 0, 400.0]], [1e4, 3e4], [5.0, 5.0],
                  [0.0, 0.0])
    assert float(r(p).clipped_velocity_mass) == pytest.approx(3e4)


def test_truth_maps_are_light_weighted_moments(grid):
    tel = small_telescope(n=4, n_wave=100)
    r = make_renderer(tel, grid, v_max=400.0)
    p = particles(np.zeros((2, 3)), [[0, 0, 100.0], [0, 0, -50.0]], [1e4, 1e4], [5.0, 5.0],
                  [0.0, 0.0])
    cube = r(p)
    i = j = 2  # the particle at the origin sits on the corner of four spaxels
    del i, j
    v = np.asarray(cube.velocity_map)
    s = np.asarray(cube.dispersion_map)
    finite = np.isfinite(v)
    np.testing.assert_allclose(v[finite], 25.0, rtol=1e-10)
    np.testing.assert_allclose(s[finite], 75.0, rtol=1e-10)


def test_float32_main_path_matches_float64(grid):
    tel = small_telescope(n=6, n_wave=300)
    rng = np.random.default_rng(6)
    r64 = make_renderer(tel, grid, v_max=300.0, flux_scale=1e-20)
    r32 = make_renderer(tel, grid, v_max=300.0, flux_scale=1e-20, dtype=jnp.float32)
    p_kpc = float(r64.pixel_kpc)
    p = particles(rng.uniform(-3 * p_kpc, 3 * p_kpc, (500, 3)), rng.normal(0, 80, (500, 3)),
                  rng.uniform(1, 2, 500) * 1e4, rng.uniform(0.1, 12, 500),
                  rng.uniform(-1.4, 0.2, 500))
    a = np.asarray(r64(p).flux)
    b = np.asarray(r32(jax.tree.map(lambda x: x.astype(jnp.float32), p)).flux)
    assert b.dtype == np.float32
    assert np.max(np.abs(b - a)) < 1e-5 * np.max(a)


def test_render_entry_point_with_a_plain_mapping(grid):
    rng = np.random.default_rng(7)
    n = 200
    data = {
        "position": rng.normal(0, 0.05, (n, 3)),
        "velocity": rng.normal(0, 80, (n, 3)),
        "mass": np.full(n, 1e5),
        "age": rng.uniform(0.5, 10, n),
        "metallicity": rng.uniform(-1, 0.2, n),
    }
    cube = render(data, "MUSE", grid, distance_mpc=10.0)
    assert cube.flux.shape == (25, 25, 3721)
    assert cube.wavelength.shape == (3721,)
    assert float(cube.wavelength[0]) == pytest.approx(4700.15)
    assert cube.unit == "erg/s/cm**2/Angstrom"
    assert float(cube.flux.sum()) > 0
