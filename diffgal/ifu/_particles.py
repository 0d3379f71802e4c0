"""Star particles: the container, input checks and the HDF5 star-particle format."""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

PARTICLE_KEYS = ("position", "velocity", "mass", "age", "metallicity")
_UNITS = {
    "position": "kpc",
    "velocity": "km/s",
    "mass": "Msun",
    "age": "Gyr",
    "metallicity": "[M/H] (dex)",
}
_MASS_KINDS = ("initial", "current")
_METAL_KINDS = ("MH", "Z")
FORMAT_NAME = "diffgal-star-particles"
FORMAT_VERSION = 1


@typing.final
class StellarParticles(eqx.Module):
    """Star particles in a galaxy-centred frame.

    **Fields:**

    - `position`: (n_star, 3) kpc, centred on the galaxy.
    - `velocity`: (n_star, 3) km/s, in the galaxy rest frame.
    - `mass`: (n_star,) M_sun; *initial* (formed) mass unless `mass_kind="current"`.
    - `age`: (n_star,) Gyr.
    - `metallicity`: (n_star,) [M/H] in dex, or metal mass fraction Z if `metal_kind="Z"`.
    - `mass_kind`: `"initial"` (default) or `"current"` (static). Templates are per unit initial
        mass, so current masses are divided by the grid's surviving-mass fraction.
    - `metal_kind`: `"MH"` (default) or `"Z"` (static). Z converts to [M/H] as log10(Z/Z_sun)
        with the template grid's Z_sun.

    Shapes are checked at construction (`ValueError` naming the field). Values (NaN, negative
    masses or ages) are checked by the renderer.
    """

    position: Float[Array, "n_star 3"]
    velocity: Float[Array, "n_star 3"]
    mass: Float[Array, " n_star"]
    age: Float[Array, " n_star"]
    metallicity: Float[Array, " n_star"]
    mass_kind: str = eqx.field(static=True, default="initial")
    metal_kind: str = eqx.field(static=True, default="MH")

    def __check_init__(self):
        n = jnp.shape(self.mass)
        for name in ("position", "velocity"):
            shape = jnp.shape(getattr(self, name))
            if len(shape) != 2 or shape[1] != 3:
                raise ValueError(
                    f"`StellarParticles`: `{name}` must have shape (n_star, 3); got {shape}. "
                    f"Stack the x, y, z components as columns."
                )
        if len(n) != 1:
            raise ValueError(
                f"`StellarParticles`: `mass` must be 1-D (n_star,); got shape {n}. Flatten it."
            )
        lengths = {k: jnp.shape(getattr(self, k))[0] for k in PARTICLE_KEYS}
        for name in ("age", "metallicity"):
            if jnp.ndim(getattr(self, name)) != 1:
                raise ValueError(
                    f"`StellarParticles`: `{name}` must be 1-D (n_star,); got shape "
                    f"{jnp.shape(getattr(self, name))}."
                )
        if len(set(lengths.values())) != 1:
            raise ValueError(
                "`StellarParticles`: particle arrays must share their first axis (one entry per "
                f"star); got lengths {lengths}. Check that every array comes from the same "
                "particle selection."
            )
        if self.mass_kind not in _MASS_KINDS:
            raise ValueError(
                f"`StellarParticles`: `mass_kind` must be one of {_MASS_KINDS}; got "
                f"{self.mass_kind!r}."
            )
        if self.metal_kind not in _METAL_KINDS:
            raise ValueError(
                f"`StellarParticles`: `metal_kind` must be one of {_METAL_KINDS}; got "
                f"{self.metal_kind!r}."
            )

    @property
    def n_star(self) -> int:
        return int(jnp.shape(self.mass)[0])


