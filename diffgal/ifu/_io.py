"""Write and read `IFUCube`s as MUSE-like FITS files and as HDF5 files.

**FITS** (needs astropy). HDUs, in order:

- primary: no data. Provenance cards `HIERARCH DIFFGAL <key>` from `cube.meta` (non-scalar values
  as JSON in COMMENT cards), and `DGCUBE`, a JSON record of the cube's scalars and the full
  `meta`, for exact read-back.
- `DATA` (n_wave, n_y, n_x) float32: flux, the transpose of `cube.flux`; NaN outside the aperture.
- `STAT` (n_wave, n_y, n_x) float32: variance, only when `cube.variance` is not `None`; NaN
  outside the aperture.
- `MASK` (n_y, n_x) uint8: 1 inside the aperture, 0 outside.
- `TRUTH_MASS`, `TRUTH_V`, `TRUTH_SIGMA` (n_y, n_x) float32: mass [M_sun], light-weighted v_los
  and σ [km/s].
- `WAVE` (n_wave,), in the cube's dtype: only when the spectral WCS cannot reproduce the
  wavelengths to 1e-10 relative (an irregular grid, or float32 wavelengths).

WCS: RA---TAN / DEC--TAN with CRPIX at the cube centre, CRVAL from `meta` `ra_deg`/`dec_deg`
(default 150.0, 2.0), CDELT1 = -p/3600 and CDELT2 = +p/3600 deg (east to the left). The spectral
axis is AWAV (air) or WAVE (vacuum) in Angstrom with CRPIX3 = 1 and CRVAL3 = the first pixel
centre: CDELT3 = Δλ for linear grids; for log grids (`meta` `wave_sampling` = "log", or an inferred
constant step in log λ) CTYPE3 is AWAV-LOG / WAVE-LOG with CDELT3 = λ_0 ln(10) Δlog10λ, so that
λ(p) = CRVAL3 exp(CDELT3 (p - 1) / CRVAL3) = λ_0 10^(Δlog10λ (p - 1)) (FITS paper III).

FITS stores float32, so flux, variance and maps round-trip to float32 (`x.astype(np.float32)`);
outside the aperture the flux and variance read back as 0.

**HDF5** (h5py). `/cube/data` and `/cube/variance` are (n_y, n_x, n_wave) -- the spec's on-disk
order, i.e. `cube.flux.transpose(1, 0, 2)` -- plus `/cube/wave` (n_wave,), `/cube/mask` (n_y, n_x)
bool, `/truth/mass`, `/truth/velocity`, `/truth/dispersion` (n_y, n_x). Attributes of `/cube`:
`unit`, `medium`, `pixel_arcsec`, `pixel_kpc`, `axes`; of `/`: `format`, `diffgal_version`,
`n_clamped`, `clipped_velocity_mass`, `n_outside_fov`, `meta` (JSON); `/meta` holds every
scalar `meta` entry as an attribute. Every array keeps its dtype, so the round trip is exact.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from ._cube import IFUCube

__all__ = ["read_fits", "read_hdf5", "write_fits", "write_hdf5"]

_FORMAT = "diffgal.ifu.IFUCube"
_DEFAULT_RA_DEG = 150.0
_DEFAULT_DEC_DEG = 2.0
_WCS_EXACT_RTOL = 1e-10
_SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")
_TRUTH_HDUS = (
    ("TRUTH_MASS", "mass_map", "solMass", "initial stellar mass per spaxel"),
    ("TRUTH_V", "velocity_map", "km/s", "light-weighted line-of-sight velocity"),
    ("TRUTH_SIGMA", "dispersion_map", "km/s", "light-weighted line-of-sight dispersion"),
)
_H5_TRUTH = (("mass", "mass_map"), ("velocity", "velocity_map"), ("dispersion", "dispersion_map"))


def _version() -> str:
    try:
        return importlib.metadata.version("diffgal")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
        return "unknown"


def _astropy_fits():
    try:
        from astropy.io import fits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "`diffgal.ifu` FITS input/output needs astropy, which is not installed. Install it "
            "with `pip install astropy` (or use the HDF5 writer, `write_hdf5`)."
        ) from error
    return fits


def _meta_pairs(meta) -> list[tuple[str, object]]:
    items = meta.items() if isinstance(meta, dict) else meta
    return [(str(key), value) for key, value in items]


def _jsonable(value):
    """A JSON-encodable copy of a meta value (tuples become lists; unknown objects their repr)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | jax.Array):
        return _jsonable(np.asarray(value).tolist())
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def _hashable(value):
    """Undo JSON's list-for-tuple: lists become tuples, recursively (meta must be hashable)."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return {k: _hashable(v) for k, v in value.items()}
    return value


def _meta_to_json(meta) -> str:
    return json.dumps([[key, _jsonable(value)] for key, value in _meta_pairs(meta)])


def _meta_from_json(text: str) -> tuple:
    return tuple((key, _hashable(value)) for key, value in json.loads(text))


def _scalar_for_header(value):
    """The value as a FITS header scalar, or None when it cannot be one."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str) and value.isascii() and value.isprintable():
        return value
    return None


