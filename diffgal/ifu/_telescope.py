"""IFU telescopes: spaxel grid, wavelength sampling, resolution, aperture and PSF, plus presets.

A [`Telescope`][diffgal.ifu.Telescope] is pure configuration: every field is static, so a
telescope is hashable and can be passed to `jax.jit` as a static argument (or through
`eqx.filter_jit`, which treats it as static automatically). Presets live in `TELESCOPES` and are
looked up with `get_telescope`.

Spaxel (i, j) of an `n_x` x `n_y` grid with pixel `p` has its centre at
x_i = (i + 1/2 - n_x/2) p, y_j = (j + 1/2 - n_y/2) p, relative to the field centre.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import typing

import equinox as eqx
import numpy as np

__all__ = ["TELESCOPES", "Telescope", "get_telescope", "telescope_presets"]

_APERTURES = ("square", "circular", "hexagonal")
_MEDIA = ("air", "vacuum")
_PSFS = ("none", "gaussian", "moffat")


def _to_int(x):
    """Converter for integer fields: exact integers only (no silent truncation of 2.5 -> 2)."""
    if isinstance(x, bool):
        return x  # rejected with a named message in __check_init__
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, numbers.Real) and float(x).is_integer():
        return int(x)
    return x


def _to_float(x):
    """Converter for float fields: Python float for any real number (keeps hashing simple)."""
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return float(x)
    return x


def _to_optional_float(x):
    return None if x is None else _to_float(x)


@typing.final
class Telescope(eqx.Module):
    """An integral-field spectrograph: spaxel grid, wavelength grid, LSF, aperture and PSF.

    All fields are static, so a `Telescope` has no array leaves, is hashable and can be a
    `jax.jit` static argument.

    **Arguments:**

    - `name`: a label, written into the output provenance.
    - `n_x`, `n_y`: number of spaxels along x and y (positive integers).
    - `pixel_arcsec`: spaxel size in arcsec (positive).
    - `wave_start_aa`: centre of the first wavelength pixel in Å (positive).
    - `n_wave`: number of wavelength pixels (positive integer; counts are stored explicitly).
    - `lsf_fwhm_aa`: instrumental line-spread function, Gaussian FWHM in Å (>= 0; 0 means none).
    - `medium`: `"air"` or `"vacuum"`, the medium of the wavelength grid.
    - `aperture`: `"square"` (every spaxel), `"circular"` or `"hexagonal"`; see
        `aperture_mask`.
    - `dwave_aa`: linear sampling step in Å, or `None`.
    - `dlog10_wave`: logarithmic sampling step in log10(λ/Å), or `None`. Exactly one of
        `dwave_aa` and `dlog10_wave` must be given.
    - `psf`: `"none"` (default), `"gaussian"` or `"moffat"`. Presets have no PSF; set one with
        `telescope.replace(psf="gaussian", psf_fwhm_arcsec=0.8)` to model seeing.
    - `psf_fwhm_arcsec`: PSF FWHM in arcsec; must be 0 for `psf="none"` and positive otherwise.
    - `psf_beta`: Moffat β (> 1 so that the profile is normalisable); ignored unless
        `psf="moffat"`.

    Invalid values raise `ValueError` at construction (and in `replace`).
    """

    name: str = eqx.field(static=True)
    n_x: int = eqx.field(static=True, converter=_to_int)
    n_y: int = eqx.field(static=True, converter=_to_int)
    pixel_arcsec: float = eqx.field(static=True, converter=_to_float)
    wave_start_aa: float = eqx.field(static=True, converter=_to_float)
    n_wave: int = eqx.field(static=True, converter=_to_int)
    lsf_fwhm_aa: float = eqx.field(static=True, converter=_to_float)
    medium: str = eqx.field(static=True)
    aperture: str = eqx.field(static=True, default="square")
    dwave_aa: float | None = eqx.field(static=True, default=None, converter=_to_optional_float)
    dlog10_wave: float | None = eqx.field(static=True, default=None, converter=_to_optional_float)
    psf: str = eqx.field(static=True, default="none")
    psf_fwhm_arcsec: float = eqx.field(static=True, default=0.0, converter=_to_float)
    psf_beta: float = eqx.field(static=True, default=2.5, converter=_to_float)

    def __check_init__(self):
        where = f"`Telescope` {self.name!r}"
        if not isinstance(self.name, str):
            raise TypeError(
                f"`Telescope`: `name` must be a string; got {type(self.name).__name__}. "
                f"Pass a label such as 'MUSE'."
            )
        for field in ("n_x", "n_y", "n_wave"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"{where}: `{field}` must be a positive integer; got {value!r}. "
                    f"Pass a whole number of pixels (>= 1)."
                )
        for field in ("pixel_arcsec", "wave_start_aa"):
            value = getattr(self, field)
            if not isinstance(value, float) or not math.isfinite(value) or value <= 0:
                raise ValueError(
                    f"{where}: `{field}` must be a finite positive number; got {value!r}."
                )
        for field in ("lsf_fwhm_aa", "psf_fwhm_arcsec"):
            value = getattr(self, field)
            if not isinstance(value, float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{where}: `{field}` must be a finite number >= 0; got {value!r}.")
        if self.medium not in _MEDIA:
            raise ValueError(
                f"{where}: `medium` must be one of {_MEDIA}; got {self.medium!r}. Tag the "
                f"wavelength grid as 'air' (e.g. MUSE, SAMI) or 'vacuum' (e.g. MaNGA)."
            )
        if self.aperture not in _APERTURES:
            raise ValueError(
                f"{where}: `aperture` must be one of {_APERTURES}; got {self.aperture!r}."
            )
        if (self.dwave_aa is None) == (self.dlog10_wave is None):
            raise ValueError(
                f"{where}: give exactly one of `dwave_aa` (linear sampling) and `dlog10_wave` "
                f"(log10 sampling); got dwave_aa={self.dwave_aa!r}, "
                f"dlog10_wave={self.dlog10_wave!r}."
            )
        step = self.dwave_aa if self.dwave_aa is not None else self.dlog10_wave
        step_name = "dwave_aa" if self.dwave_aa is not None else "dlog10_wave"
        if not isinstance(step, float) or not math.isfinite(step) or step <= 0:
            raise ValueError(
                f"{where}: `{step_name}` must be a finite positive number; got {step!r}."
            )
        if self.psf not in _PSFS:
            raise ValueError(f"{where}: `psf` must be one of {_PSFS}; got {self.psf!r}.")
        if self.psf == "none" and self.psf_fwhm_arcsec != 0.0:
            raise ValueError(
                f"{where}: `psf_fwhm_arcsec` = {self.psf_fwhm_arcsec} was given with "
                f"psf='none'. Set psf='gaussian' or psf='moffat' to use it, or leave the FWHM "
                f"at 0."
            )
        if self.psf != "none" and self.psf_fwhm_arcsec <= 0.0:
            raise ValueError(
                f"{where}: psf={self.psf!r} needs `psf_fwhm_arcsec` > 0; got "
                f"{self.psf_fwhm_arcsec}. Pass the seeing FWHM in arcsec, or use psf='none'."
            )
        if not isinstance(self.psf_beta, float) or not math.isfinite(self.psf_beta):
            raise ValueError(f"{where}: `psf_beta` must be a finite number; got {self.psf_beta!r}.")
        if self.psf == "moffat" and self.psf_beta <= 1.0:
            raise ValueError(
                f"{where}: a Moffat PSF needs `psf_beta` > 1 (normalisable); got "
                f"{self.psf_beta}. Typical seeing has β between 2.5 and 4.765."
            )

    @classmethod
    def from_fov(cls, name: str, *, fov_arcsec: float, pixel_arcsec: float, **kwargs) -> Telescope:
        """A telescope with a square field `fov_arcsec` on a side.

        The number of spaxels is n = round(fov / pixel), and the field must hold a whole number
        of pixels: |fov / pixel - n| < 1e-9.

        **Arguments:**

        - `name`: the telescope's label.
        - `fov_arcsec`: side of the square field of view in arcsec.
        - `pixel_arcsec`: spaxel size in arcsec.
        - `**kwargs`: the other `Telescope` fields (`wave_start_aa`, `n_wave`, ...).

        **Returns:**

        The `Telescope` with `n_x = n_y = n`.
        """
        if not (fov_arcsec > 0 and pixel_arcsec > 0):
            raise ValueError(
                f"`Telescope.from_fov` {name!r}: `fov_arcsec` and `pixel_arcsec` must be "
                f"positive; got {fov_arcsec!r} and {pixel_arcsec!r}."
            )
        ratio = fov_arcsec / pixel_arcsec
        n = round(ratio)
        if n < 1 or abs(ratio - n) >= 1e-9:
            raise ValueError(
                f"`Telescope.from_fov` {name!r}: the field of view must be a whole number of "
                f"pixels; got fov_arcsec / pixel_arcsec = {fov_arcsec!r} / {pixel_arcsec!r} = "
                f"{ratio!r}. Choose a field that is a multiple of the pixel size (e.g. "
                f"{max(n, 1) * pixel_arcsec!r})."
            )
        return cls(name=name, n_x=n, n_y=n, pixel_arcsec=pixel_arcsec, **kwargs)

    @property
    def fov_arcsec(self) -> float:
        """Field of view along x in arcsec, `n_x * pixel_arcsec`."""
        return self.n_x * self.pixel_arcsec

    @property
    def wave_sampling(self) -> str:
        """`"linear"` (constant `dwave_aa`) or `"log"` (constant `dlog10_wave`)."""
        return "linear" if self.dwave_aa is not None else "log"

    @property
    def shape(self) -> tuple[int, int, int]:
        """The cube shape in memory, `(n_x, n_y, n_wave)`."""
        return (self.n_x, self.n_y, self.n_wave)

    def wavelength(self) -> np.ndarray:
        """Wavelength pixel centres in Å (float64, `medium`).

        **Returns:**

        The (n_wave,) centres: `wave_start_aa + dwave_aa * k` for linear sampling, or
        `wave_start_aa * 10**(dlog10_wave * k)` for log sampling, k = 0 .. n_wave - 1.
        """
        return self._wave_at(np.arange(self.n_wave, dtype=np.float64))

    def wave_edges(self) -> np.ndarray:
        """Wavelength pixel edges in Å (float64).

        Edges lie half a step from the centres: arithmetic midpoints for linear sampling,
        geometric midpoints (half a step in log10 λ) for log sampling.

        **Returns:**

        The (n_wave + 1,) edges; pixel k spans `[edges[k], edges[k + 1]]`.
        """
        return self._wave_at(np.arange(self.n_wave + 1, dtype=np.float64) - 0.5)

    def _wave_at(self, k: np.ndarray) -> np.ndarray:
        if self.dwave_aa is not None:
            return self.wave_start_aa + self.dwave_aa * k
        return self.wave_start_aa * 10.0 ** (self.dlog10_wave * k)

    def spaxel_centres_arcsec(self) -> tuple[np.ndarray, np.ndarray]:
        """Spaxel centre offsets from the field centre in arcsec.

        **Returns:**

        `(x, y)`: the (n_x,) and (n_y,) centres, x_i = (i + 1/2 - n_x/2) p and likewise y_j.
        """
        return (
            (np.arange(self.n_x) + 0.5 - self.n_x / 2) * self.pixel_arcsec,
            (np.arange(self.n_y) + 0.5 - self.n_y / 2) * self.pixel_arcsec,
        )

    def aperture_mask(self) -> np.ndarray:
        """The aperture as a boolean (n_x, n_y) array, indexed (x, y); `True` inside.

        With D = min(n_x, n_y) · p the aperture diameter (the field width for square fields),
        a spaxel belongs to the aperture when its centre lies

        - `"square"`: anywhere (every spaxel);
        - `"circular"`: within D/2 of the field centre (boundary included);
        - `"hexagonal"`: inside the regular hexagon of flat-to-flat width D, oriented with
            flat edges at top and bottom (y = ±D/2) and corners on the x axis at x = ±D/√3.
            The corners reach beyond the square field (D/√3 ≈ 0.577 D > D/2), so on a square
            grid the mask is the hexagon clipped at the left and right field edges.

        The test is done in pixel units with exact half-integer centres, so no spaxel centre
        lies exactly on the boundary for integer grid sizes.

        **Returns:**

        A NumPy bool array of shape (n_x, n_y).
        """
        u = np.arange(self.n_x, dtype=np.float64) + 0.5 - self.n_x / 2
        v = np.arange(self.n_y, dtype=np.float64) + 0.5 - self.n_y / 2
        uu, vv = np.meshgrid(u, v, indexing="ij")
        half = min(self.n_x, self.n_y) / 2  # D/2 in pixels
        if self.aperture == "square":
            return np.ones((self.n_x, self.n_y), dtype=bool)
        if self.aperture == "circular":
            return uu**2 + vv**2 <= half**2
        # Flat top/bottom: |y| <= a and (√3/2)|x| + |y|/2 <= a, with apothem a = D/2.
        return (np.abs(vv) <= half) & (np.sqrt(3.0) * np.abs(uu) + np.abs(vv) <= 2.0 * half)

    def replace(self, **changes) -> Telescope:
        """A copy with some fields changed, validated again.

        **Arguments:**

        - `**changes`: field names and their new values, e.g. `psf="gaussian"`,
            `psf_fwhm_arcsec=0.8`.

        **Returns:**

        The new `Telescope`.
        """
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(
                f"`Telescope.replace`: unknown field(s) {unknown}; valid fields are "
                f"{sorted(names)}."
            )
        return dataclasses.replace(self, **changes)


def _preset(name: str, **kwargs) -> Telescope:
    return Telescope.from_fov(name, **kwargs)


_MUSE_WAVE = dict(wave_start_aa=4700.15, dwave_aa=1.25, n_wave=3721, lsf_fwhm_aa=2.51)
_MANGA_WAVE = dict(wave_start_aa=3622.0, dwave_aa=1.04, n_wave=6474, lsf_fwhm_aa=2.85)

#: Telescope presets by name (spec §5). Numbers are stored explicitly; every preset has
#: `psf="none"` (set the seeing yourself with `Telescope.replace`).
#:
#: - `MUSE`: 5" field of the MUSE wide-field mode at 0.2"; 4700.15 Å + 1.25 Å x 3721 (air).
#: - `MUSE_WFM`: the full 60" MUSE wide-field mode, 300 x 300 spaxels.
#: - `MUSE_NFM`: MUSE narrow-field mode. The real field is 7.42" x 7.43" at 0.025" sampling;
#:   this preset uses 300 x 300 spaxels at 0.025" (7.5").
#: - `MUSE_ultraWFM`: a hypothetical 180" field (900 x 900 x 3721, 12 GB in float32).
#: - `MaNGA_12` ... `MaNGA_32`: SDSS-IV MaNGA bundles of 12, 17, 22, 27, 32" on 0.5" spaxels,
#:   linear 3622 Å + 1.04 Å x 6474 (vacuum), hexagonal aperture (as in SimSpin).
#: - `MaNGA_LOG`: the 32" bundle with the sampling of real MaNGA DRP LOGCUBEs,
#:   λ_k = 10**(3.5589 + 1e-4 k) Å (3621.6-10353.8 Å, 4563 pixels, vacuum).
#: - `SAMI`: 15" circular bundle at 0.5", 3750 Å + 1.04 Å x 1924 (air).
#: - `CALIFA`: 74" at 1", 3700 Å + 2.7 Å x 389 (V1200 blue grating, air), hexagonal.
#: - `HECTOR`: 30" at 0.1", 3720 Å + 1.6 Å x 1369, hexagonal, air. The 0.1" pixel comes from
#:   SimSpin's preset and is **unverified** against Hector data products; check it before use.
#: - `TESTGRADIENT`: one 2" spaxel, 4700.15 Å + 10 Å x 466, for quick gradient tests.
TELESCOPES: dict[str, Telescope] = {
    t.name: t
    for t in (
        _preset("MUSE", fov_arcsec=5.0, pixel_arcsec=0.2, **_MUSE_WAVE, medium="air"),
        _preset("MUSE_WFM", fov_arcsec=60.0, pixel_arcsec=0.2, **_MUSE_WAVE, medium="air"),
        _preset("MUSE_NFM", fov_arcsec=7.5, pixel_arcsec=0.025, **_MUSE_WAVE, medium="air"),
        _preset("MUSE_ultraWFM", fov_arcsec=180.0, pixel_arcsec=0.2, **_MUSE_WAVE, medium="air"),
        *(
            _preset(
                f"MaNGA_{fov}",
                fov_arcsec=float(fov),
                pixel_arcsec=0.5,
                **_MANGA_WAVE,
                aperture="hexagonal",
                medium="vacuum",
            )
            for fov in (12, 17, 22, 27, 32)
        ),
        _preset(
            "MaNGA_LOG",
            fov_arcsec=32.0,
            pixel_arcsec=0.5,
            wave_start_aa=10.0**3.5589,
            dlog10_wave=1e-4,
            n_wave=4563,
            lsf_fwhm_aa=2.85,
            aperture="hexagonal",
            medium="vacuum",
        ),
        _preset(
            "SAMI",
            fov_arcsec=15.0,
            pixel_arcsec=0.5,
            wave_start_aa=3750.0,
            dwave_aa=1.04,
            n_wave=1924,
            lsf_fwhm_aa=2.65,
            aperture="circular",
            medium="air",
        ),
        _preset(
            "CALIFA",
            fov_arcsec=74.0,
            pixel_arcsec=1.0,
            wave_start_aa=3700.0,
            dwave_aa=2.7,
            n_wave=389,
            lsf_fwhm_aa=2.7,
            aperture="hexagonal",
            medium="air",
        ),
        _preset(
            "HECTOR",
            fov_arcsec=30.0,
            pixel_arcsec=0.1,
            wave_start_aa=3720.0,
            dwave_aa=1.6,
            n_wave=1369,
            lsf_fwhm_aa=1.3,
            aperture="hexagonal",
            medium="air",
        ),
        _preset(
            "TESTGRADIENT",
            fov_arcsec=2.0,
            pixel_arcsec=2.0,
            wave_start_aa=4700.15,
            dwave_aa=10.0,
            n_wave=466,
            lsf_fwhm_aa=2.51,
            medium="air",
        ),
    )
}


def telescope_presets() -> list[str]:
    """The names of the telescope presets, sorted.

    **Returns:**

    A sorted list of the keys of `TELESCOPES`.
    """
    return sorted(TELESCOPES)


def get_telescope(telescope: str | Telescope) -> Telescope:
    """Look up a telescope preset by name, or pass a `Telescope` through.

    **Arguments:**

    - `telescope`: a preset name (exact match first, then a unique case-insensitive match,
        so `"muse"` finds `"MUSE"`), or a `Telescope` instance (returned unchanged).

    **Returns:**

    The `Telescope`.
    """
    if isinstance(telescope, Telescope):
        return telescope
    if not isinstance(telescope, str):
        raise TypeError(
            f"`get_telescope`: expected a preset name or a `Telescope`; got "
            f"{type(telescope).__name__}. Pass e.g. 'MUSE' or a `Telescope(...)`."
        )
    if telescope in TELESCOPES:
        return TELESCOPES[telescope]
    folded = [name for name in TELESCOPES if name.casefold() == telescope.casefold()]
    if len(folded) == 1:
        return TELESCOPES[folded[0]]
    raise ValueError(
        f"`get_telescope`: unknown telescope {telescope!r}. Known presets: "
        f"{', '.join(telescope_presets())}. Pick one of these, or build a `Telescope(...)`."
    )
