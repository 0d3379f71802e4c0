"""Noise models for IFU cubes, applied once to the full (possibly sharded) noiseless cube.

Each spaxel s draws its own standard normals from `jax.random.fold_in(key, s)`, so the noise
is independent between spaxels and bit-identical whatever the number of devices or the
sharding of the cube. The noise scale is computed from the noiseless cube under
`stop_gradient`, and the variance cube is returned with the noisy cube.
"""

from __future__ import annotations

import abc
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._cube import IFUCube


class AbstractNoise(eqx.Module):
    """A noise model: `sigma(flux, wavelength)` gives the per-pixel standard deviation."""

    @abc.abstractmethod
    def sigma(
        self, flux: Float[Array, "n_x n_y n_wave"], wavelength: Float[Array, " n_wave"]
    ) -> Float[Array, "n_x n_y n_wave"]:
        raise NotImplementedError


@typing.final
class TargetSNR(AbstractNoise):
    """A flat noise level per spaxel: σ_s = ⟨flux_s⟩_band / `snr`.

    **Arguments:**

    - `snr`: the target signal-to-noise ratio per pixel (> 0).
    - `band`: `(λ_min, λ_max)` in Å over which the mean flux is taken (default: the whole
        cube).

    Spaxels without light (e.g. outside the aperture) get σ = 0.
    """

    snr: float = eqx.field(static=True)
    band: tuple[float, float] | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if not self.snr > 0:
            raise ValueError(f"`TargetSNR`: `snr` must be > 0; got {self.snr!r}.")

    def sigma(self, flux, wavelength):
        if self.band is None:
            sel = jnp.ones(wavelength.shape, bool)
        else:
            sel = (wavelength >= self.band[0]) & (wavelength <= self.band[1])
        mean = jnp.sum(jnp.where(sel, flux, 0.0), axis=-1) / jnp.maximum(jnp.sum(sel), 1)
        return jnp.broadcast_to(jnp.abs(mean)[..., None] / self.snr, flux.shape)


@typing.final
class PoissonNoise(AbstractNoise):
    """Photon (Poisson, Gaussian limit) noise plus sky and read noise:
    σ² = (max(flux, 0) + sky) / gain + read_noise².

    **Arguments:**

    - `gain`: detected counts per unit of cube flux (> 0), i.e. exposure × throughput in the
        cube's unit.
    - `read_noise`: read noise in cube units (>= 0).
    - `sky`: sky level in cube units (>= 0).
    """

    gain: float = eqx.field(static=True)
    read_noise: float = eqx.field(static=True, default=0.0)
    sky: float = eqx.field(static=True, default=0.0)

    def __check_init__(self):
        if not self.gain > 0:
            raise ValueError(f"`PoissonNoise`: `gain` must be > 0; got {self.gain!r}.")
        if not (self.read_noise >= 0 and self.sky >= 0):
            raise ValueError(
                f"`PoissonNoise`: `read_noise` and `sky` must be >= 0; got "
                f"{self.read_noise!r} and {self.sky!r}."
            )

    def sigma(self, flux, wavelength):
        return jnp.sqrt((jnp.maximum(flux, 0.0) + self.sky) / self.gain + self.read_noise**2)


@typing.final
class GivenVariance(AbstractNoise):
    """Noise with a given variance cube (n_x, n_y, n_wave), e.g. from an observed cube."""

    variance: Float[ArrayLike, "n_x n_y n_wave"]

    def sigma(self, flux, wavelength):
        var = jnp.asarray(self.variance, flux.dtype)
        if var.shape != flux.shape:
            raise ValueError(
                f"`GivenVariance`: `variance` must have the cube's shape {flux.shape}; got "
                f"{var.shape}."
            )
        var = eqx.error_if(
            var, ~(var >= 0), "`GivenVariance`: `variance` must be finite and >= 0."
        )
        return jnp.sqrt(var)


def standard_normals(key: PRNGKeyArray, shape: tuple[int, int, int], dtype) -> Array:
    """ε (n_x, n_y, n_wave): spaxel (i, j) uses `fold_in(key, i * n_y + j)`."""
    n_x, n_y, n_wave = shape
    index = jnp.arange(n_x * n_y, dtype=jnp.uint32).reshape(n_x, n_y)

    def one(s):
        return jax.random.normal(jax.random.fold_in(key, s), (n_wave,), dtype)

    return jax.vmap(jax.vmap(one))(index)


def add_noise(key: PRNGKeyArray, cube: IFUCube, noise: AbstractNoise | float) -> IFUCube:
    """Add Gaussian noise to a noiseless cube; the key comes first.

    **Arguments:**

    - `key`: a JAX PRNG key (`jax.random.key(seed)`).
    - `cube`: the noiseless [`IFUCube`][diffgal.ifu.IFUCube].
    - `noise`: a noise model ([`TargetSNR`][diffgal.ifu.TargetSNR],
        [`PoissonNoise`][diffgal.ifu.PoissonNoise], [`GivenVariance`][diffgal.ifu.GivenVariance])
        or a number, shorthand for `TargetSNR(snr=number)`.

    **Returns:**

    The cube with `flux` = noiseless + σ ε and `variance` = σ². σ comes from the noiseless cube
    under `stop_gradient`, so gradients of a fit see the noise as fixed.
    """
    if isinstance(noise, (int, float)) and not isinstance(noise, bool):
        noise = TargetSNR(float(noise))
    if not isinstance(noise, AbstractNoise):
        raise TypeError(
            f"`add_noise`: `noise` must be a noise model (TargetSNR, PoissonNoise, "
            f"GivenVariance) or a target S/N number; got {type(noise).__name__}."
        )
    if key is None:
        raise ValueError(
            "`add_noise`: a PRNG `key` is required for noise, e.g. `key=jax.random.key(0)`; "
            "diffgal never uses a hidden constant key."
        )
    flux = cube.flux
    sigma = jax.lax.stop_gradient(noise.sigma(flux, cube.wavelength)).astype(flux.dtype)
    eps = standard_normals(key, flux.shape, flux.dtype)
    mask = cube.mask[:, :, None]
    noisy = jnp.where(mask, flux + sigma * eps, 0.0)
    return eqx.tree_at(
        lambda c: (c.flux, c.variance),
        cube,
        (noisy, jnp.where(mask, sigma**2, 0.0)),
        is_leaf=lambda x: x is None,
    )