def _as_numpy(name: str, x, ndim: int) -> np.ndarray:
    array = np.asarray(x)
    if array.ndim != ndim:
        raise ValueError(
            f"`write_fits`/`write_hdf5`: `cube.{name}` must have {ndim} dimensions; got shape "
            f"{array.shape}. Pass an `IFUCube` with flux (n_x, n_y, n_wave) and maps (n_x, n_y)."
        )
    return array


def _check_cube(cube) -> None:
    if not isinstance(cube, IFUCube):
        raise TypeError(
            f"`write_fits`/`write_hdf5`: expected an `IFUCube`; got {type(cube).__name__}."
        )
    n_x, n_y, n_wave = np.shape(cube.flux)
    if np.shape(cube.wavelength) != (n_wave,):
        raise ValueError(
            f"`write_fits`/`write_hdf5`: `cube.wavelength` must have shape (n_wave,) = "
            f"({n_wave},) to match `cube.flux` {np.shape(cube.flux)}; got "
            f"{np.shape(cube.wavelength)}."
        )
    for name in ("mask", "mass_map", "velocity_map", "dispersion_map"):
        if np.shape(getattr(cube, name)) != (n_x, n_y):
            raise ValueError(
                f"`write_fits`/`write_hdf5`: `cube.{name}` must have shape (n_x, n_y) = "
                f"({n_x}, {n_y}); got {np.shape(getattr(cube, name))}."
            )
    if cube.variance is not None and np.shape(cube.variance) != (n_x, n_y, n_wave):
        raise ValueError(
            f"`write_fits`/`write_hdf5`: `cube.variance` must have the flux shape "
            f"{(n_x, n_y, n_wave)}; got {np.shape(cube.variance)}."
        )


# --------------------------------------------------------------------------------------------
# WCS


def _spectral_wcs(wave: np.ndarray, medium: str, meta: dict) -> tuple[dict, bool]:
    """Spectral WCS cards for the wavelength grid, and whether a `WAVE` HDU is needed."""
    wave64 = wave.astype(np.float64)
    n = wave64.size
    lam0 = float(wave64[0])
    base = "AWAV" if medium == "air" else "WAVE"
    k = np.arange(n, dtype=np.float64)

    def linear():
        if n > 1:
            step = (wave64[-1] - lam0) / (n - 1)
        else:
            step = float(meta.get("dwave_aa") or 1.0)
        return float(step), lam0 + step * k

    def logarithmic():
        if meta.get("dlog10_wave") is not None:
            dlog10 = float(meta["dlog10_wave"])
        elif n > 1:
            dlog10 = float(np.log10(wave64[-1] / lam0) / (n - 1))
        else:
            dlog10 = 1e-4
        cdelt = lam0 * math.log(10.0) * dlog10
        return cdelt, lam0 * np.exp(cdelt * k / lam0)

    def error(model):
        return float(np.max(np.abs(model / wave64 - 1.0))) if n else 0.0

    sampling = meta.get("wave_sampling")
    if sampling == "log":
        ctype, (cdelt, model) = f"{base}-LOG", logarithmic()
    elif sampling == "linear":
        ctype, (cdelt, model) = base, linear()
    else:
        ctype, (cdelt, model) = base, linear()
        if n > 2 and error(model) > _WCS_EXACT_RTOL and np.all(wave64 > 0):
            log_cdelt, log_model = logarithmic()
            if error(log_model) < error(model):
                ctype, cdelt, model = f"{base}-LOG", log_cdelt, log_model
    cards = {
        "CTYPE3": (ctype, "air wavelength" if medium == "air" else "vacuum wavelength"),
        "CUNIT3": ("Angstrom", "wavelength unit"),
        "CRPIX3": (1.0, "reference pixel: the first wavelength pixel"),
        "CRVAL3": (lam0, "[Angstrom] centre of the first pixel"),
        "CDELT3": (cdelt, "[Angstrom] CRVAL3 ln(10) dlog10" if "LOG" in ctype else "[Angstrom]"),
    }
    needs_wave_hdu = bool(n) and (error(model) > _WCS_EXACT_RTOL or wave.dtype != np.float64)
    return cards, needs_wave_hdu


