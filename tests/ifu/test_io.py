"""Tests of the FITS and HDF5 writers/readers of `IFUCube`, and of the quick-look plots."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgal.ifu._cube import IFUCube
from diffgal.ifu._io import read_fits, read_hdf5, write_fits, write_hdf5
from diffgal.ifu._telescope import TELESCOPES, Telescope

RA, DEC = 30.0, -20.0
UNIT = "10**(-20)*erg/s/cm**2/Angstrom"


def _make_cube(telescope: Telescope, *, seed=0, variance=True, n_wave=None, wave_dtype=None):
    """A hand-built cube on the telescope's grids: random flux inside the aperture, 0 outside."""
    rng = np.random.default_rng(seed)
    n_x, n_y = telescope.n_x, telescope.n_y
    wave = telescope.wavelength()[: n_wave or telescope.n_wave]
    if wave_dtype is not None:
        wave = wave.astype(wave_dtype)
    mask = telescope.aperture_mask()
    flux = rng.normal(1.0, 0.5, (n_x, n_y, wave.size)) * mask[:, :, None]
    velocity = rng.normal(0.0, 150.0, (n_x, n_y))
    velocity[0, 0] = np.nan  # a spaxel without light
    meta = (
        ("telescope", telescope.name),
        ("ra_deg", RA),
        ("dec_deg", DEC),
        ("z", 0.05),
        ("distance_mpc", 231.7),
        ("template_licence", "MILES: non-commercial use"),
        ("angles_deg", (30.0, 45.0, 0.0)),
        ("seed", 42),
        ("noise", None),
        ("wave_sampling", telescope.wave_sampling),
        ("dwave_aa", telescope.dwave_aa),
        ("dlog10_wave", telescope.dlog10_wave),
    )
    return IFUCube(
        flux=jnp.asarray(flux),
        wavelength=jnp.asarray(wave),
        variance=(
            jnp.asarray(rng.uniform(0.1, 1.0, flux.shape) * mask[:, :, None]) if variance else None
        ),
        mask=jnp.asarray(mask),
        mass_map=jnp.asarray(rng.uniform(0.0, 1e8, (n_x, n_y))),
        velocity_map=jnp.asarray(velocity),
        dispersion_map=jnp.asarray(rng.uniform(20.0, 200.0, (n_x, n_y))),
        n_clamped=jnp.asarray(3),
        clipped_velocity_mass=jnp.asarray(2.5e6),
        n_outside_fov=jnp.asarray(17),
        unit=UNIT,
        medium=telescope.medium,
        pixel_arcsec=telescope.pixel_arcsec,
        pixel_kpc=0.2248,
        meta=meta,
    )


# Non-square grids catch swapped axes: 7 spaxels along x, 5 along y.
LINEAR = Telescope(
    name="linear_7x5",
    n_x=7,
    n_y=5,
    pixel_arcsec=0.5,
    wave_start_aa=4700.15,
    n_wave=40,
    lsf_fwhm_aa=2.51,
    medium="air",
    aperture="circular",
    dwave_aa=1.25,
)
LOG = TELESCOPES["MaNGA_LOG"].replace(n_x=6, n_y=4)  # full 4563-pixel log grid, vacuum


def _expected_tan(x_deg, y_deg):
    """Exact gnomonic (TAN) deprojection about (RA, DEC) of intermediate coordinates in deg."""
    xi, eta = np.radians(x_deg), np.radians(y_deg)
    dec0 = math.radians(DEC)
    denom = math.cos(dec0) - eta * math.sin(dec0)
    ra = RA + np.degrees(np.arctan2(xi, denom))
    dec = np.degrees(np.arctan2(math.sin(dec0) + eta * math.cos(dec0), np.hypot(xi, denom)))
    return ra, dec


