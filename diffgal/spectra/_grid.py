"""SSP template grids: spectra per unit initial mass on a (log age, [M/H]) grid.

A [`TemplateGrid`][diffgal.spectra.TemplateGrid] holds rest-frame spectra in L_sun/Å per M_sun of
*initial* mass on a grid of log10(age/Gyr) and [M/H]. Lookups are bilinear in
(log10(age/Gyr), [M/H]) and **clamp** to the grid edge, never extrapolate, so a star outside the
grid gets the (non-zero) edge template and is counted in `n_outside`.
"""

from __future__ import annotations

import os
import pathlib
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

_MEDIA = ("air", "vacuum")
_ARRAY_KEYS = ("log_age_gyr", "metallicity_mh", "wave_aa", "flux")
_OPTIONAL_ARRAY_KEYS = ("surviving_mass_fraction", "fwhm_aa")
_STRING_KEYS = ("medium", "name", "licence", "source")
_SYNTHETIC_LINES_AA = (4861.0, 5175.0, 5270.0, 5335.0, 5893.0, 6563.0, 8498.0, 8542.0, 8662.0)
_BALMER_AA = (4861.0, 6563.0)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_axis(name: str, x) -> None:
    """Static checks of a grid axis: 1-D, at least one node, finite and strictly increasing."""
    if jnp.ndim(x) != 1 or jnp.shape(x)[0] < 1:
        raise ValueError(
            f"`TemplateGrid`: `{name}` must be a non-empty 1-D array; got shape {jnp.shape(x)}. "
            f"Pass the grid axis as a flat array of node values."
        )
    if not _is_concrete(x):
        return
    values = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"`TemplateGrid`: `{name}` must be finite; got non-finite entries at indices "
            f"{np.flatnonzero(~np.isfinite(values)).tolist()}. Drop or remap those nodes "
            f"(e.g. an age-0 node has no finite log10 age)."
        )
    if values.size > 1 and not np.all(np.diff(values) > 0):
        bad = np.flatnonzero(np.diff(values) <= 0).tolist()
        raise ValueError(
            f"`TemplateGrid`: `{name}` must be strictly increasing; got non-increasing steps "
            f"after indices {bad}. Sort the axis (and the matching `flux` axis) and drop "
            f"duplicate nodes."
        )