def _celestial_wcs(n_x: int, n_y: int, pixel_arcsec: float, meta: dict) -> dict:
    ra = float(meta.get("ra_deg", _DEFAULT_RA_DEG))
    dec = float(meta.get("dec_deg", _DEFAULT_DEC_DEG))
    return {
        "CTYPE1": ("RA---TAN", "gnomonic projection"),
        "CTYPE2": ("DEC--TAN", "gnomonic projection"),
        "CUNIT1": ("deg", ""),
        "CUNIT2": ("deg", ""),
        "CRPIX1": ((n_x + 1) / 2.0, "cube centre (x)"),
        "CRPIX2": ((n_y + 1) / 2.0, "cube centre (y)"),
        "CRVAL1": (ra, "[deg] RA of the cube centre"),
        "CRVAL2": (dec, "[deg] Dec of the cube centre"),
        "CDELT1": (-pixel_arcsec / 3600.0, "[deg] east to the left"),
        "CDELT2": (pixel_arcsec / 3600.0, "[deg]"),
        "RADESYS": ("ICRS", ""),
    }


def _wave_from_header(header, n_wave: int) -> np.ndarray:
    crval = float(header["CRVAL3"])
    crpix = float(header.get("CRPIX3", 1.0))
    cdelt = float(header["CDELT3"] if "CDELT3" in header else header["CD3_3"])
    p = np.arange(1, n_wave + 1, dtype=np.float64) - crpix
    if str(header.get("CTYPE3", "")).upper().endswith("-LOG"):
        return crval * np.exp(cdelt * p / crval)
    return crval + cdelt * p


# --------------------------------------------------------------------------------------------
# FITS


