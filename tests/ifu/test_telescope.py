"""Tests of `Telescope`: presets, wavelength grids, apertures, validation and static-ness."""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgal.ifu._telescope import TELESCOPES, Telescope, get_telescope, telescope_presets

PRESET_SHAPES = {
    "MUSE": (25, 25, 3721),
    "MUSE_WFM": (300, 300, 3721),
    "MUSE_NFM": (300, 300, 3721),
    "MUSE_ultraWFM": (900, 900, 3721),
    "MaNGA_12": (24, 24, 6474),
    "MaNGA_17": (34, 34, 6474),
    "MaNGA_22": (44, 44, 6474),
    "MaNGA_27": (54, 54, 6474),
    "MaNGA_32": (64, 64, 6474),
    "MaNGA_LOG": (64, 64, 4563),
    "SAMI": (30, 30, 1924),
    "CALIFA": (74, 74, 389),
    "HECTOR": (300, 300, 1369),
    "TESTGRADIENT": (1, 1, 466),
}

# Spaxels inside the aperture, counted once with the point-in-polygon / brute-force checks below.
APERTURE_COUNTS = {
    "MaNGA_12": 488,
    "MaNGA_17": 976,
    "MaNGA_22": 1636,
    "MaNGA_27": 2464,
    "MaNGA_32": 3460,
    "MaNGA_LOG": 3460,
    "SAMI": 716,
    "CALIFA": 4632,
    "HECTOR": 76080,
}


def _linear(**kwargs):
    base = dict(
        name="test",
        n_x=10,
        n_y=6,
        pixel_arcsec=0.5,
        wave_start_aa=5000.0,
        n_wave=20,
        lsf_fwhm_aa=2.0,
        medium="air",
        dwave_aa=1.0,
    )
    return Telescope(**{**base, **kwargs})


def test_preset_names_and_shapes():
    assert telescope_presets() == sorted(TELESCOPES) == sorted(PRESET_SHAPES)
    for name, shape in PRESET_SHAPES.items():
        tel = TELESCOPES[name]
        assert tel.name == name
        assert tel.shape == shape
        assert tel.wavelength().shape == (shape[2],)
        assert tel.aperture_mask().shape == shape[:2]
        assert tel.psf == "none" and tel.psf_fwhm_arcsec == 0.0


@pytest.mark.parametrize("name", sorted(TELESCOPES))
def test_preset_contract(name):
    tel = TELESCOPES[name]
    wave, edges = tel.wavelength(), tel.wave_edges()
    assert wave.dtype == np.float64 and edges.shape == (tel.n_wave + 1,)
    assert np.all(np.diff(wave) > 0)
    assert np.all(edges[:-1] < wave) and np.all(wave < edges[1:])
    assert jax.tree.leaves(tel) == []
    assert hash(tel) == hash(dataclasses.replace(tel))
    assert tel == tel.replace()
    assert tel.aperture_mask().any()
    assert math.isclose(tel.fov_arcsec, tel.n_x * tel.pixel_arcsec)


def test_preset_numbers():
    muse = TELESCOPES["MUSE"]
    assert (muse.pixel_arcsec, muse.lsf_fwhm_aa, muse.medium, muse.aperture) == (
        0.2,
        2.51,
        "air",
        "square",
    )
    assert muse.fov_arcsec == pytest.approx(5.0)
    np.testing.assert_allclose(muse.wavelength()[[0, -1]], [4700.15, 9350.15], rtol=1e-14)
    manga = TELESCOPES["MaNGA_32"]
    assert (manga.medium, manga.aperture, manga.lsf_fwhm_aa) == ("vacuum", "hexagonal", 2.85)
    np.testing.assert_allclose(manga.wavelength()[[0, -1]], [3622.0, 10353.92], rtol=1e-14)
    log = TELESCOPES["MaNGA_LOG"]
    assert log.wave_sampling == "log" and log.dwave_aa is None and log.dlog10_wave == 1e-4
    np.testing.assert_allclose(log.wavelength()[0], 3621.596, atol=1e-3)
    np.testing.assert_allclose(log.wavelength()[-1], 10353.8, atol=0.01)
    np.testing.assert_allclose(TELESCOPES["SAMI"].wavelength()[-1], 5749.92, rtol=1e-14)
    np.testing.assert_allclose(TELESCOPES["CALIFA"].wavelength()[-1], 4747.6, rtol=1e-14)
    assert TELESCOPES["MUSE_NFM"].pixel_arcsec == 0.025
    assert TELESCOPES["MUSE_NFM"].fov_arcsec == pytest.approx(7.5)
    assert TELESCOPES["TESTGRADIENT"].fov_arcsec == 2.0