@typing.final
class TemplateGrid(eqx.Module):
    """SSP spectra per unit initial mass on a (log10(age/Gyr), [M/H]) grid.

    **Arguments:**

    - `log_age_gyr`: (n_age,) log10(age / Gyr) of the age nodes, finite and strictly increasing.
    - `metallicity_mh`: (n_met,) [M/H] of the metallicity nodes, finite and strictly increasing.
    - `wave_aa`: (n_wave,) rest-frame wavelengths in Å, finite and strictly increasing.
    - `flux`: (n_age, n_met, n_wave) L_sun/Å per M_sun of initial mass.
    - `surviving_mass_fraction`: (n_age, n_met) mass in stars and remnants per unit initial mass,
        or `None` when the source does not give it.
    - `fwhm_aa`: (n_wave,) the spectral resolution of the templates (Gaussian FWHM in Å at rest),
        or `None` when unknown (then no LSF matching is possible and renders assume 0).
    - `medium`: `"air"` or `"vacuum"`, the medium of `wave_aa` (static).
    - `z_sun`: the solar metal mass fraction of the grid, for Z -> [M/H] (static).
    - `name`, `licence`, `source`: provenance strings (static).

    The array fields are ordinary pytree leaves, so a grid can be passed through `jax.jit` and
    differentiated. Shapes, and (for concrete arrays) finiteness and monotonicity of the axes,
    are checked at construction and raise `ValueError`.
    """

    log_age_gyr: Float[ArrayLike, " n_age"]
    metallicity_mh: Float[ArrayLike, " n_met"]
    wave_aa: Float[ArrayLike, " n_wave"]
    flux: Float[ArrayLike, "n_age n_met n_wave"]
    surviving_mass_fraction: Float[ArrayLike, "n_age n_met"] | None = None
    fwhm_aa: Float[ArrayLike, " n_wave"] | None = None
    medium: str = eqx.field(static=True, default="air")
    z_sun: float = eqx.field(static=True, default=0.019)
    name: str = eqx.field(static=True, default="")
    licence: str = eqx.field(static=True, default="")
    source: str = eqx.field(static=True, default="")

    def __check_init__(self):
        _check_axis("log_age_gyr", self.log_age_gyr)
        _check_axis("metallicity_mh", self.metallicity_mh)
        _check_axis("wave_aa", self.wave_aa)
        expected = (
            jnp.shape(self.log_age_gyr)[0],
            jnp.shape(self.metallicity_mh)[0],
            jnp.shape(self.wave_aa)[0],
        )
        if jnp.shape(self.flux) != expected:
            raise ValueError(
                f"`TemplateGrid`: `flux` must have shape (n_age, n_met, n_wave) = {expected} to "
                f"match `log_age_gyr`, `metallicity_mh` and `wave_aa`; got {jnp.shape(self.flux)}. "
                f"Transpose or reshape the flux table to (age, [M/H], wavelength) order."
            )
        if self.surviving_mass_fraction is not None and (
            jnp.shape(self.surviving_mass_fraction) != expected[:2]
        ):
            raise ValueError(
                f"`TemplateGrid`: `surviving_mass_fraction` must have shape (n_age, n_met) = "
                f"{expected[:2]}; got {jnp.shape(self.surviving_mass_fraction)}. Pass it in "
                f"(age, [M/H]) order, or pass None."
            )
        if self.fwhm_aa is not None and jnp.shape(self.fwhm_aa) != expected[2:]:
            raise ValueError(
                f"`TemplateGrid`: `fwhm_aa` must have shape (n_wave,) = {expected[2:]}; got "
                f"{jnp.shape(self.fwhm_aa)}. Pass one FWHM per wavelength (np.full for a "
                f"constant), or None."
            )
        if self.medium not in _MEDIA:
            raise ValueError(
                f"`TemplateGrid`: `medium` must be one of {_MEDIA}; got {self.medium!r}. "
                f"Tag the wavelengths as 'air' (MILES/E-MILES) or 'vacuum'."
            )

    def spectrum(
        self, age_gyr: Float[ArrayLike, ""], mh: Float[ArrayLike, ""]
    ) -> Float[Array, " n_wave"]:
        """The spectrum of one star per unit initial mass [L_sun/Å/M_sun].

        Bilinear in (log10(age/Gyr), [M/H]); clamped to the grid edge outside the grid.
        Use `jax.vmap` over stars, or [`TemplateGrid.lookup`][] for a batch with a count of the
        stars that were clamped.

        **Arguments:**

        - `age_gyr`: age in Gyr (scalar). Non-positive ages are clamped to the youngest node.
        - `mh`: [M/H] (scalar).

        **Returns:**

        The (n_wave,) spectrum.
        """
        index, weight, _ = bilinear_weights(
            _safe_log10(age_gyr), mh, self.log_age_gyr, self.metallicity_mh
        )
        flux = jnp.asarray(self.flux)
        corners = flux[index[:, 0], index[:, 1]]
        return jnp.einsum("c,cw->w", weight.astype(corners.dtype), corners)

    def lookup(
        self, age_gyr: Float[ArrayLike, " n_star"], mh: Float[ArrayLike, " n_star"]
    ) -> tuple[Float[Array, "n_star n_wave"], Int[Array, ""]]:
        """Spectra of a batch of stars per unit initial mass, and how many were clamped.

        **Arguments:**

        - `age_gyr`: (n_star,) ages in Gyr.
        - `mh`: (n_star,) [M/H].

        **Returns:**

        `(spectra, n_outside)`: the (n_star, n_wave) spectra [L_sun/Å/M_sun], and the number of
        stars whose (age, [M/H]) lay outside the grid and got the edge template.
        """
        age_gyr, mh = _batch("TemplateGrid.lookup", age_gyr, mh)
        spectra = jax.vmap(self.spectrum)(age_gyr, mh)
        return spectra, self.n_outside(age_gyr, mh)

    def weights(
        self, age_gyr: Float[ArrayLike, " n_star"], mh: Float[ArrayLike, " n_star"]
    ) -> Float[Array, "n_star n_age n_met"]:
        """Dense bilinear node weights of a batch of stars; each row sums to 1.

        `jnp.einsum("sam,amw->sw", weights, grid.flux)` equals `lookup(age_gyr, mh)[0]`. This is
        the linear operator that mass-weighted deposits are built from.

        **Arguments:**

        - `age_gyr`: (n_star,) ages in Gyr.
        - `mh`: (n_star,) [M/H].

        **Returns:**

        The (n_star, n_age, n_met) weights.
        """
        age_gyr, mh = _batch("TemplateGrid.weights", age_gyr, mh)
        shape = (jnp.shape(self.log_age_gyr)[0], jnp.shape(self.metallicity_mh)[0])

        def one(a, m):
            index, weight, _ = bilinear_weights(
                _safe_log10(a), m, self.log_age_gyr, self.metallicity_mh
            )
            return jnp.zeros(shape, weight.dtype).at[index[:, 0], index[:, 1]].add(weight)

        return jax.vmap(one)(age_gyr, mh)

    def n_outside(
        self, age_gyr: Float[ArrayLike, " n_star"], mh: Float[ArrayLike, " n_star"]
    ) -> Int[Array, ""]:
        """How many of the stars lie outside the grid (and are clamped to its edge)."""
        age_gyr, mh = _batch("TemplateGrid.n_outside", age_gyr, mh)

        def one(a, m):
            return bilinear_weights(_safe_log10(a), m, self.log_age_gyr, self.metallicity_mh)[2]

        return jnp.sum(jax.vmap(one)(age_gyr, mh), dtype=int)