def write_fits(cube: IFUCube, path: str | os.PathLike, *, overwrite: bool = True) -> None:
    """Write an `IFUCube` as a MUSE-like FITS file (needs astropy).

    The layout (HDUs, WCS, dtypes) is described in the module docstring and in the docs page
    "Output files". Flux, variance and maps are stored as float32; flux and variance are NaN
    outside the aperture.

    **Arguments:**

    - `cube`: the `IFUCube` to write.
    - `path`: the output file name.
    - `overwrite`: replace an existing file (default `True`).

    **Returns:**

    Nothing.
    """
    fits = _astropy_fits()
    _check_cube(cube)
    meta = dict(_meta_pairs(cube.meta))
    flux = _as_numpy("flux", cube.flux, 3)
    n_x, n_y, n_wave = flux.shape
    mask = _as_numpy("mask", cube.mask, 2).astype(bool)
    wave = np.asarray(cube.wavelength)
    outside = ~mask.T[None, :, :]  # (1, n_y, n_x)

    celestial = _celestial_wcs(n_x, n_y, float(cube.pixel_arcsec), meta)
    spectral, needs_wave_hdu = _spectral_wcs(wave, cube.medium, meta)

    primary = fits.PrimaryHDU()
    header = primary.header
    header["ORIGIN"] = ("diffgal", "diffgal IFU renderer")
    header["DATE"] = (
        datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "file creation date (UTC)",
    )
    header["HIERARCH DIFFGAL VERSION"] = _version()
    header["HIERARCH DIFFGAL N_CLAMPED"] = int(np.asarray(cube.n_clamped))
    header["HIERARCH DIFFGAL CLIPPED_VELOCITY_MASS"] = float(np.asarray(cube.clipped_velocity_mass))
    header["HIERARCH DIFFGAL N_OUTSIDE_FOV"] = int(np.asarray(cube.n_outside_fov))
    header["HIERARCH DIFFGAL PIXEL_KPC"] = float(cube.pixel_kpc)
    for key, value in _meta_pairs(cube.meta):
        scalar = _scalar_for_header(value)
        if scalar is not None and _SIMPLE_KEY.match(key) and len(key) <= 40:
            header[f"HIERARCH DIFFGAL {key}"] = scalar
        else:
            header.add_comment(f"meta {key} = {json.dumps(_jsonable(value))}")
    record = {
        "format": _FORMAT,
        "unit": cube.unit,
        "medium": cube.medium,
        "pixel_arcsec": float(cube.pixel_arcsec),
        "pixel_kpc": float(cube.pixel_kpc),
        "n_clamped": int(np.asarray(cube.n_clamped)),
        "n_clamped_dtype": str(np.asarray(cube.n_clamped).dtype),
        "clipped_velocity_mass": float(np.asarray(cube.clipped_velocity_mass)),
        "clipped_velocity_mass_dtype": str(np.asarray(cube.clipped_velocity_mass).dtype),
        "n_outside_fov": int(np.asarray(cube.n_outside_fov)),
        "n_outside_fov_dtype": str(np.asarray(cube.n_outside_fov).dtype),
        "meta": json.loads(_meta_to_json(cube.meta)),
    }
    header["DGCUBE"] = (json.dumps(record), "diffgal IFUCube record (JSON)")

    def image(name, data, cards, bunit, comment):
        hdu = fits.ImageHDU(data=np.ascontiguousarray(data), name=name)
        for key, card in cards.items():
            hdu.header[key] = card
        if bunit is not None:
            hdu.header["BUNIT"] = bunit
        hdu.header.add_comment(comment)
        return hdu

    cube_wcs = {**celestial, **spectral}
    data = np.where(outside, np.nan, np.transpose(flux, (2, 1, 0))).astype(np.float32)
    hdus = [primary, image("DATA", data, cube_wcs, cube.unit, "flux; NaN outside the aperture")]
    if cube.variance is not None:
        variance = _as_numpy("variance", cube.variance, 3)
        stat = np.where(outside, np.nan, np.transpose(variance, (2, 1, 0))).astype(np.float32)
        hdus.append(image("STAT", stat, cube_wcs, f"({cube.unit})**2", "variance of DATA"))
    hdus.append(
        image("MASK", mask.T.astype(np.uint8), celestial, None, "1 inside the aperture, 0 outside")
    )
    for name, field, bunit, comment in _TRUTH_HDUS:
        values = _as_numpy(field, getattr(cube, field), 2).T.astype(np.float32)
        hdus.append(image(name, values, celestial, bunit, comment))
    if needs_wave_hdu:
        hdus.append(image("WAVE", wave, {}, "Angstrom", f"exact {cube.medium} wavelengths of DATA"))
    fits.HDUList(hdus).writeto(os.fspath(path), overwrite=overwrite)