def as_particles(particles, *, mass_kind: str = "initial", metal_kind: str = "MH"):
    """Convert a mapping with keys `position`, `velocity`, `mass`, `age`, `metallicity` (or a
    [`StellarParticles`][diffgal.ifu.StellarParticles]) into `StellarParticles`.

    **Raises:** `TypeError` for other inputs; `ValueError` naming a missing or mis-shaped key.
    """
    if isinstance(particles, StellarParticles):
        return particles
    if not isinstance(particles, Mapping):
        raise TypeError(
            "`particles` must be a mapping with keys "
            f"{list(PARTICLE_KEYS)} or a `diffgal.ifu.StellarParticles`; got "
            f"{type(particles).__name__}."
        )
    missing = [k for k in PARTICLE_KEYS if k not in particles]
    if missing:
        raise ValueError(
            f"`particles` lacks the keys {missing}; expected {list(PARTICLE_KEYS)} with units "
            f"{_UNITS}. Rename your arrays to these keys."
        )
    return StellarParticles(
        **{k: jnp.asarray(particles[k]) for k in PARTICLE_KEYS},
        mass_kind=particles.get("mass_kind", mass_kind),
        metal_kind=particles.get("metal_kind", metal_kind),
    )


def _is_concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def host_check_particles(p: StellarParticles, api: str = "render") -> None:
    """Value checks on concrete particles, raising `ValueError` that names the field and the
    offending indices. (Under `jit` the same checks run as `eqx.error_if`.)"""
    arrays = [getattr(p, k) for k in PARTICLE_KEYS]
    if not _is_concrete(*arrays):
        return
    for name in PARTICLE_KEYS:
        values = np.asarray(getattr(p, name))
        bad = ~np.isfinite(values)
        if bad.any():
            rows = np.flatnonzero(bad.reshape(values.shape[0], -1).any(axis=1))
            raise ValueError(
                f"`{api}`: particle `{name}` has {rows.size} non-finite (NaN or inf) entries, "
                f"first at indices {rows[:5].tolist()}. Drop or repair those particles."
            )
    mass = np.asarray(p.mass)
    if (mass < 0).any():
        rows = np.flatnonzero(mass < 0)
        raise ValueError(
            f"`{api}`: particle `mass` must be >= 0 M_sun; got {rows.size} negative masses, "
            f"first at indices {rows[:5].tolist()} (e.g. {mass[rows[0]]:.4g}). Drop them or "
            f"take absolute values if the sign is an artefact."
        )
    age = np.asarray(p.age)
    if (age < 0).any():
        rows = np.flatnonzero(age < 0)
        raise ValueError(
            f"`{api}`: particle `age` must be >= 0 Gyr; got {rows.size} negative ages, first at "
            f"indices {rows[:5].tolist()}. Ages are lookback times since formation, in Gyr."
        )
    if p.metal_kind == "Z" and (np.asarray(p.metallicity) <= 0).any():
        raise ValueError(
            f"`{api}`: with `metal_kind='Z'` the `metallicity` (metal mass fraction) must be "
            f"> 0; got {int((np.asarray(p.metallicity) <= 0).sum())} non-positive values."
        )


def traced_check_particles(p: StellarParticles, api: str = "render"):
    """The same checks as `host_check_particles`, as `eqx.error_if` (usable under `jit`).

    Returns a zero scalar "token" carrying the checks; the caller must use it (e.g. add it to a
    small array it needs), so the checks run. Checking through a scalar, rather than passing
    every particle array through `error_if`, avoids a copy of all N particles.
    """
    token = jnp.zeros((), jnp.result_type(p.mass, float))
    checks = (
        (
            ~jnp.isfinite(p.mass) | (p.mass < 0),
            f"`{api}`: particle `mass` must be finite and >= 0 M_sun.",
        ),
        (~jnp.isfinite(p.position), f"`{api}`: particle `position` has NaN or inf."),
        (~jnp.isfinite(p.velocity), f"`{api}`: particle `velocity` has NaN or inf."),
        (
            ~jnp.isfinite(p.age) | (p.age < 0),
            f"`{api}`: particle `age` must be finite and >= 0 Gyr.",
        ),
        (~jnp.isfinite(p.metallicity), f"`{api}`: particle `metallicity` has NaN or inf."),
    )
    for bad, message in checks:
        token = eqx.error_if(token, jnp.any(bad), message)
    return token