def test_wave_edges():
    tel = _linear(dwave_aa=2.0, n_wave=3)
    np.testing.assert_array_equal(tel.wavelength(), [5000.0, 5002.0, 5004.0])
    np.testing.assert_array_equal(tel.wave_edges(), [4999.0, 5001.0, 5003.0, 5005.0])
    log = _linear(dwave_aa=None, dlog10_wave=1e-3, n_wave=4)
    wave, edges = log.wavelength(), log.wave_edges()
    np.testing.assert_allclose(edges[1:-1], np.sqrt(wave[1:] * wave[:-1]), rtol=1e-14)
    np.testing.assert_allclose(np.diff(np.log10(edges)), 1e-3, rtol=1e-9)


def test_square_aperture():
    assert TELESCOPES["MUSE"].aperture_mask().all()


def _circle_count(n_x, n_y):
    """Brute force: spaxel centres (i + 1/2 - n/2) within min(n_x, n_y)/2 pixels."""
    radius = min(n_x, n_y) / 2
    return sum(
        (i + 0.5 - n_x / 2) ** 2 + (j + 0.5 - n_y / 2) ** 2 <= radius**2
        for i in range(n_x)
        for j in range(n_y)
    )


def test_circular_aperture_counts():
    sami = TELESCOPES["SAMI"].aperture_mask()
    assert sami.sum() == _circle_count(30, 30) == APERTURE_COUNTS["SAMI"]
    # Row-by-row count: for half-integer y, x = k + 1/2 with |x| <= sqrt(r^2 - y^2).
    half_widths = [math.sqrt(225 - (j + 0.5 - 15) ** 2) for j in range(30)]
    assert sum(2 * (math.floor(w - 0.5) + 1) for w in half_widths) == 716
    odd = TELESCOPES["MUSE"].replace(aperture="circular").aperture_mask()
    assert odd.sum() == _circle_count(25, 25) == 489
    # Non-square: the diameter is min(n_x, n_y) and the mask is indexed (x, y).
    rect = _linear(n_x=10, n_y=6, aperture="circular").aperture_mask()
    assert rect.shape == (10, 6)
    assert rect.sum() == _circle_count(10, 6)
    assert rect[4, 2] and rect[5, 3] and not rect[0, 3] and not rect[9, 2]
    np.testing.assert_array_equal(rect, rect[::-1, ::-1])