def read_fits(path: str | os.PathLike) -> IFUCube:
    """Read a FITS cube written by `write_fits` (or a MUSE-like cube) into an `IFUCube`.

    Arrays come back as float32 (flux, variance, maps) with 0 instead of NaN outside the
    aperture. The wavelengths come from the `WAVE` HDU when present, else from the spectral WCS
    (float64). For files not written by diffgal, missing parts get defaults: the mask is
    "any finite pixel in the spectrum", truth maps are NaN, counters are 0, `pixel_kpc` is NaN
    and the medium follows CTYPE3 (AWAV -> air).

    **Arguments:**

    - `path`: the FITS file.

    **Returns:**

    The `IFUCube`.
    """
    fits = _astropy_fits()
    with fits.open(os.fspath(path), memmap=False) as hdul:
        names = {hdu.name for hdu in hdul}
        if "DATA" not in names:
            raise ValueError(
                f"`read_fits`: {os.fspath(path)!r} has no 'DATA' extension; got HDUs "
                f"{[hdu.name for hdu in hdul]}. Pass a cube written by `write_fits` or a "
                f"MUSE-like cube."
            )
        data_hdu = hdul["DATA"]
        data = np.asarray(data_hdu.data, dtype=np.float32)
        if data.ndim != 3:
            raise ValueError(
                f"`read_fits`: the DATA extension of {os.fspath(path)!r} must be 3-D "
                f"(n_wave, n_y, n_x); got shape {data.shape}."
            )
        n_wave, n_y, n_x = data.shape
        header = data_hdu.header
        record = json.loads(hdul[0].header["DGCUBE"]) if "DGCUBE" in hdul[0].header else {}

        if "MASK" in names:
            mask = np.asarray(hdul["MASK"].data).T != 0
        else:
            mask = np.any(np.isfinite(data), axis=0).T
        flux = np.where(mask[:, :, None], np.transpose(data, (2, 1, 0)), np.float32(0.0))
        variance = None
        if "STAT" in names:
            stat = np.transpose(np.asarray(hdul["STAT"].data, dtype=np.float32), (2, 1, 0))
            variance = np.where(mask[:, :, None], stat, np.float32(0.0))

        if "WAVE" in names:
            raw = np.asarray(hdul["WAVE"].data)
            wave = raw.astype(raw.dtype.newbyteorder("="))
        else:
            wave = _wave_from_header(header, n_wave)

        maps = {}
        for name, field, _, _ in _TRUTH_HDUS:
            if name in names:
                maps[field] = np.asarray(hdul[name].data, dtype=np.float32).T
            else:
                maps[field] = np.full((n_x, n_y), np.nan, np.float32)

        ctype3 = str(header.get("CTYPE3", "AWAV")).upper()
        if "pixel_arcsec" in record:
            pixel_arcsec = float(record["pixel_arcsec"])
        else:
            cdelt2 = header["CDELT2"] if "CDELT2" in header else header.get("CD2_2", np.nan)
            pixel_arcsec = abs(float(cdelt2)) * 3600.0
        unit = record.get("unit", str(header.get("BUNIT", "")))

    def scalar(key, default, dtype):
        return jnp.asarray(np.asarray(record.get(key, default), record.get(f"{key}_dtype", dtype)))

    return IFUCube(
        flux=jnp.asarray(flux),
        wavelength=jnp.asarray(wave),
        variance=None if variance is None else jnp.asarray(variance),
        mask=jnp.asarray(mask),
        mass_map=jnp.asarray(maps["mass_map"]),
        velocity_map=jnp.asarray(maps["velocity_map"]),
        dispersion_map=jnp.asarray(maps["dispersion_map"]),
        n_clamped=scalar("n_clamped", 0, "int32"),
        clipped_velocity_mass=scalar("clipped_velocity_mass", 0.0, "float32"),
        n_outside_fov=scalar("n_outside_fov", 0, "int32"),
        unit=unit,
        medium=record.get("medium", "air" if ctype3.startswith("AWAV") else "vacuum"),
        pixel_arcsec=pixel_arcsec,
        pixel_kpc=float(record.get("pixel_kpc", math.nan)),
        meta=_meta_from_json(json.dumps(record.get("meta", []))),
    )


# --------------------------------------------------------------------------------------------
# HDF5