@pytest.mark.parametrize("telescope", [LINEAR, LOG], ids=["linear", "log"])
def test_fits_round_trip(tmp_path, telescope):
    fits = pytest.importorskip("astropy.io.fits")
    cube = _make_cube(telescope)
    path = tmp_path / "cube.fits"
    write_fits(cube, path)
    back = read_fits(path)

    f32 = lambda x: np.asarray(x).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(back.flux), f32(cube.flux))
    assert back.flux.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(back.variance), f32(cube.variance))
    np.testing.assert_array_equal(np.asarray(back.mask), np.asarray(cube.mask))
    for field in ("mass_map", "velocity_map", "dispersion_map"):
        np.testing.assert_array_equal(np.asarray(getattr(back, field)), f32(getattr(cube, field)))
    np.testing.assert_allclose(np.asarray(back.wavelength), np.asarray(cube.wavelength), rtol=1e-9)
    assert int(back.n_clamped) == 3 and int(back.n_outside_fov) == 17
    assert float(back.clipped_velocity_mass) == 2.5e6
    assert (back.unit, back.medium, back.pixel_arcsec, back.pixel_kpc) == (
        UNIT,
        telescope.medium,
        telescope.pixel_arcsec,
        0.2248,
    )
    assert back.meta == cube.meta
    hash(back.meta)

    n_x, n_y, n_wave = cube.shape
    with fits.open(path) as hdul:
        names = [hdu.name for hdu in hdul]
        assert names == [
            "PRIMARY",
            "DATA",
            "STAT",
            "MASK",
            "TRUTH_MASS",
            "TRUTH_V",
            "TRUTH_SIGMA",
        ]
        data = hdul["DATA"].data
        assert data.shape == (n_wave, n_y, n_x) and data.dtype.kind == "f"
        assert data.dtype.itemsize == 4
        mask = np.asarray(cube.mask)
        assert np.all(np.isnan(data[:, ~mask.T])) and np.all(np.isfinite(data[:, mask.T]))
        i, j = n_x // 2, n_y // 2 + 1  # an inside spaxel off the diagonal
        assert mask[i, j]
        np.testing.assert_array_equal(data[:, j, i], f32(cube.flux)[i, j])
        assert hdul["MASK"].data.dtype == np.uint8 and hdul["MASK"].data.shape == (n_y, n_x)
        assert hdul["TRUTH_V"].data.shape == (n_y, n_x)
        header = hdul["DATA"].header
        assert header["BUNIT"] == UNIT
        assert header["CDELT1"] == pytest.approx(-telescope.pixel_arcsec / 3600, rel=1e-15)
        assert header["CDELT2"] == pytest.approx(telescope.pixel_arcsec / 3600, rel=1e-15)
        ctype = {"air": "AWAV", "vacuum": "WAVE"}[telescope.medium]
        ctype += "-LOG" if telescope.wave_sampling == "log" else ""
        assert header["CTYPE3"] == ctype and header["CUNIT3"] == "Angstrom"
        primary = hdul[0].header
        assert primary["HIERARCH DIFFGAL telescope"] == telescope.name
        assert primary["HIERARCH DIFFGAL z"] == 0.05
        assert primary["HIERARCH DIFFGAL N_CLAMPED"] == 3

        wcs = pytest.importorskip("astropy.wcs").WCS(header)
        corners = np.array([[0, 0, 0], [n_x - 1, n_y - 1, n_wave - 1]], dtype=float)
        world = wcs.wcs_pix2world(corners, 0)

    # Spaxel (i, j) centre: x_i = (i + 1/2 - n_x/2) p, with RA increasing to the left.
    p_deg = telescope.pixel_arcsec / 3600
    x = -(corners[:, 0] + 0.5 - n_x / 2) * p_deg
    y = (corners[:, 1] + 0.5 - n_y / 2) * p_deg
    ra, dec = _expected_tan(x, y)
    np.testing.assert_allclose(world[:, 0], ra, rtol=0, atol=1e-10)
    np.testing.assert_allclose(world[:, 1], dec, rtol=0, atol=1e-10)
    # Small-angle check: ΔRA = x / cos(Dec), ΔDec = y.
    np.testing.assert_allclose(world[:, 0], RA + x / math.cos(math.radians(DEC)), atol=1e-8)
    np.testing.assert_allclose(world[:, 1], DEC + y, atol=1e-8)
    # astropy.wcs works in SI: metres.
    wave = np.asarray(cube.wavelength)
    np.testing.assert_allclose(world[:, 2] * 1e10, wave[[0, -1]], rtol=1e-9)
    if telescope.wave_sampling == "log":
        assert world[1, 2] * 1e10 == pytest.approx(10353.8, abs=0.01)


def test_fits_without_variance_and_float32_wavelengths(tmp_path):
    fits = pytest.importorskip("astropy.io.fits")
    cube = _make_cube(LINEAR, variance=False, wave_dtype=np.float32)
    write_fits(cube, tmp_path / "a.fits")
    write_fits(cube, tmp_path / "a.fits")  # overwrite=True by default
    back = read_fits(tmp_path / "a.fits")
    assert back.variance is None
    # float32 wavelengths are not an exact linear WCS grid, so a WAVE HDU keeps them exactly.
    assert back.wavelength.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(back.wavelength), np.asarray(cube.wavelength))
    with fits.open(tmp_path / "a.fits") as hdul:
        assert "STAT" not in hdul and "WAVE" in hdul
    with pytest.raises(OSError):
        write_fits(cube, tmp_path / "a.fits", overwrite=False)


def test_fits_irregular_wavelengths(tmp_path):
    pytest.importorskip("astropy")
    cube = _make_cube(LINEAR)
    wave = np.asarray(cube.wavelength) + np.linspace(0.0, 0.3, cube.shape[2]) ** 2
    cube = dataclasses.replace(cube, wavelength=jnp.asarray(wave))
    write_fits(cube, tmp_path / "b.fits")
    np.testing.assert_array_equal(np.asarray(read_fits(tmp_path / "b.fits").wavelength), wave)


