"""Multi-device rendering with `jax.shard_map`: partition -> shard_map -> combine.

- `mode="particles"` (default): particles are split over the devices. Each device deposits its
  share into a local deposit grid and applies the (linear) PSF to it; `lax.psum_scatter` sums
  the shares and leaves each device a block of spaxel rows, which it synthesises with no further
  communication. The cube comes back row-sharded.
- `mode="spaxels"`: for wide fields (MUSE_WFM) whose deposit grid would not fit on one device.
  Each device owns n_x / n_dev rows of spaxels plus a halo of the PSF radius, and deposits only
  the particles that land there (all particles are visited; the deposit is cheap next to the
  synthesis), so no device ever holds the full grid. No communication is needed.

Noise is never drawn inside `shard_map`: apply [`diffgal.ifu.add_noise`][] to the result, which
gives bit-identical noise for any device count.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from ._cube import IFUCube
from ._particles import StellarParticles, traced_check_particles
from ._render import IFURenderer

AXIS = "particles"
SHARDING_MODES = ("particles", "spaxels")


def make_mesh(n_devices: int | None = None, axis_name: str = AXIS) -> jax.sharding.Mesh:
    """A 1-D device mesh over the first `n_devices` devices (default: all)."""
    available = len(jax.devices())
    n = available if n_devices is None else int(n_devices)
    if not 1 <= n <= available:
        raise ValueError(
            f"`make_mesh`: `n_devices` must be between 1 and the {available} available "
            f"devices; got {n_devices!r}. On a CPU, fake devices with "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax."
        )
    return jax.make_mesh((n,), (axis_name,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices()[:n])


def _pad_particles(p: StellarParticles, multiple: int) -> StellarParticles:
    n = p.mass.shape[0]
    pad = (-n) % multiple
    if pad == 0:
        return p
    return jax.tree.map(lambda a: jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)), p)


def render_sharded(
    renderer: IFURenderer,
    particles: StellarParticles,
    *,
    mesh: jax.sharding.Mesh | None = None,
    mode: str = "particles",
) -> IFUCube:
    """Render on several devices; the result equals `renderer(particles)` to rounding.

    **Arguments:**

    - `renderer`: an [`IFURenderer`][diffgal.ifu.IFURenderer].
    - `particles`: [`StellarParticles`][diffgal.ifu.StellarParticles].
    - `mesh`: a 1-D mesh (default: [`make_mesh`][diffgal.ifu.make_mesh]() over all devices).
    - `mode`: `"particles"` or `"spaxels"` (see the module notes).

    **Returns:**

    The noiseless [`IFUCube`][diffgal.ifu.IFUCube], its `flux` sharded over spaxel rows.

    **Raises:** `ValueError` for an unknown mode, or for `mode="spaxels"` when `n_x` is not
    a multiple of the device count.
    """
    if mode not in SHARDING_MODES:
        raise ValueError(
            f"`render_sharded`: `mode` must be one of {SHARDING_MODES}; got {mode!r}."
        )
    mesh = make_mesh() if mesh is None else mesh
    if len(mesh.axis_names) != 1:
        raise ValueError(
            f"`render_sharded`: `mesh` must be 1-D; got axes {mesh.axis_names}. Build one "
            "with `diffgal.ifu.make_mesh(n_devices)`."
        )
    axis = mesh.axis_names[0]
    n_dev = mesh.size
    tel = renderer.telescope
    if mode == "spaxels" and tel.n_x % n_dev:
        raise ValueError(
            f"`render_sharded`: spaxel sharding splits the {tel.n_x} spaxel rows of "
            f"{tel.name!r} over {n_dev} devices, which needs n_x to be a multiple of the device "
            f"count. Use {', '.join(str(d) for d in range(1, n_dev + 1) if tel.n_x % d == 0)} "
            "devices, a telescope with a divisible n_x, or mode='particles'."
        )
    token = traced_check_particles(particles, "render_sharded")
    renderer = eqx.tree_at(lambda r: r.rotation, renderer,
                           renderer.rotation + token.astype(renderer.rotation.dtype))
    diagnostics = renderer.diagnostics(particles)
    if mode == "particles":
        cube, t = _particle_mode(renderer, particles, mesh, axis, n_dev)
    else:
        cube, t = _spaxel_mode(renderer, particles, mesh, axis, n_dev)
    return renderer.finish(cube, t, diagnostics)


def _particle_mode(renderer, particles, mesh, axis, n_dev):
    tel = renderer.telescope
    chunk = min(renderer.chunk_size, max(1, -(-particles.mass.shape[0] // n_dev)))
    padded = _pad_particles(particles, n_dev * chunk)
    padded = jax.tree.map(
        lambda a: jax.device_put(a, NamedSharding(mesh, P(axis, *([None] * (a.ndim - 1))))),
        padded,
    )
    rows = -(-tel.n_x // n_dev) * n_dev
    mask = jnp.pad(renderer.mask, [(0, rows - tel.n_x), (0, 0)])
    layout = renderer.layout(particles)

    def local(r, p, mask):
        w, t = r.deposit(p, layout)
        w, t = r.blur_and_crop(w, t, r.margin, tel.n_x)
        w = jnp.pad(w, [(0, rows - tel.n_x), (0, 0), (0, 0)])
        w = jax.lax.psum_scatter(w, axis, scatter_dimension=0, tiled=True)
        t = jax.lax.psum(t, axis)
        tile = rows // n_dev
        d = jax.lax.axis_index(axis)
        m = jax.lax.dynamic_slice_in_dim(mask, d * tile, tile, axis=0)
        return r.synthesise(w, m), t

    spec_p = jax.tree.map(lambda a: P(axis, *([None] * (a.ndim - 1))), padded)
    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(), spec_p, P()),
        out_specs=(P(axis, None, None), P()),
        check_vma=False,
    )
    cube, t = fn(renderer, padded, mask)
    return (cube if rows == tel.n_x else cube[: tel.n_x]), t


def _spaxel_mode(renderer, particles, mesh, axis, n_dev):
    tel = renderer.telescope
    tile = tel.n_x // n_dev
    m = renderer.margin
    layout = renderer.layout(particles, n_x_local=tile + 2 * m)

    def local(r, p, mask):
        d = jax.lax.axis_index(axis)
        w, t = r.deposit(p, layout, x_offset=d * tile)
        w, t = r.blur_and_crop(w, t, m, tile)
        return r.synthesise(w, mask), t

    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(), P(), P(axis, None)),
        out_specs=(P(axis, None, None), P(axis, None, None)),
        check_vma=False,
    )
    return fn(renderer, particles, renderer.mask)

