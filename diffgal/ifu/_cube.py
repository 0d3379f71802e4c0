"""The rendered IFU cube: flux, wavelengths, variance, aperture mask, truth maps and provenance."""

from __future__ import annotations

import typing

import equinox as eqx
from jaxtyping import Array, Bool, Float, Int


@typing.final
class IFUCube(eqx.Module):
    """A rendered IFU data cube.

    Spatial axes are ordered (x, y): `flux[i, j]` is the spectrum of the spaxel whose centre
    is at sky-plane position x_i = (i + 1/2 - n_x/2) p, y_j = (j + 1/2 - n_y/2) p, with p the
    spaxel size. +x is west-to-east flipped as in FITS (RA increases to the left), +y is north.
    The FITS cube is the transpose, (n_wave, n_y, n_x).

    **Fields:**

    - `flux`: (n_x, n_y, n_wave), in `unit` (by default 1e-20 erg/s/cm^2/Å).
    - `wavelength`: (n_wave,) observed-frame pixel centres in Å, in the telescope's `medium`.
    - `variance`: (n_x, n_y, n_wave) variance of `flux` (same unit squared) or `None` (noiseless).
    - `mask`: (n_x, n_y) boolean, `True` inside the telescope aperture. Outside it `flux` is 0.
    - `mass_map`: (n_x, n_y) M_sun of initial mass per spaxel (same spatial weights and PSF).
    - `velocity_map`, `dispersion_map`: (n_x, n_y) light-weighted (band-averaged template flux)
        line-of-sight velocity and dispersion in km/s; NaN where a spaxel has no light.
    - `n_clamped`: number of particles whose age or [M/H] lay outside the template grid and
        were clamped to its edge (never zeroed).
    - `clipped_velocity_mass`: M_sun of initial mass whose |v_los| exceeded `v_max` and was put
        in the edge velocity bin.
    - `n_outside_fov`: number of particles outside the padded field (weight 0).
    - `unit`: the flux unit string, FITS `BUNIT` style (static).
    - `medium`: `"air"` or `"vacuum"` (static).
    - `pixel_arcsec`, `pixel_kpc`: spaxel size (static floats).
    - `meta`: provenance as a tuple of `(key, value)` pairs (static): telescope, template
        library and licence, z, d_L, velscale, requested and effective LSF/PSF FWHM, angles,
        seed, and so on. `dict(cube.meta)` gives a dictionary.
    """

    flux: Float[Array, "n_x n_y n_wave"]
    wavelength: Float[Array, " n_wave"]
    variance: Float[Array, "n_x n_y n_wave"] | None
    mask: Bool[Array, "n_x n_y"]
    mass_map: Float[Array, "n_x n_y"]
    velocity_map: Float[Array, "n_x n_y"]
    dispersion_map: Float[Array, "n_x n_y"]
    n_clamped: Int[Array, ""]
    clipped_velocity_mass: Float[Array, ""]
    n_outside_fov: Int[Array, ""]
    unit: str = eqx.field(static=True)
    medium: str = eqx.field(static=True)
    pixel_arcsec: float = eqx.field(static=True)
    pixel_kpc: float = eqx.field(static=True)
    meta: tuple = eqx.field(static=True, default=())

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.flux.shape)

    def to_fits(self, path, *, overwrite: bool = True) -> None:
        """Write the cube as a MUSE-like FITS file with a celestial + spectral WCS.

        See [`diffgal.ifu.write_fits`][] for the layout.
        """
        from ._io import write_fits

        write_fits(self, path, overwrite=overwrite)

    def to_hdf5(self, path) -> None:
        """Write the cube to HDF5; see [`diffgal.ifu.write_hdf5`][] for the layout."""
        from ._io import write_hdf5

        write_hdf5(self, path)

    def white_light(self) -> Float[Array, "n_x n_y"]:
        """The cube summed over wavelength times the pixel width: flux per spaxel [unit·Å]."""
        import jax.numpy as jnp

        dwave = jnp.gradient(self.wavelength)
        return jnp.sum(self.flux * dwave, axis=-1)