def _batch(api: str, age_gyr, mh):
    age_gyr, mh = jnp.asarray(age_gyr), jnp.asarray(mh)
    if age_gyr.ndim != 1 or age_gyr.shape != mh.shape:
        raise ValueError(
            f"`{api}`: `age_gyr` and `mh` must be 1-D arrays of the same length (n_star,); got "
            f"{age_gyr.shape} and {mh.shape}. Flatten them, or use `spectrum` with `jax.vmap`."
        )
    return age_gyr, mh


def _safe_log10(age_gyr):
    """log10(age) with non-positive ages mapped to the smallest positive float (zero gradient)."""
    age_gyr = jnp.asarray(age_gyr)
    if not jnp.issubdtype(age_gyr.dtype, jnp.floating):
        age_gyr = age_gyr.astype(float)
    return jnp.log10(jnp.maximum(age_gyr, jnp.finfo(age_gyr.dtype).tiny))


def _axis_weights(x, grid):
    """Lower node index, upper node index, upper weight in [0, 1], and whether x was clamped."""
    n = grid.shape[0]
    outside = (x < grid[0]) | (x > grid[-1])
    if n == 1:
        zero = jnp.zeros((), int)
        return zero, zero, jnp.zeros_like(x), outside
    xc = jnp.clip(x, grid[0], grid[-1])
    lo = jnp.clip(jnp.searchsorted(grid, xc, side="right") - 1, 0, n - 2)
    t = (xc - grid[lo]) / (grid[lo + 1] - grid[lo])
    return lo, lo + 1, t, outside


def bilinear_weights(
    log_age: Float[ArrayLike, ""],
    mh: Float[ArrayLike, ""],
    log_age_grid: Float[ArrayLike, " n_age"],
    mh_grid: Float[ArrayLike, " n_met"],
) -> tuple[Int[Array, "4 2"], Float[Array, " 4"], Bool[Array, ""]]:
    """Bilinear weights of one point on a (log age, [M/H]) grid, clamped to the grid edge.

    The weights are linear in (log_age, mh) inside each cell, so they are differentiable there
    (one-sided at the nodes). Outside the grid each coordinate is clamped to the nearest edge,
    so the result is the edge template (never zero) with zero gradient along the clamped
    coordinate, and `outside` is `True`.

    **Arguments:**

    - `log_age`: log10(age/Gyr) (scalar).
    - `mh`: [M/H] (scalar).
    - `log_age_grid`: (n_age,) strictly increasing age nodes, log10(age/Gyr).
    - `mh_grid`: (n_met,) strictly increasing [M/H] nodes.

    **Returns:**

    `(index, weight, outside)`: `index` (4, 2) holds the (age, [M/H]) node indices of the corners
    (lo, lo), (hi, lo), (lo, hi), (hi, hi); `weight` (4,) sums to 1; `outside` says whether the
    point was clamped.
    """
    log_age_grid, mh_grid = jnp.asarray(log_age_grid), jnp.asarray(mh_grid)
    dtype = jnp.result_type(log_age, mh, log_age_grid, mh_grid, float)
    log_age = jnp.asarray(log_age, dtype)
    mh = jnp.asarray(mh, dtype)
    a0, a1, ta, out_a = _axis_weights(log_age, log_age_grid.astype(dtype))
    m0, m1, tm, out_m = _axis_weights(mh, mh_grid.astype(dtype))
    index = jnp.stack(
        [jnp.stack([a0, m0]), jnp.stack([a1, m0]), jnp.stack([a0, m1]), jnp.stack([a1, m1])]
    )
    weight = jnp.stack([(1 - ta) * (1 - tm), ta * (1 - tm), (1 - ta) * tm, ta * tm])
    return index, weight, out_a | out_m


