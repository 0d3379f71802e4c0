"""A minimal mock galaxy whose star particles take ages and metallicities from a chemistry model.

The particles carry only what does not depend on the physical parameters: positions, velocities,
initial masses and a *birth quantile* u in (0, 1). A [`diffgal.pipeline.Pipeline`][] turns u into
a birth time through the inverse CDF of its star-formation history (so the ages follow the SFH
and move with its parameters, differentiably) and reads each particle's metallicity from the
chemical history at that time.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..ifu._particles import FORMAT_NAME, FORMAT_VERSION, StellarParticles
from ._disk import exponential_disk

#: Root attribute naming the mock-galaxy extension of the star-particle format.
MOCK_EXTENSION = "diffgal-mock-galaxy"
MOCK_EXTENSION_VERSION = 1


@typing.final
class MockGalaxy(eqx.Module):
    """Star particles before chemistry: phase space, initial masses and birth quantiles.

    **Fields:**

    - `position`: (n_star, 3) kpc, galaxy-centred (disc in the x-y plane).
    - `velocity`: (n_star, 3) km/s.
    - `mass`: (n_star,) M_sun of initial (formed) mass.
    - `birth_quantile`: (n_star,) u in (0, 1): the particle is born when the galaxy has formed
      the fraction u of the stars it has formed by `age_gyr`. `None` when `birth_time` is given.
    - `birth_time`: (n_star,) Gyr after the start of star formation, fixed (e.g. from a
      snapshot). `None` when `birth_quantile` is given.
    - `age_gyr`: the time of observation [Gyr after the start of star formation] (static).
    """

    position: Float[Array, "n_star 3"]
    velocity: Float[Array, "n_star 3"]
    mass: Float[Array, " n_star"]
    birth_quantile: Float[Array, " n_star"] | None
    birth_time: Float[Array, " n_star"] | None
    age_gyr: float = eqx.field(static=True, default=12.5)

    def __check_init__(self):
        api = "`MockGalaxy`"
        if (self.birth_quantile is None) == (self.birth_time is None):
            raise ValueError(
                f"{api}: give exactly one of `birth_quantile` (ages from the model's SFH) and "
                f"`birth_time` (fixed ages); got "
                f"{'both' if self.birth_quantile is not None else 'neither'}."
            )
        shapes = {
            name: tuple(jnp.shape(getattr(self, name)))
            for name in ("position", "velocity", "mass", "birth_quantile", "birth_time")
            if getattr(self, name) is not None
        }
        for name in ("position", "velocity"):
            if len(shapes[name]) != 2 or shapes[name][1] != 3:
                raise ValueError(
                    f"{api}: `{name}` must have shape (n_star, 3); got {shapes[name]}."
                )
        for name in ("mass", "birth_quantile", "birth_time"):
            if name in shapes and len(shapes[name]) != 1:
                raise ValueError(f"{api}: `{name}` must be 1-D (n_star,); got {shapes[name]}.")
        lengths = {name: s[0] for name, s in shapes.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(
                f"{api}: the particle arrays must have one entry per star; got lengths "
                f"{lengths}. Take every array from the same particle selection."
            )
        if not (isinstance(self.age_gyr, (int, float)) and 0 < self.age_gyr <= 13.797617):
            raise ValueError(
                f"{api}: `age_gyr` must be a number in (0, 13.797617] Gyr (the time of "
                f"observation after the start of star formation); got {self.age_gyr!r}."
            )
        # Values (host side, skipped under tracing): a particle born after the time of
        # observation would get a negative age, a quantile outside [0, 1] a clipped birth time.
        for name in ("position", "velocity", "mass", "birth_quantile", "birth_time"):
            x = getattr(self, name)
            if x is None or isinstance(x, jax.core.Tracer):
                continue
            x = np.asarray(x)
            if not np.all(np.isfinite(x)):
                raise ValueError(
                    f"{api}: `{name}` has {int(np.sum(~np.isfinite(x)))} non-finite entries; "
                    "drop or repair those particles."
                )
        checks = (
            ("mass", 0.0, np.inf, "must be >= 0 (initial mass in M_sun)"),
            ("birth_quantile", 0.0, 1.0, "must lie in [0, 1]"),
            ("birth_time", 0.0, float(self.age_gyr),
             f"must lie in [0, age_gyr = {self.age_gyr}] Gyr (no particle is born after the "
             "time of observation; birth_time = age_gyr - stellar age)"),
        )
        for name, lo, hi, rule in checks:
            x = getattr(self, name)
            if x is None or isinstance(x, jax.core.Tracer):
                continue
            x = np.asarray(x)
            bad = (x < lo) | (x > hi)
            if bad.any():
                raise ValueError(
                    f"{api}: `{name}` {rule}; got {int(bad.sum())} particles outside, in "
                    f"[{float(x.min())!r}, {float(x.max())!r}]."
                )

    @property
    def n_star(self) -> int:
        return int(jnp.shape(self.mass)[0])

    def with_particles(self, age, metallicity, metal_kind: str = "Z") -> StellarParticles:
        """[`StellarParticles`][diffgal.ifu.StellarParticles] for given ages and metallicities."""
        return StellarParticles(self.position, self.velocity, self.mass, age, metallicity,
                                metal_kind=metal_kind)


def make_mock_galaxy(
    key: PRNGKeyArray,
    n_star: int,
    *,
    mass_msun: float = 1e10,
    age_gyr: float = 12.5,
    r_d_kpc: float = 2.0,
    h_z_kpc: float = 0.3,
    v_flat_kms: float = 200.0,
    r_turn_kpc: float = 1.0,
    sigma0_kms: float = 60.0,
    sampling: str = "random",
    dtype=None,
) -> MockGalaxy:
    """Sample a rotating exponential disc with birth quantiles for the chemistry model.

    Positions and velocities come from
    [`diffgal.galaxy.exponential_disk`][] (surface density ∝ exp(-R/r_d), z ~ Laplace(h_z),
    rotation curve v_flat (1 - exp(-R/r_turn)), isotropic dispersion σ0 exp(-R/2r_d)); birth
    quantiles are uniform on (0, 1), so the ages follow whatever star-formation history the
    model has.

    **Arguments:**

    - `key`: a JAX PRNG key (first, as for every sampler).
    - `n_star`: the number of particles (each of mass `mass_msun / n_star`).
    - `age_gyr`: the time of observation after the start of star formation [Gyr].
    - the disc's structure and kinematics as named (kpc, km/s).
    - `sampling`: `"random"` (independent draws) or `"qmc"`: a randomly shifted Halton sequence
      in the seven sampled coordinates (R, φ, z, three velocity components, birth quantile),
      mapped through the same inverse CDFs. QMC spreads every spaxel's particles evenly over
      the birth quantiles, so two realisations' cubes differ far less than with independent
      draws (the particle shot noise that a fit on another realisation sees as unmodelled
      noise). The `key` picks the shift, so different keys give different realisations.

    **Returns:**

    A [`MockGalaxy`][diffgal.galaxy.MockGalaxy].
    """
    if not (isinstance(n_star, int) and n_star >= 1):
        raise ValueError(f"`make_mock_galaxy`: `n_star` must be an int >= 1; got {n_star!r}.")
    if sampling not in ("random", "qmc"):
        raise ValueError(
            f"`make_mock_galaxy`: `sampling` must be 'random' or 'qmc'; got {sampling!r}."
        )
    if sampling == "qmc":
        return _qmc_disk(key, n_star, mass_msun=mass_msun, age_gyr=age_gyr, r_d_kpc=r_d_kpc,
                         h_z_kpc=h_z_kpc, v_flat_kms=v_flat_kms, r_turn_kpc=r_turn_kpc,
                         sigma0_kms=sigma0_kms, dtype=dtype)
    k_disk, k_u = jax.random.split(key)
    disk = exponential_disk(
        k_disk, n_star, mass_msun=mass_msun, r_d_kpc=r_d_kpc, h_z_kpc=h_z_kpc,
        v_flat_kms=v_flat_kms, r_turn_kpc=r_turn_kpc, sigma0_kms=sigma0_kms, dtype=dtype,
    )
    dtype = disk.mass.dtype
    tiny = 1e-6
    u = jax.random.uniform(k_u, (n_star,), dtype, tiny, 1.0 - tiny)
    return MockGalaxy(disk.position, disk.velocity, disk.mass, u, None, age_gyr=float(age_gyr))


_HALTON_BASES = (2, 3, 5, 7, 11, 13, 17)


def halton(n: int, bases=_HALTON_BASES, shift=None) -> np.ndarray:
    """(n, len(bases)) Halton points (radical inverses of 1..n), optionally shifted mod 1."""
    idx = np.arange(1, n + 1, dtype=np.int64)
    out = np.empty((n, len(bases)))
    for d, b in enumerate(bases):
        k = idx.copy()
        f, x = 1.0, np.zeros(n)
        while np.any(k > 0):
            f /= b
            x += f * (k % b)
            k //= b
        out[:, d] = x
    if shift is not None:
        out = np.mod(out + np.asarray(shift)[None, :], 1.0)
    return out


def _gamma2_quantile(q: np.ndarray) -> np.ndarray:
    """x with 1 - (1 + x) e^-x = q (the Gamma(2, 1) inverse CDF), by Newton in float64."""
    x = np.where(q < 0.5, np.sqrt(2 * q), -np.log1p(-q) + 1.0)
    for _ in range(50):
        f = 1 - (1 + x) * np.exp(-x) - q
        x = np.maximum(x - f / np.maximum(x * np.exp(-x), 1e-300), 1e-12)
    return x


def _qmc_disk(key, n_star, *, mass_msun, age_gyr, r_d_kpc, h_z_kpc, v_flat_kms, r_turn_kpc,
              sigma0_kms, dtype) -> MockGalaxy:
    from jax.scipy.special import ndtri

    from ._disk import rotation_curve

    dtype = jnp.result_type(float) if dtype is None else dtype
    shift = np.asarray(jax.random.uniform(key, (len(_HALTON_BASES),)), np.float64)
    h = np.clip(halton(n_star, shift=shift), 1e-9, 1.0 - 1e-9)
    r = r_d_kpc * _gamma2_quantile(h[:, 0])
    phi = 2.0 * np.pi * h[:, 1]
    q = h[:, 2]
    z = h_z_kpc * np.where(q < 0.5, np.log(2.0 * q), -np.log(2.0 * (1.0 - q)))
    normals = np.asarray(ndtri(jnp.asarray(h[:, 3:6])), np.float64)
    vc = np.asarray(rotation_curve(jnp.asarray(r), v_flat_kms, r_turn_kpc), np.float64)
    sigma = sigma0_kms * np.exp(-r / (2.0 * r_d_kpc))
    position = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
    velocity = np.stack([-vc * np.sin(phi), vc * np.cos(phi), np.zeros_like(vc)], axis=1)
    velocity = velocity + normals * sigma[:, None]
    u = np.clip(h[:, 6], 1e-6, 1.0 - 1e-6)
    mass = np.full(n_star, mass_msun / n_star)
    arr = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    return MockGalaxy(arr(position), arr(velocity), arr(mass), arr(u), None,
                      age_gyr=float(age_gyr))


def save_mock_galaxy(path, galaxy: MockGalaxy, particles: StellarParticles | None = None, *,
                     attrs: Mapping | None = None) -> None:
    """Write a mock galaxy in the diffgal star-particle HDF5 format (version 1) + its extension.

    Layout: the star-particle format of [`diffgal.ifu.save_particles_hdf5`][] (group `/stars`
    with `position`, `velocity`, `mass`, `age`, `metallicity`, each with a `units` attribute),
    plus

    - `/stars/birth_quantile` (N,) or `/stars/birth_time` (N,) Gyr;
    - root attributes `extension = "diffgal-mock-galaxy"`, `extension_version = 1`,
      `age_gyr` (time of observation, Gyr after the start of star formation) and, in `meta`
      (JSON), the user's `attrs` (e.g. the truth parameters).

    `particles` holds the ages and metallicities of one model evaluation (for readers that
    only know the base format); without it `age` and `metallicity` are written as NaN.
    """
    import h5py

    from ..ifu._particles import save_particles_hdf5

    n = galaxy.n_star
    if particles is None:
        nan = np.full(n, np.nan)
        particles = galaxy.with_particles(jnp.asarray(nan), jnp.asarray(nan), metal_kind="MH")
    if particles.n_star != n:
        raise ValueError(
            f"`save_mock_galaxy`: `particles` has {particles.n_star} stars but the galaxy has "
            f"{n}; pass the particles made from this galaxy."
        )
    save_particles_hdf5(path, particles, attrs=attrs)
    with h5py.File(os.fspath(path), "a") as f:
        f.attrs["extension"] = MOCK_EXTENSION
        f.attrs["extension_version"] = MOCK_EXTENSION_VERSION
        f.attrs["age_gyr"] = float(galaxy.age_gyr)
        g = f["stars"]
        if galaxy.birth_quantile is not None:
            d = g.create_dataset("birth_quantile", data=np.asarray(galaxy.birth_quantile))
            d.attrs["units"] = "fraction of the stellar mass formed by age_gyr"
        else:
            d = g.create_dataset("birth_time", data=np.asarray(galaxy.birth_time))
            d.attrs["units"] = "Gyr after the start of star formation"


def load_mock_galaxy(path) -> MockGalaxy:
    """Read a [`MockGalaxy`][diffgal.galaxy.MockGalaxy] written by
    [`save_mock_galaxy`][diffgal.galaxy.save_mock_galaxy].

    A plain star-particle file (no extension) is accepted too: its `age` becomes a fixed
    `birth_time = age_gyr - age` with `age_gyr` = the oldest particle's age (rounded up to
    0.01 Gyr).
    """
    import h5py

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`load_mock_galaxy`: no such file {path!r}.")
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT_NAME or "stars" not in f:
            raise ValueError(
                f"`load_mock_galaxy`: {path!r} is not in the diffgal star-particle format "
                f"(root attribute format={FORMAT_NAME!r}, version {FORMAT_VERSION}, group "
                "`/stars`)."
            )
        g = f["stars"]
        arrays = {k: np.asarray(g[k]) for k in ("position", "velocity", "mass")}
        if "birth_quantile" in g:
            u, t = np.asarray(g["birth_quantile"]), None
            age = float(f.attrs["age_gyr"])
        elif "birth_time" in g:
            u, t = None, np.asarray(g["birth_time"])
            age = float(f.attrs["age_gyr"])
        else:
            ages = np.asarray(g["age"])
            if not np.all(np.isfinite(ages)):
                raise ValueError(
                    f"`load_mock_galaxy`: {path!r} has neither `birth_quantile` nor "
                    "`birth_time`, and its `age` column is not finite."
                )
            age = float(np.ceil(ages.max() * 100) / 100)
            u, t = None, age - ages
        meta = json.loads(f.attrs["meta"]) if "meta" in f.attrs else {}
    del meta
    return MockGalaxy(
        **{k: jnp.asarray(v) for k, v in arrays.items()},
        birth_quantile=None if u is None else jnp.asarray(u),
        birth_time=None if t is None else jnp.asarray(t),
        age_gyr=age,
    )