def test_read_foreign_fits(tmp_path):
    fits = pytest.importorskip("astropy.io.fits")
    # A MUSE-like product: CD matrix, AWAV, NaN spaxels, no MASK or truth extensions.
    data = np.ones((5, 3, 4), np.float32)
    data[:, 0, 0] = np.nan
    header = fits.Header()
    for key, value in dict(
        CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CTYPE3="AWAV", CUNIT3="Angstrom",
        CRPIX1=2.5, CRPIX2=2.0, CRPIX3=1.0, CRVAL1=10.0, CRVAL2=-5.0, CRVAL3=4750.0,
        CD1_1=-0.2 / 3600, CD2_2=0.2 / 3600, CD3_3=1.25, BUNIT=UNIT,
    ).items():  # fmt: skip
        header[key] = value
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header, name="DATA")]).writeto(
        tmp_path / "muse.fits"
    )
    cube = read_fits(tmp_path / "muse.fits")
    assert cube.shape == (4, 3, 5) and cube.medium == "air" and cube.unit == UNIT
    assert cube.pixel_arcsec == pytest.approx(0.2)
    np.testing.assert_allclose(np.asarray(cube.wavelength), 4750.0 + 1.25 * np.arange(5))
    assert not bool(cube.mask[0, 0]) and int(cube.mask.sum()) == 11
    assert float(cube.flux[0, 0, 0]) == 0.0 and np.all(np.isnan(np.asarray(cube.mass_map)))

    fits.HDUList([fits.PrimaryHDU()]).writeto(tmp_path / "empty.fits")
    with pytest.raises(ValueError, match="no 'DATA' extension"):
        read_fits(tmp_path / "empty.fits")


@pytest.mark.parametrize("variance", [True, False])
def test_hdf5_round_trip_exact(tmp_path, variance):
    h5py = pytest.importorskip("h5py")
    cube = _make_cube(LINEAR, variance=variance)
    path = tmp_path / "cube.h5"
    write_hdf5(cube, path)
    back = read_hdf5(path)
    same = jax.tree.map(
        lambda a, b: a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), back, cube
    )
    assert jax.tree.all(same)
    assert jax.tree.structure(back) == jax.tree.structure(cube)  # static fields and meta too
    assert back.meta == cube.meta
    assert (back.variance is None) == (not variance)
    with h5py.File(path) as f:
        n_x, n_y, n_wave = cube.shape
        assert f["cube/data"].shape == (n_y, n_x, n_wave)
        np.testing.assert_array_equal(f["cube/data"][2, 5], np.asarray(cube.flux)[5, 2])
        assert f["cube/mask"].shape == (n_y, n_x) and f["truth/velocity"].shape == (n_y, n_x)
        assert f["cube"].attrs["unit"] == UNIT and f["meta"].attrs["z"] == 0.05
    with pytest.raises(FileExistsError, match="overwrite=False"):
        write_hdf5(cube, path, overwrite=False)


def test_cube_methods_and_hdf5_errors(tmp_path):
    cube = _make_cube(LINEAR)
    cube.to_hdf5(tmp_path / "m.h5")
    assert read_hdf5(tmp_path / "m.h5").shape == cube.shape
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match="no '/cube/data'"):
        read_hdf5(tmp_path / "other.h5")
    with pytest.raises(TypeError, match="expected an `IFUCube`"):
        write_hdf5(np.zeros(3), tmp_path / "bad.h5")


def test_cube_to_fits(tmp_path):
    pytest.importorskip("astropy")
    cube = _make_cube(LINEAR)
    cube.to_fits(tmp_path / "m.fits")
    assert read_fits(tmp_path / "m.fits").shape == cube.shape


def test_quicklook_png(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffgal.ifu._plot import (
        plot_dispersion_map,
        plot_spectra,
        plot_velocity_map,
        plot_white_light,
        quicklook,
    )

    cube = _make_cube(LINEAR)
    fig = quicklook(cube, path=tmp_path / "quick.png", spaxels=[(3, 2), (1, 2)])
    try:
        assert (tmp_path / "quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(fig.axes) == 7  # 4 panels + 3 colour bars
    finally:
        plt.close(fig)
    fig, axes = plt.subplots(2, 2)
    try:
        image = plot_white_light(cube, ax=axes[0, 0]).images[0]
        # The (n_y, n_x) transpose, origin lower, x to the right, in arcsec offsets.
        assert image.get_array().shape == (LINEAR.n_y, LINEAR.n_x)
        assert image.origin == "lower"
        assert list(image.get_extent()) == pytest.approx([-1.75, 1.75, -1.25, 1.25])
        vmin, vmax = plot_velocity_map(cube, ax=axes[0, 1]).images[0].get_clim()
        assert vmax > 0 and vmin == -vmax
        plot_dispersion_map(cube, ax=axes[1, 0])
        assert len(plot_spectra(cube, ax=axes[1, 1]).lines) == 2
        with pytest.raises(ValueError, match="outside the cube"):
            plot_spectra(cube, spaxels=[(7, 0)], ax=axes[1, 1])
    finally:
        plt.close(fig)