def synthetic_grid(
    n_age: int = 8,
    n_met: int = 4,
    wave_min: float = 3000.0,
    wave_max: float = 10000.0,
    dwave: float = 0.5,
) -> TemplateGrid:
    """A small analytic template grid for unit tests. **Synthetic, not a stellar population.**

    Flux(λ; u, [M/H]) = A(u, [M/H]) (λ/5000)^α(u, [M/H]) Π_l [1 − d_l(u, [M/H])
    exp(−(λ − λ_l)²/2s²)], with u = log10(age/Gyr), s = 1 Å and lines at 4861, 5175, 5270, 5335,
    5893, 6563, 8498, 8542 and 8662 Å. The slope α = −1 + u + 0.3 [M/H] reddens with age; the
    Balmer depths (4861, 6563 Å) fall with age and the metal-line depths rise, all smoothly
    and monotonically (logistic in u). A(u, [M/H]) is scaled so that the flux at 5500 Å is
    1e-4 L_sun/Å/M_sun at 10 Gyr and [M/H] = 0, and falls as age^−0.8.

    Ages are `n_age` nodes evenly spaced in u over [−1.1, 1.1] (0.079–12.6 Gyr); [M/H] are `n_met`
    nodes over [−1.5, 0.3]; wavelengths run from `wave_min` in steps of `dwave` Å (air).

    **Returns:**

    A float64 numpy-backed [`TemplateGrid`][diffgal.spectra.TemplateGrid] with
    `surviving_mass_fraction` = 1 − 0.15 (u + 1.1)/2.2 and `name="synthetic"`.
    """
    if n_age < 2 or n_met < 1:
        raise ValueError(
            f"`synthetic_grid`: need n_age >= 2 and n_met >= 1; got n_age={n_age}, n_met={n_met}."
        )
    if not (dwave > 0 and wave_max > wave_min):
        raise ValueError(
            f"`synthetic_grid`: need dwave > 0 and wave_max > wave_min; got dwave={dwave}, "
            f"wave_min={wave_min}, wave_max={wave_max}."
        )
    log_age = np.linspace(-1.1, 1.1, n_age)
    mh = np.linspace(-1.5, 0.3, n_met) if n_met > 1 else np.zeros(1)
    n_wave = int(round((wave_max - wave_min) / dwave)) + 1
    wave = wave_min + dwave * np.arange(n_wave, dtype=np.float64)
    u = log_age[:, None, None]
    m = mh[None, :, None]
    flux = _synthetic_flux(wave, u, m)
    surviving = np.broadcast_to(1.0 - 0.15 * (log_age[:, None] + 1.1) / 2.2, (n_age, n_met))
    return TemplateGrid(
        log_age_gyr=log_age,
        metallicity_mh=mh,
        wave_aa=wave,
        flux=flux,
        surviving_mass_fraction=np.array(surviving),
        fwhm_aa=np.full(n_wave, 2.0 * np.sqrt(2.0 * np.log(2.0))),
        medium="air",
        z_sun=0.019,
        name="synthetic",
        licence="MIT (generated)",
        source="diffgal.spectra.synthetic_grid (analytic power law with Gaussian lines)",
    )


def _synthetic_flux(wave, u, m):
    """The analytic synthetic spectrum (numpy float64), broadcasting over u, m and wave."""

    def slope(u, m):
        return -1.0 + u + 0.3 * m

    def continuum(wave, u, m):
        return (wave / 5000.0) ** slope(u, m)

    amplitude = 1e-4 * 10.0 ** (-0.8 * (u - 1.0) - 0.1 * m) / continuum(5500.0, 1.0, 0.0)
    flux = amplitude * continuum(wave, u, m)
    for line in _SYNTHETIC_LINES_AA:
        sign = -1.0 if line in _BALMER_AA else 1.0
        depth = 0.6 / (1.0 + np.exp(-sign * 2.0 * (u - 0.0) - 0.5 * m))
        flux = flux * (1.0 - depth * np.exp(-((wave - line) ** 2) / 2.0))
    return flux


# --- file layouts -------------------------------------------------------------------------------


def _existing(path) -> pathlib.Path:
    path = pathlib.Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"Template grid file not found: {str(path)!r}.")
    return path