def write_hdf5(cube: IFUCube, path: str | os.PathLike, *, overwrite: bool = True) -> None:
    """Write an `IFUCube` to HDF5, keeping every dtype (an exact round trip).

    `/cube/data` and `/cube/variance` are stored as (n_y, n_x, n_wave), the transpose of the
    in-memory (n_x, n_y, n_wave) over the two spatial axes; maps and the mask as (n_y, n_x).
    The full layout is in the module docstring and the docs page "Output files".

    **Arguments:**

    - `cube`: the `IFUCube` to write.
    - `path`: the output file name.
    - `overwrite`: replace an existing file (default `True`); otherwise an existing file
        raises `FileExistsError`.

    **Returns:**

    Nothing.
    """
    import h5py

    _check_cube(cube)
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(
            f"`write_hdf5`: {path!r} exists and overwrite=False. Remove it or pass overwrite=True."
        )
    with h5py.File(path, "w") as f:
        f.attrs["format"] = _FORMAT
        f.attrs["diffgal_version"] = _version()
        f.attrs["n_clamped"] = np.asarray(cube.n_clamped)
        f.attrs["clipped_velocity_mass"] = np.asarray(cube.clipped_velocity_mass)
        f.attrs["n_outside_fov"] = np.asarray(cube.n_outside_fov)
        f.attrs["meta"] = _meta_to_json(cube.meta)
        group = f.create_group("cube")
        group.attrs["unit"] = cube.unit
        group.attrs["medium"] = cube.medium
        group.attrs["pixel_arcsec"] = float(cube.pixel_arcsec)
        group.attrs["pixel_kpc"] = float(cube.pixel_kpc)
        group.attrs["axes"] = "data, variance: (n_y, n_x, n_wave); mask: (n_y, n_x)"
        group.create_dataset("data", data=np.transpose(np.asarray(cube.flux), (1, 0, 2)))
        if cube.variance is not None:
            group.create_dataset(
                "variance", data=np.transpose(np.asarray(cube.variance), (1, 0, 2))
            )
        group.create_dataset("wave", data=np.asarray(cube.wavelength))
        group.create_dataset("mask", data=np.asarray(cube.mask).T)
        truth = f.create_group("truth")
        for name, field in _H5_TRUTH:
            truth.create_dataset(name, data=np.asarray(getattr(cube, field)).T)
        meta_group = f.create_group("meta")
        for key, value in _meta_pairs(cube.meta):
            scalar = _scalar_for_header(value)
            if scalar is not None:
                meta_group.attrs[key] = scalar


def read_hdf5(path: str | os.PathLike) -> IFUCube:
    """Read an HDF5 file written by `write_hdf5` back into an `IFUCube` (exact round trip).

    **Arguments:**

    - `path`: the HDF5 file.

    **Returns:**

    The `IFUCube`, with every array in its stored dtype.
    """
    import h5py

    path = os.fspath(path)
    with h5py.File(path, "r") as f:
        if "cube/data" not in f:
            raise ValueError(
                f"`read_hdf5`: {path!r} has no '/cube/data' dataset; got top-level keys "
                f"{sorted(f.keys())}. Pass a file written by `write_hdf5`."
            )
        group = f["cube"]
        flux = np.transpose(group["data"][()], (1, 0, 2))
        variance = np.transpose(group["variance"][()], (1, 0, 2)) if "variance" in group else None
        maps = {field: f["truth"][name][()].T for name, field in _H5_TRUTH}
        return IFUCube(
            flux=jnp.asarray(flux),
            wavelength=jnp.asarray(group["wave"][()]),
            variance=None if variance is None else jnp.asarray(variance),
            mask=jnp.asarray(group["mask"][()].T.astype(bool)),
            mass_map=jnp.asarray(maps["mass_map"]),
            velocity_map=jnp.asarray(maps["velocity_map"]),
            dispersion_map=jnp.asarray(maps["dispersion_map"]),
            n_clamped=jnp.asarray(f.attrs["n_clamped"]),
            clipped_velocity_mass=jnp.asarray(f.attrs["clipped_velocity_mass"]),
            n_outside_fov=jnp.asarray(f.attrs["n_outside_fov"]),
            unit=str(group.attrs["unit"]),
            medium=str(group.attrs["medium"]),
            pixel_arcsec=float(group.attrs["pixel_arcsec"]),
            pixel_kpc=float(group.attrs["pixel_kpc"]),
            meta=_meta_from_json(str(f.attrs["meta"])),
        )