# --- HDF5 star-particle format ------------------------------------------------------------------


def save_particles_hdf5(path, particles, *, attrs: Mapping | None = None) -> None:
    """Write star particles in the diffgal HDF5 star-particle format.

    Layout (format `diffgal-star-particles`, version 1):

    - group `/stars` with datasets `position` (N, 3) kpc, `velocity` (N, 3) km/s, `mass` (N,)
      M_sun, `age` (N,) Gyr, `metallicity` (N,) [M/H] (or Z); each dataset has a `units`
      attribute;
    - `/stars` attributes `mass_kind` ("initial" or "current") and `metal_kind` ("MH" or "Z");
    - root attributes `format`, `format_version`, and optional user metadata (`attrs`, stored
      as JSON under `meta`).

    Extra per-particle datasets (for example `h_smooth` or `birth_time`) may be added by later
    writers; readers ignore what they do not know.
    """
    import h5py

    p = as_particles(particles)
    with h5py.File(os.fspath(path), "w") as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        if attrs:
            f.attrs["meta"] = json.dumps(dict(attrs), default=str)
        g = f.create_group("stars")
        g.attrs["mass_kind"] = p.mass_kind
        g.attrs["metal_kind"] = p.metal_kind
        for key in PARTICLE_KEYS:
            d = g.create_dataset(key, data=np.asarray(getattr(p, key)))
            d.attrs["units"] = (
                "Z (mass fraction)"
                if (key == "metallicity" and p.metal_kind == "Z")
                else _UNITS[key]
            )


def load_particles_hdf5(path, *, start: int = 0, stop: int | None = None) -> StellarParticles:
    """Read star particles (optionally the hyperslab `[start:stop]`) from the HDF5 format of
    [`save_particles_hdf5`][diffgal.ifu.save_particles_hdf5].

    **Raises:** `FileNotFoundError` naming the path; `ValueError` naming a missing dataset.
    """
    import h5py

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`load_particles_hdf5`: no such file {path!r}.")
    with h5py.File(path, "r") as f:
        if "stars" not in f:
            raise ValueError(
                f"`load_particles_hdf5`: {path!r} has no `/stars` group; expected the "
                f"diffgal star-particle format (see `save_particles_hdf5`)."
            )
        g = f["stars"]
        missing = [k for k in PARTICLE_KEYS if k not in g]
        if missing:
            raise ValueError(
                f"`load_particles_hdf5`: {path!r} lacks the datasets {missing} in `/stars`."
            )
        arrays = {k: np.asarray(g[k][start:stop]) for k in PARTICLE_KEYS}
        mass_kind = str(g.attrs.get("mass_kind", "initial"))
        metal_kind = str(g.attrs.get("metal_kind", "MH"))
    return StellarParticles(
        **{k: jnp.asarray(v) for k, v in arrays.items()},
        mass_kind=mass_kind,
        metal_kind=metal_kind,
    )


def n_particles_hdf5(path) -> int:
    """The number of particles in a star-particle HDF5 file, without reading them."""
    import h5py

    with h5py.File(os.fspath(path), "r") as f:
        return int(f["stars/mass"].shape[0])


def concatenate(a: StellarParticles, b: StellarParticles) -> StellarParticles:
    """The union of two particle sets (same `mass_kind` and `metal_kind`)."""
    if (a.mass_kind, a.metal_kind) != (b.mass_kind, b.metal_kind):
        raise ValueError(
            "`concatenate`: particle sets must share `mass_kind` and `metal_kind`; got "
            f"{(a.mass_kind, a.metal_kind)} and {(b.mass_kind, b.metal_kind)}."
        )
    return jax.tree.map(lambda x, y: jnp.concatenate([x, y]), a, b)