def _from_mapping(api: str, path, arrays: dict, strings: dict, z_sun) -> TemplateGrid:
    missing = [k for k in _ARRAY_KEYS if k not in arrays]
    if missing:
        raise ValueError(
            f"`{api}`: {str(path)!r} lacks the required arrays {missing}; the layout needs "
            f"{list(_ARRAY_KEYS)} (and optionally {list(_OPTIONAL_ARRAY_KEYS)})."
        )
    return TemplateGrid(
        log_age_gyr=arrays["log_age_gyr"],
        metallicity_mh=arrays["metallicity_mh"],
        wave_aa=arrays["wave_aa"],
        flux=arrays["flux"],
        surviving_mass_fraction=arrays.get("surviving_mass_fraction"),
        fwhm_aa=arrays.get("fwhm_aa"),
        medium=strings.get("medium", "air"),
        z_sun=float(z_sun) if z_sun is not None else 0.019,
        name=strings.get("name", ""),
        licence=strings.get("licence", ""),
        source=strings.get("source", ""),
    )


def _arrays_of(grid: TemplateGrid) -> dict[str, np.ndarray]:
    arrays = {k: np.asarray(getattr(grid, k)) for k in _ARRAY_KEYS}
    for key in _OPTIONAL_ARRAY_KEYS:
        if getattr(grid, key) is not None:
            arrays[key] = np.asarray(getattr(grid, key))
    return arrays


def save_template_npz(path, grid: TemplateGrid) -> None:
    """Write `grid` to an uncompressed `.npz` file in the generic template layout.

    The layout: arrays `log_age_gyr` (n_age,), `metallicity_mh` (n_met,), `wave_aa` (n_wave,),
    `flux` (n_age, n_met, n_wave) and optionally `surviving_mass_fraction` (n_age, n_met) and
    `fwhm_aa` (n_wave,);
    0-d string arrays `medium`, `name`, `licence`, `source`; a 0-d float `z_sun`. Arrays are
    written in their own dtype, so a round trip is bit-identical.
    """
    strings = {k: np.array(getattr(grid, k)) for k in _STRING_KEYS}
    np.savez(os.fspath(path), **_arrays_of(grid), **strings, z_sun=np.array(grid.z_sun, np.float64))


def load_template_npz(path) -> TemplateGrid:
    """Read a [`TemplateGrid`][diffgal.spectra.TemplateGrid] from the `.npz` layout.

    See [`save_template_npz`][diffgal.spectra.save_template_npz] for the layout. Missing string
    metadata falls back to the defaults (`medium="air"`, `z_sun=0.019`). The arrays stay numpy
    arrays in the file's dtype.

    **Raises:** `FileNotFoundError` naming the path when it does not exist; `ValueError` when a
    required array is missing or the grid is inconsistent.
    """
    path = _existing(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in (*_ARRAY_KEYS, *_OPTIONAL_ARRAY_KEYS) if k in data.files}
        strings = {k: str(data[k]) for k in _STRING_KEYS if k in data.files}
        z_sun = data["z_sun"] if "z_sun" in data.files else None
    return _from_mapping("load_template_npz", path, arrays, strings, z_sun)


def save_template_hdf5(path, grid: TemplateGrid) -> None:
    """Write `grid` to HDF5 in the generic template layout.

    Same names as the `.npz` layout: the arrays are root datasets, and `medium`, `name`,
    `licence`, `source` (strings) and `z_sun` (float) are attributes of the root group.
    """
    import h5py

    with h5py.File(os.fspath(path), "w") as f:
        for key, value in _arrays_of(grid).items():
            f.create_dataset(key, data=value)
        for key in _STRING_KEYS:
            f.attrs[key] = getattr(grid, key)
        f.attrs["z_sun"] = float(grid.z_sun)


def load_template_hdf5(path) -> TemplateGrid:
    """Read a [`TemplateGrid`][diffgal.spectra.TemplateGrid] from the HDF5 layout.

    See [`save_template_hdf5`][diffgal.spectra.save_template_hdf5]. **Raises:**
    `FileNotFoundError` naming the path when it does not exist; `ValueError` when a required
    dataset is missing or the grid is inconsistent.
    """
    import h5py

    path = _existing(path)
    with h5py.File(path, "r") as f:
        arrays = {k: f[k][()] for k in (*_ARRAY_KEYS, *_OPTIONAL_ARRAY_KEYS) if k in f}
        strings = {k: _as_str(f.attrs[k]) for k in _STRING_KEYS if k in f.attrs}
        z_sun = f.attrs.get("z_sun")
    return _from_mapping("load_template_hdf5", path, arrays, strings, z_sun)


def _as_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