def test_hexagonal_aperture_counts():
    path_module = pytest.importorskip("matplotlib.path")
    for name in ("MaNGA_12", "MaNGA_17", "MaNGA_22", "MaNGA_27", "MaNGA_32", "CALIFA", "HECTOR"):
        tel = TELESCOPES[name]
        mask = tel.aperture_mask()
        assert mask.sum() == APERTURE_COUNTS[name], name
        # Independent check: point-in-polygon on the flat-top hexagon of flat-to-flat width D.
        d = tel.fov_arcsec
        apothem, corner = d / 2, d / math.sqrt(3)
        hexagon = path_module.Path(
            [
                (corner, 0.0),
                (corner / 2, apothem),
                (-corner / 2, apothem),
                (-corner, 0.0),
                (-corner / 2, -apothem),
                (corner / 2, -apothem),
                (corner, 0.0),
            ],
            closed=True,
        )
        x, y = tel.spaxel_centres_arcsec()
        xx, yy = np.meshgrid(x, y, indexing="ij")
        inside = hexagon.contains_points(np.stack([xx.ravel(), yy.ravel()], -1))
        np.testing.assert_array_equal(mask, inside.reshape(mask.shape), err_msg=name)
        # The corners (x = ±D/√3) reach past the square field, so the middle row is complete;
        # the field corners are outside.
        assert mask[:, tel.n_y // 2].all()
        assert not mask[0, 0] and not mask[-1, -1]
    # Orientation: flat top (a long top row), corners left and right (a short edge column).
    # MaNGA_32 in pixels: top row y = 31.5 needs √3|x| <= 32.5; edge column x = -31.5 needs
    # |y| <= 64 - √3 · 31.5.
    manga = TELESCOPES["MaNGA_32"].aperture_mask()
    assert manga[:, -1].sum() == 2 * math.floor(32.5 / math.sqrt(3) + 0.5) == 38
    assert manga[0, :].sum() == 2 * math.floor(64 - math.sqrt(3) * 31.5 + 0.5) == 18


def test_static_and_jittable():
    tel = TELESCOPES["MUSE"]
    scale = jax.jit(lambda x, t: x * t.n_x * t.pixel_arcsec, static_argnums=1)
    assert float(scale(jnp.asarray(2.0), tel)) == pytest.approx(10.0)

    @eqx.debug.assert_max_traces(max_traces=1)
    def traced(x, t):
        return x * t.n_wave

    f = eqx.filter_jit(traced)
    f(jnp.asarray(1.0), tel)
    f(jnp.asarray(2.0), tel.replace())  # equal telescope: no retrace
    assert {tel, tel.replace(), TELESCOPES["SAMI"]} == {tel, TELESCOPES["SAMI"]}


def test_replace_and_psf():
    tel = TELESCOPES["MUSE"].replace(psf="gaussian", psf_fwhm_arcsec=0.8)
    assert (tel.psf, tel.psf_fwhm_arcsec, tel.n_x) == ("gaussian", 0.8, 25)
    assert TELESCOPES["MUSE"].psf == "none"
    moffat = TELESCOPES["MUSE"].replace(psf="moffat", psf_fwhm_arcsec=0.6, psf_beta=3)
    assert moffat.psf_beta == 3.0 and isinstance(moffat.psf_beta, float)
    with pytest.raises(ValueError, match="unknown field"):
        TELESCOPES["MUSE"].replace(fov=3)


def test_from_fov():
    tel = Telescope.from_fov(
        "x",
        fov_arcsec=7.5,
        pixel_arcsec=0.025,
        wave_start_aa=5000.0,
        n_wave=5,
        lsf_fwhm_aa=2.0,
        medium="air",
        dwave_aa=1.0,
    )
    assert (tel.n_x, tel.n_y) == (300, 300)
    with pytest.raises(ValueError, match="whole number of pixels"):
        Telescope.from_fov(
            "x",
            fov_arcsec=5.0,
            pixel_arcsec=0.3,
            wave_start_aa=5000.0,
            n_wave=5,
            lsf_fwhm_aa=2.0,
            medium="air",
            dwave_aa=1.0,
        )


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (dict(n_x=0), "`n_x` must be a positive integer"),
        (dict(n_y=2.5), "`n_y` must be a positive integer"),
        (dict(n_wave=-3), "`n_wave` must be a positive integer"),
        (dict(pixel_arcsec=-0.2), "`pixel_arcsec` must be a finite positive"),
        (dict(wave_start_aa=float("nan")), "`wave_start_aa` must be a finite positive"),
        (dict(lsf_fwhm_aa=-1.0), "`lsf_fwhm_aa` must be a finite number >= 0"),
        (dict(medium="water"), "`medium` must be one of"),
        (dict(aperture="triangle"), "`aperture` must be one of"),
        (dict(dlog10_wave=1e-4), "exactly one of `dwave_aa`"),
        (dict(dwave_aa=None), "exactly one of `dwave_aa`"),
        (dict(dwave_aa=0.0), "`dwave_aa` must be a finite positive"),
        (dict(psf="airy"), "`psf` must be one of"),
        (dict(psf_fwhm_arcsec=0.8), "psf='none'"),
        (dict(psf="gaussian"), "needs `psf_fwhm_arcsec` > 0"),
        (dict(psf="moffat", psf_fwhm_arcsec=0.8, psf_beta=1.0), "`psf_beta` > 1"),
    ],
)
def test_validation_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        _linear(**changes)


def test_get_telescope():
    assert get_telescope("MUSE") is TELESCOPES["MUSE"]
    assert get_telescope("manga_log") is TELESCOPES["MaNGA_LOG"]
    custom = _linear()
    assert get_telescope(custom) is custom
    with pytest.raises(ValueError, match="unknown telescope 'KCWI'") as info:
        get_telescope("KCWI")
    for name in TELESCOPES:
        assert name in str(info.value)
    with pytest.raises(TypeError, match="preset name or a `Telescope`"):
        get_telescope(3)
