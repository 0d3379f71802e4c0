"""The IFU render kernel: rotate, deposit onto a (spaxel, SSP node, velocity bin) grid, blur by
the PSF, contract with the template bank, convert units and apply the aperture.

The cube is linear in particle mass. Particles only ever touch the deposit grid

    W[x, y, ssp, k] = sum_i m_i w^space_{i,xy} w^ssp_{i,ssp} w^vel_{i,k}

(4 x 4 x 2 = 32 scatter-adds per particle, in chunks under `lax.scan`), and spectra exist only
at grid level: cube[x, y] = sum_{ssp,k} W[x, y, ssp, k] B[ssp, k] with the template bank B of
`_bank.py`. The chunk deposit has a custom VJP (the cotangent of a scatter-add is a gather from
the adjoint grid), so reverse mode stores only the particle inputs, never per-particle spectra:
gradient memory does not grow with the particle count beyond the O(N) inputs and cotangents.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from ..spectra import TemplateGrid, bilinear_weights
from ._bank import (
    C_KMS,
    LSUN_ERG_S,
    MPC_CM,
    gaussian_kernel_1d,
    moffat_kernel_2d,
    plan_bank,
    template_bank,
)
from ._cube import IFUCube
from ._particles import StellarParticles
from ._telescope import Telescope

SPATIAL_MODES = ("cic", "ngp")
OUTPUT_UNITS = ("flux", "lsun_per_A")
_ARCSEC_PER_RAD = 648000.0 / math.pi
_N_TRUTH = 4  # mass, light, light*v, light*v^2


def rotation_matrix(
    inclination_deg: Float[ArrayLike, ""] = 0.0, position_angle_deg: Float[ArrayLike, ""] = 0.0
) -> Float[Array, "3 3"]:
    """The rotation from the galaxy frame to the sky frame, R = R_z(PA) R_x(i).

    The galaxy frame has its disc in the (x, y) plane. The sky frame has the sky plane (x, y)
    and the line of sight +z pointing away from the observer. `inclination_deg` tilts the disc
    about the x axis (0 = face-on, 90 = edge-on with the disc along x); `position_angle_deg`
    then turns the image about the line of sight, counter-clockwise from +x to +y. Built from
    `jnp`, so it is differentiable in both angles.

    **Returns:**

    The (3, 3) matrix; sky positions are `position @ R.T`.
    """
    i = jnp.deg2rad(jnp.asarray(inclination_deg, float))
    pa = jnp.deg2rad(jnp.asarray(position_angle_deg, float))
    ci, si, cp, sp = jnp.cos(i), jnp.sin(i), jnp.cos(pa), jnp.sin(pa)
    one, zero = jnp.ones_like(ci), jnp.zeros_like(ci)
    rx = jnp.stack([jnp.stack([one, zero, zero]), jnp.stack([zero, ci, -si]),
                    jnp.stack([zero, si, ci])])
    rz = jnp.stack([jnp.stack([cp, -sp, zero]), jnp.stack([sp, cp, zero]),
                    jnp.stack([zero, zero, one])])
    return rz @ rx


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Static geometry of one deposit: hashable, closed over by the custom VJP."""

    n_x: int
    n_y: int
    margin: int
    n_x_local: int  # rows of the local grid (incl. halo)
    n_met: int
    n_ssp: int
    n_k: int
    velscale: float
    spatial: str
    mass_kind: str
    metal_kind: str
    z_sun: float

    @property
    def n_y_pad(self) -> int:
        return self.n_y + 2 * self.margin

    @property
    def grid_size(self) -> int:
        return self.n_x_local * self.n_y_pad * self.n_ssp * self.n_k


def _axis(f, n_fov: int, margin: int, spatial: str):
    """CIC (or NGP) cells and weights on one axis of the padded grid.

    `f` is the continuous cell coordinate (cell centres at integers). The particle's light stays
    on its own side of the field edge: a particle whose centre is in the field deposits only into
    field cells, one in the margin only into margin cells. So, before the PSF, the cube holds
    exactly the light of the particles whose centres are in the field.
    """
    c = jnp.floor(f + 0.5)
    if spatial == "ngp":
        i0 = c
        w1 = jnp.zeros_like(f)
    else:
        i0 = jnp.floor(f)
        w1 = f - i0
    w0 = 1.0 - w1
    i1 = i0 + 1
    npad = n_fov + 2 * margin
    lo = jnp.where(c < margin, 0, jnp.where(c < margin + n_fov, margin, margin + n_fov))
    hi = jnp.where(c < margin, margin - 1, jnp.where(c < margin + n_fov, margin + n_fov - 1,
                                                     npad - 1))
    i0 = jnp.clip(i0, lo, jnp.maximum(hi, lo))
    i1 = jnp.clip(i1, lo, jnp.maximum(hi, lo))
    in_pad = (c >= 0) & (c <= npad - 1)
    in_fov = (c >= margin) & (c < margin + n_fov)
    return i0.astype(jnp.int32), i1.astype(jnp.int32), w0, w1, in_pad, in_fov


class _Params(eqx.Module):
    """The differentiable inputs of the deposit other than the particles."""

    rotation: Array
    pixel_kpc: Array
    log_age: Array
    metal: Array
    surviving: Array | None
    light: Array  # (n_ssp,) band-mean template flux, for the light-weighted truth maps
    x_offset: Array  # global padded x index of local row 0 (spaxel sharding), as a float


def _mh(layout: _Layout, metallicity):
    if layout.metal_kind == "Z":
        return jnp.log10(metallicity / layout.z_sun)
    return metallicity


def _safe_log10_age(age):
    return jnp.log10(jnp.maximum(age, jnp.finfo(age.dtype).tiny))


def _weights(layout: _Layout, params: _Params, chunk, valid):
    """Flat indices and values of the 32 deposits per particle, and of the truth channels.

    `valid` (chunk,) is 1 for particles this chunk owns and 0 for the overlap of the last chunk.
    """
    pos, vel, mass, age, met = chunk
    dtype = mass.dtype
    pos_r = pos @ params.rotation.T.astype(dtype)
    v_los = vel @ params.rotation[2].astype(dtype)
    p = params.pixel_kpc.astype(dtype)
    m = layout.margin
    fx = pos_r[:, 0] / p + (layout.n_x / 2 - 0.5 + m)
    fy = pos_r[:, 1] / p + (layout.n_y / 2 - 0.5 + m)
    ix0, ix1, wx0, wx1, padx, _ = _axis(fx, layout.n_x, m, layout.spatial)
    iy0, iy1, wy0, wy1, pady, _ = _axis(fy, layout.n_y, m, layout.spatial)
    offset = jax.lax.stop_gradient(params.x_offset).astype(jnp.int32)
    ix0, ix1 = ix0 - offset, ix1 - offset
    okx0 = (ix0 >= 0) & (ix0 < layout.n_x_local)
    okx1 = (ix1 >= 0) & (ix1 < layout.n_x_local)
    inside = (padx & pady).astype(dtype) * valid.astype(dtype)
    sp_idx = jnp.stack(
        [ix0 * layout.n_y_pad + iy0, ix1 * layout.n_y_pad + iy0,
         ix0 * layout.n_y_pad + iy1, ix1 * layout.n_y_pad + iy1], axis=1
    )
    sp_w = jnp.stack(
        [wx0 * wy0 * okx0, wx1 * wy0 * okx1, wx0 * wy1 * okx0, wx1 * wy1 * okx1], axis=1
    ) * inside[:, None]
    sp_ok = jnp.stack([okx0, okx1, okx0, okx1], axis=1)
    sp_idx = jnp.where(sp_ok, sp_idx, 0)
    # SSP node weights (bilinear, clamped to the grid).
    log_age = _safe_log10_age(age)
    mh = _mh(layout, met)
    idx, w_ssp, _ = jax.vmap(bilinear_weights, in_axes=(0, 0, None, None))(
        log_age, mh, params.log_age, params.metal
    )
    ssp = idx[..., 0] * layout.n_met + idx[..., 1]  # (N, 4)
    w_ssp = w_ssp.astype(dtype)
    mass_eff = mass
    if layout.mass_kind == "current":
        surv = params.surviving.reshape(-1)[ssp]
        mass_eff = mass / jnp.sum(w_ssp * surv, axis=1)
    # Velocity bins (CIC), clipped to the edge bins beyond v_max.
    half = (layout.n_k - 1) // 2
    fv = jnp.clip(v_los / layout.velscale + half, 0.0, layout.n_k - 1.0)
    k0 = jnp.clip(jnp.floor(fv), 0, max(layout.n_k - 2, 0)).astype(jnp.int32)
    tv = fv - k0
    if layout.n_k == 1:
        k0 = jnp.zeros_like(k0)
        tv = jnp.zeros_like(tv)
    k_idx = jnp.stack([k0, jnp.minimum(k0 + 1, layout.n_k - 1)], axis=1)
    k_w = jnp.stack([1.0 - tv, tv], axis=1)
    flat = ((sp_idx[:, :, None, None] * layout.n_ssp + ssp[:, None, :, None]) * layout.n_k
            + k_idx[:, None, None, :])
    vals = (mass_eff[:, None, None, None] * sp_w[:, :, None, None] * w_ssp[:, None, :, None]
            * k_w[:, None, None, :])
    # Truth channels: mass, light, light v, light v^2 with the same spatial weights.
    light = mass_eff * jnp.sum(w_ssp * params.light.astype(dtype)[ssp], axis=1)
    chan = jnp.stack([mass_eff, light, light * v_los, light * v_los**2], axis=1)
    t_flat = sp_idx[:, :, None] * _N_TRUTH + jnp.arange(_N_TRUTH)[None, None, :]
    t_vals = sp_w[:, :, None] * chan[:, None, :]
    n = mass.shape[0]
    return (flat.reshape(n, -1), t_flat.reshape(n, -1)), (vals.reshape(n, -1),
                                                          t_vals.reshape(n, -1))


def _take(arrays, i, size: int, n: int):
    """Chunk i of the particle arrays, without padding copies: the last chunk is shifted back
    to end at n, and `valid` masks the particles an earlier chunk already deposited."""
    start = jnp.minimum(i * size, n - size)
    chunk = tuple(jax.lax.dynamic_slice_in_dim(a, start, size, axis=0) for a in arrays)
    valid = (start + jnp.arange(size)) >= i * size
    return start, chunk, valid


def deposit_grid(layout: _Layout, params: _Params, arrays, chunk_size: int, dtype):
    """The deposit grid W (n_x_local, n_y_pad, n_ssp * n_k) and truth grid (..., 4)."""
    n = arrays[2].shape[0]
    size = max(1, min(chunk_size, n))
    n_chunk = -(-n // size)
    w, t = _deposit_all(layout, size, n_chunk, jnp.dtype(dtype), params, arrays)
    shape = (layout.n_x_local, layout.n_y_pad)
    return w.reshape(shape + (layout.n_ssp * layout.n_k,)), t.reshape(shape + (_N_TRUTH,))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _deposit_all(layout: _Layout, size: int, n_chunk: int, dtype, params: _Params, arrays):
    """Scatter-add all particles, chunk by chunk, into flat W and truth grids.

    The custom VJP exploits linearity: the cotangent of a scatter-add is a gather from the
    adjoint grid, and the particle cotangents come from the derivatives of the (recomputed)
    weights, chunk by chunk. The only residuals are the inputs themselves, so reverse mode
    costs O(N) for the inputs and their cotangents and nothing else per particle.
    """
    n = arrays[2].shape[0]
    w = jnp.zeros((layout.grid_size,), dtype)
    t = jnp.zeros((layout.n_x_local * layout.n_y_pad * _N_TRUTH,), dtype)

    def body(i, grids):
        _, chunk, valid = _take(arrays, i, size, n)
        (i_w, i_t), (v_w, v_t) = _weights(layout, params, chunk, valid)
        g_w, g_t = grids
        return (g_w.at[i_w].add(v_w.astype(dtype), mode="drop"),
                g_t.at[i_t].add(v_t.astype(dtype), mode="drop"))

    return jax.lax.fori_loop(0, n_chunk, body, (w, t))


def _deposit_all_fwd(layout, size, n_chunk, dtype, params, arrays):
    return _deposit_all(layout, size, n_chunk, dtype, params, arrays), (params, arrays)


def _deposit_all_bwd(layout, size, n_chunk, dtype, residuals, cotangent):
    params, arrays = residuals
    g_w, g_t = cotangent
    n = arrays[2].shape[0]

    def body(i, carry):
        g_params, g_arrays = carry
        start, chunk, valid = _take(arrays, i, size, n)
        (i_w, i_t), _ = _weights(layout, params, chunk, valid)
        gathered = (g_w.at[i_w].get(mode="fill", fill_value=0),
                    g_t.at[i_t].get(mode="fill", fill_value=0))
        _, vjp = jax.vjp(lambda prm, ch: _weights(layout, prm, ch, valid)[1], params, chunk)
        d_params, d_chunk = vjp(tuple(g.astype(chunk[2].dtype) for g in gathered))
        g_params = jax.tree.map(jnp.add, g_params, d_params)
        g_arrays = tuple(
            jax.lax.dynamic_update_slice_in_dim(
                a, jax.lax.dynamic_slice_in_dim(a, start, size, axis=0) + d, start, axis=0
            )
            for a, d in zip(g_arrays, d_chunk, strict=True)
        )
        return g_params, g_arrays

    zeros = (jax.tree.map(jnp.zeros_like, params), tuple(jnp.zeros_like(a) for a in arrays))
    return jax.lax.fori_loop(0, n_chunk, body, zeros)


_deposit_all.defvjp(_deposit_all_fwd, _deposit_all_bwd)


def _convolve_axis(x, kernel: tuple, axis: int):
    half = (len(kernel) - 1) // 2
    if half == 0:
        return x
    pad = [(0, 0)] * x.ndim
    pad[axis] = (half, half)
    xp = jnp.pad(x, pad)
    n = x.shape[axis]
    out = jnp.zeros_like(x)
    for d, k in enumerate(kernel):
        out = out + k * jax.lax.slice_in_dim(xp, d, d + n, axis=axis)
    return out


def apply_psf(x, psf: tuple):
    """Convolve the two leading (spatial) axes with the PSF, described as a static tuple:
    `("none",)`, `("gaussian", kernel_1d)` or `("moffat", kernel_2d_rows)`."""
    kind = psf[0]
    if kind == "none":
        return x
    if kind == "gaussian":
        return _convolve_axis(_convolve_axis(x, psf[1], 0), psf[1], 1)
    kernel = np.asarray(psf[1])
    half = (kernel.shape[0] - 1) // 2
    xp = jnp.pad(x, [(half, half), (half, half)] + [(0, 0)] * (x.ndim - 2))
    nx, ny = x.shape[:2]
    out = jnp.zeros_like(x)
    for a in range(kernel.shape[0]):
        for b in range(kernel.shape[1]):
            out = out + float(kernel[a, b]) * xp[a : a + nx, b : b + ny]
    return out


def _psf_spec(telescope: Telescope) -> tuple[tuple, int]:
    """The static PSF description and its half-width in pixels."""
    if telescope.psf == "none":
        return ("none",), 0
    fwhm_px = telescope.psf_fwhm_arcsec / telescope.pixel_arcsec
    if telescope.psf == "gaussian":
        kernel = gaussian_kernel_1d(fwhm_px / (2.0 * math.sqrt(2.0 * math.log(2.0))))
        return ("gaussian", tuple(float(k) for k in kernel)), (kernel.size - 1) // 2
    kernel = moffat_kernel_2d(fwhm_px, telescope.psf_beta)
    return ("moffat", tuple(tuple(float(v) for v in row) for row in kernel)), (
        kernel.shape[0] - 1
    ) // 2


@typing.final
class IFURenderer(eqx.Module):
    """A configured IFU renderer: a telescope, a template bank and an observation geometry.

    Build it with [`diffgal.ifu.make_renderer`][] (which precomputes the template bank on the
    host), then call it on particles; the call is pure and jittable, and `jax.grad` flows to
    particle masses, ages, metallicities, velocities and positions, and to the array fields
    here (`rotation`, `pixel_kpc`, `flux_factor`, `bank`).

    **Fields:** `bank` (n_ssp * n_k, n_wave) the template bank in L_sun/Å per M_sun (per
    observed Å); `light` (n_ssp,) band-mean template flux for light weights; `log_age`,
    `metal`, `surviving` the grid axes and surviving-mass fraction; `rotation` (3, 3);
    `pixel_kpc` the spaxel size in kpc; `flux_factor` the conversion from L_sun/Å to the output
    unit; `wavelength` (n_wave,) Å; `mask` (n_x, n_y) the aperture. Static: `telescope`, `n_k`,
    `velscale` (km/s), `spatial`, `chunk_size`, `margin`, `psf`, `unit`, `medium`, `z_sun`,
    `n_met`, `meta`.
    """

    bank: Float[Array, "n_chan n_wave"]
    light: Float[Array, " n_ssp"]
    log_age: Float[Array, " n_age"]
    metal: Float[Array, " n_met"]
    surviving: Float[Array, "n_age n_met"] | None
    rotation: Float[Array, "3 3"]
    pixel_kpc: Float[Array, ""]
    flux_factor: Float[Array, ""]
    wavelength: Float[Array, " n_wave"]
    mask: Bool[Array, "n_x n_y"]
    telescope: Telescope = eqx.field(static=True)
    n_k: int = eqx.field(static=True)
    velscale: float = eqx.field(static=True)
    spatial: str = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)
    margin: int = eqx.field(static=True)
    psf: tuple = eqx.field(static=True)
    unit: str = eqx.field(static=True)
    z_sun: float = eqx.field(static=True)
    n_met: int = eqx.field(static=True)
    meta: tuple = eqx.field(static=True)

    @property
    def n_ssp(self) -> int:
        return int(self.light.shape[0])

    @property
    def v_max(self) -> float:
        return (self.n_k - 1) // 2 * self.velscale

    def layout(self, particles: StellarParticles, n_x_local: int | None = None) -> _Layout:
        tel = self.telescope
        return _Layout(
            n_x=tel.n_x,
            n_y=tel.n_y,
            margin=self.margin,
            n_x_local=tel.n_x + 2 * self.margin if n_x_local is None else n_x_local,
            n_met=self.n_met,
            n_ssp=self.n_ssp,
            n_k=self.n_k,
            velscale=self.velscale,
            spatial=self.spatial,
            mass_kind=particles.mass_kind,
            metal_kind=particles.metal_kind,
            z_sun=self.z_sun,
        )

    def params(self, x_offset=0) -> _Params:
        return _Params(self.rotation, self.pixel_kpc, self.log_age, self.metal,
                       self.surviving, self.light,
                       jnp.asarray(x_offset, self.bank.dtype))

    def __call__(self, particles: StellarParticles) -> IFUCube:
        """Render `particles` into a noiseless cube (single device).

        For several devices use [`diffgal.ifu.render_sharded`][]; for noise,
        [`diffgal.ifu.add_noise`][].
        """
        from ._particles import traced_check_particles

        token = traced_check_particles(particles, "IFURenderer")
        self = eqx.tree_at(lambda r: r.rotation, self, self.rotation + token.astype(
            self.rotation.dtype))
        layout = self.layout(particles)
        w, t = self.deposit(particles, layout)
        w, t = self.blur_and_crop(w, t, layout.margin, self.telescope.n_x)
        cube = self.synthesise(w, self.mask)
        return self.finish(cube, t, self.diagnostics(particles))

    # -- stages, reused by the sharded paths ------------------------------------------------

    def deposit(self, particles: StellarParticles, layout: _Layout, x_offset=0):
        if particles.mass_kind == "current" and self.surviving is None:
            raise ValueError(
                "`IFURenderer`: particles have `mass_kind='current'`, but the templates have no "
                "surviving-mass fraction to convert them to initial masses. Pass initial masses "
                "or use templates with `surviving_mass_fraction` (e.g. E-MILES)."
            )
        arrays = (particles.position, particles.velocity, particles.mass, particles.age,
                  particles.metallicity)
        dtype = self.bank.dtype
        arrays = tuple(jnp.asarray(a, jnp.result_type(a, dtype)) for a in arrays)
        return deposit_grid(layout, self.params(x_offset), arrays, self.chunk_size, dtype)

    def blur_and_crop(self, w, t, start: int, n_rows: int):
        w = apply_psf(w, self.psf)
        t = apply_psf(t, self.psf)
        m = self.margin
        w = w[start : start + n_rows, m : m + self.telescope.n_y]
        t = t[start : start + n_rows, m : m + self.telescope.n_y]
        return w, t

    def synthesise(self, w, mask):
        n_rows, n_y, n_chan = w.shape
        cube = jnp.dot(w.reshape(n_rows * n_y, n_chan), self.bank,
                       precision=jax.lax.Precision.HIGHEST)
        cube = cube.reshape(n_rows, n_y, -1) * self.flux_factor.astype(cube.dtype)
        return jnp.where(mask[:, :, None], cube, 0.0)

    def finish(self, cube, t, diagnostics) -> IFUCube:
        t = jnp.where(self.mask[:, :, None], t, 0.0)
        mass, light, lv, lv2 = (t[..., i] for i in range(_N_TRUTH))
        has = light > 0
        safe = jnp.where(has, light, 1.0)
        v = lv / safe
        var = jnp.maximum(lv2 / safe - v**2, 0.0)
        sigma = jnp.sqrt(jnp.where(has & (var > 0), var, 1.0)) * (var > 0)
        nan = jnp.asarray(jnp.nan, v.dtype)
        n_clamped, clipped_mass, n_out = diagnostics
        return IFUCube(
            flux=cube,
            wavelength=self.wavelength,
            variance=None,
            mask=self.mask,
            mass_map=mass,
            velocity_map=jnp.where(has, v, nan),
            dispersion_map=jnp.where(has, sigma, nan),
            n_clamped=n_clamped,
            clipped_velocity_mass=clipped_mass,
            n_outside_fov=n_out,
            unit=self.unit,
            medium=self.telescope.medium,
            pixel_arcsec=self.telescope.pixel_arcsec,
            pixel_kpc=float(dict(self.meta)["pixel_kpc"]),
            meta=self.meta,
        )

    def diagnostics(self, particles: StellarParticles):
        """(clamped count, velocity-clipped mass, count outside the field), no gradients."""
        p = jax.lax.stop_gradient(particles)
        layout = self.layout(p)
        rot = jax.lax.stop_gradient(self.rotation)
        pos_r = p.position @ rot.T
        v_los = p.velocity @ rot[2]
        pix = jax.lax.stop_gradient(self.pixel_kpc)
        half_x = self.telescope.n_x / 2 * pix
        half_y = self.telescope.n_y / 2 * pix
        # The field test matches the deposit's NGP-cell rule.
        cx = jnp.floor(pos_r[:, 0] / pix + self.telescope.n_x / 2)
        cy = jnp.floor(pos_r[:, 1] / pix + self.telescope.n_y / 2)
        del half_x, half_y
        in_fov = (cx >= 0) & (cx < self.telescope.n_x) & (cy >= 0) & (cy < self.telescope.n_y)
        mh = _mh(layout, p.metallicity)
        la = _safe_log10_age(p.age)
        out = ((la < self.log_age[0]) | (la > self.log_age[-1]) | (mh < self.metal[0])
               | (mh > self.metal[-1]))
        live = p.mass > 0
        clipped = jnp.abs(v_los) > self.v_max
        return (jnp.sum(out & live, dtype=jnp.int32),
                jnp.sum(jnp.where(clipped, p.mass, 0.0)),
                jnp.sum(~in_fov & live, dtype=jnp.int32))


def default_velscale(telescope: Telescope) -> float:
    """Half the telescope's finest pixel in velocity, capped at 30 km/s, floored to 0.5 km/s."""
    edges = telescope.wave_edges()
    dv = C_KMS * np.min(np.diff(edges) / telescope.wavelength())
    return float(min(30.0, math.floor(dv / 2.0 * 2.0) / 2.0))


def default_v_max(particles: StellarParticles, rotation, pixel_kpc: float,
                  telescope: Telescope) -> float:
    """The 99.9th percentile of |v_los| of particles in the field, rounded up to 50 km/s."""
    pos = np.asarray(particles.position, np.float64) @ np.asarray(rotation, np.float64).T
    v = np.asarray(particles.velocity, np.float64) @ np.asarray(rotation, np.float64)[2]
    half = np.array([telescope.n_x, telescope.n_y]) / 2 * pixel_kpc
    inside = (np.abs(pos[:, 0]) < half[0]) & (np.abs(pos[:, 1]) < half[1])
    inside &= np.asarray(particles.mass) > 0
    if not inside.any():
        return 50.0
    q = float(np.percentile(np.abs(v[inside]), 99.9))
    return float(max(50.0, 50.0 * math.ceil(q / 50.0 + 1e-12)))


def _unit_string(output_units: str, flux_scale: float) -> str:
    if output_units == "lsun_per_A":
        return "solLum/Angstrom"
    if flux_scale == 1.0:
        return "erg/s/cm**2/Angstrom"
    exponent = math.log10(flux_scale)
    if abs(exponent - round(exponent)) < 1e-12:
        return f"10**({int(round(exponent))})*erg/s/cm**2/Angstrom"
    return f"{flux_scale:.6g}*erg/s/cm**2/Angstrom"


def _medium_matched_wave(grid: TemplateGrid, telescope: Telescope) -> np.ndarray:
    wave = np.asarray(grid.wave_aa, np.float64)
    if grid.medium == telescope.medium:
        return wave
    from ..spectra import air_to_vacuum, vacuum_to_air

    return air_to_vacuum(wave) if telescope.medium == "vacuum" else vacuum_to_air(wave)


def make_renderer(
    telescope: Telescope,
    templates: TemplateGrid,
    *,
    distance_mpc: float | None = 10.0,
    redshift: float | None = None,
    rotation: ArrayLike | None = None,
    inclination_deg: float = 0.0,
    position_angle_deg: float = 0.0,
    velscale: float | None = None,
    v_max: float = 800.0,
    spatial: str = "cic",
    chunk_size: int = 16384,
    output_units: str = "flux",
    flux_scale: float = 1e-20,
    dtype=None,
    ra_deg: float = 150.0,
    dec_deg: float = 2.0,
    cosmology: dict | None = None,
) -> IFURenderer:
    """Precompute everything a render needs that does not depend on the particles.

    **Arguments:**

    - `telescope`: a [`Telescope`][diffgal.ifu.Telescope].
    - `templates`: a [`TemplateGrid`][diffgal.spectra.TemplateGrid].
    - `distance_mpc`: the distance for a nearby galaxy (z = 0: d_L = d_A = d, no redshift).
    - `redshift`: if given, the spectra are redshifted by (1 + z) and d_L, d_A come from the
        flat ΛCDM `cosmology` (default Planck15); then leave `distance_mpc` at its default.
    - `rotation`: a (3, 3) rotation matrix to the sky frame, or `None` to build it from
        `inclination_deg` and `position_angle_deg` (see [`rotation_matrix`][]).
    - `velscale`: velocity-bin width in km/s (default: half the telescope's finest pixel in
        velocity, capped at 30; MUSE: 20).
    - `v_max`: the velocity grid covers ±`v_max` km/s (rounded up to whole bins); mass beyond
        it goes to the edge bin and is reported as `clipped_velocity_mass`.
    - `spatial`: `"cic"` (area-weighted, default; continuous in position) or `"ngp"`.
    - `chunk_size`: particles per deposit chunk.
    - `output_units`: `"flux"` (erg/s/cm²/Å at the observer divided by `flux_scale`) or
        `"lsun_per_A"` (L_sun per rest-frame Å per spaxel).
    - `flux_scale`: the flux unit in erg/s/cm²/Å; the default 1e-20 is MUSE's
        `10**(-20)*erg/s/cm**2/Angstrom` and keeps float32 gradients out of the subnormal range
        (with 1, cotangents of a nearby galaxy's cube fall below 1e-37). `render` uses 1.
    - `dtype`: float dtype of the bank and cube (default: JAX's default float).
    - `ra_deg`, `dec_deg`: the sky position of the field centre (for the WCS).
    - `cosmology`: keyword arguments for
        [`luminosity_distance_mpc`][diffgal.ifu.luminosity_distance_mpc] (default Planck15).

    **Returns:**

    An [`IFURenderer`][diffgal.ifu.IFURenderer].
    """
    from ._cosmology import angular_diameter_distance_mpc, luminosity_distance_mpc

    api = "make_renderer"
    if not isinstance(telescope, Telescope):
        raise TypeError(f"`{api}`: `telescope` must be a `Telescope`; got {type(telescope)}.")
    if not isinstance(templates, TemplateGrid):
        raise TypeError(
            f"`{api}`: `templates` must be a `diffgal.spectra.TemplateGrid`; got "
            f"{type(templates).__name__}. Load one with `diffgal.spectra.load_templates()`."
        )
    if spatial not in SPATIAL_MODES:
        raise ValueError(f"`{api}`: `spatial` must be one of {SPATIAL_MODES}; got {spatial!r}.")
    if output_units not in OUTPUT_UNITS:
        raise ValueError(
            f"`{api}`: `output_units` must be one of {OUTPUT_UNITS}; got {output_units!r}."
        )
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"`{api}`: `chunk_size` must be a positive int; got {chunk_size!r}.")
    if not flux_scale > 0:
        raise ValueError(f"`{api}`: `flux_scale` must be > 0; got {flux_scale!r}.")
    dtype = jnp.dtype(dtype) if dtype is not None else jnp.result_type(float)
    cosmology = dict(cosmology or {})
    if redshift is None:
        if distance_mpc is None or not (float(distance_mpc) > 0):
            raise ValueError(
                f"`{api}`: `distance_mpc` must be a positive distance in Mpc when no "
                f"`redshift` is given; got {distance_mpc!r}."
            )
        z = 0.0
        d_l = d_a = float(distance_mpc)
    else:
        z = float(redshift)
        if not z > 0:
            raise ValueError(
                f"`{api}`: `redshift` must be > 0; got {redshift!r}. For a nearby galaxy pass "
                f"`distance_mpc` instead."
            )
        d_l = float(luminosity_distance_mpc(z, **cosmology))
        d_a = float(angular_diameter_distance_mpc(z, **cosmology))
    pixel_kpc = telescope.pixel_arcsec / _ARCSEC_PER_RAD * d_a * 1e3
    velscale = default_velscale(telescope) if velscale is None else float(velscale)
    if not velscale > 0:
        raise ValueError(f"`{api}`: `velscale` must be > 0 km/s; got {velscale!r}.")
    if not v_max > 0:
        raise ValueError(f"`{api}`: `v_max` must be > 0 km/s; got {v_max!r}.")
    half = max(1, int(math.ceil(v_max / velscale - 1e-9)))
    n_k = 2 * half + 1
    plan = plan_bank(
        _medium_matched_wave(templates, telescope),
        None if templates.fwhm_aa is None else np.asarray(templates.fwhm_aa),
        telescope.wave_edges(),
        telescope.lsf_fwhm_aa,
        z,
        velscale,
        n_k,
        api=api,
    )
    flux = np.asarray(templates.flux, np.float64)
    n_age, n_met, _ = flux.shape
    flux_cut = jnp.asarray(flux.reshape(n_age * n_met, -1)[:, plan.cut])
    bank = _bank_jit(flux_cut, plan, dtype)
    dw = plan.dwave_obs
    light = np.asarray(bank.reshape(n_age * n_met, n_k, -1)[:, half], np.float64) @ dw / dw.sum()
    if output_units == "flux":
        factor = LSUN_ERG_S / (4.0 * math.pi * (d_l * MPC_CM) ** 2) / flux_scale
    else:
        factor = 1.0 + z
    psf, psf_half = _psf_spec(telescope)
    margin = psf_half + 1
    angles_given = rotation is None
    rotation = (rotation_matrix(inclination_deg, position_angle_deg) if angles_given
                else jnp.asarray(rotation))
    if jnp.shape(rotation) != (3, 3):
        raise ValueError(f"`{api}`: `rotation` must be a (3, 3) matrix; got {jnp.shape(rotation)}.")
    meta = (
        ("telescope", telescope.name),
        ("templates", templates.name),
        ("template_licence", templates.licence),
        ("redshift", z),
        ("distance_mpc", d_l),
        ("angular_distance_mpc", d_a),
        ("pixel_kpc", pixel_kpc),
        ("velscale_kms", velscale),
        ("v_max_kms", half * velscale),
        ("spatial", spatial),
        ("lsf_fwhm_requested_aa", telescope.lsf_fwhm_aa),
        ("lsf_fwhm_effective_aa", plan.lsf_fwhm_effective_aa),
        ("lsf_clipped_fraction", plan.lsf_clipped_fraction),
        ("psf", telescope.psf),
        ("psf_fwhm_arcsec", telescope.psf_fwhm_arcsec),
        ("inclination_deg", float(inclination_deg) if angles_given else None),
        ("position_angle_deg", float(position_angle_deg) if angles_given else None),
        ("rotation", "angles" if angles_given else "matrix"),
        ("ra_deg", float(ra_deg)),
        ("dec_deg", float(dec_deg)),
        ("wave_sampling", telescope.wave_sampling),
        ("wave_start_aa", telescope.wave_start_aa),
        ("dwave_aa", telescope.dwave_aa),
        ("dlog10_wave", telescope.dlog10_wave),
        ("output_units", output_units),
        ("flux_scale", flux_scale),
    )
    surviving = templates.surviving_mass_fraction
    return IFURenderer(
        bank=bank,
        light=jnp.asarray(light, dtype),
        log_age=jnp.asarray(templates.log_age_gyr, dtype),
        metal=jnp.asarray(templates.metallicity_mh, dtype),
        surviving=None if surviving is None else jnp.asarray(surviving, dtype),
        rotation=jnp.asarray(rotation, dtype),
        pixel_kpc=jnp.asarray(pixel_kpc, dtype),
        flux_factor=jnp.asarray(factor, dtype),
        wavelength=jnp.asarray(telescope.wavelength(), dtype),
        mask=jnp.asarray(telescope.aperture_mask()),
        telescope=telescope,
        n_k=n_k,
        velscale=velscale,
        spatial=spatial,
        chunk_size=chunk_size,
        margin=margin,
        psf=psf,
        unit=_unit_string(output_units, flux_scale),
        z_sun=float(templates.z_sun),
        n_met=n_met,
        meta=meta,
    )


def _bank_jit(flux_cut, plan, dtype):
    """Build the bank in float64 when available (host precision), then cast."""
    with jax.enable_x64(True):  # scoped to this block; the global flag is untouched
        flux64 = jnp.asarray(np.asarray(flux_cut), jnp.float64)
        bank = jax.jit(template_bank, static_argnums=(1, 2))(flux64, _HashablePlan(plan),
                                                            jnp.dtype(dtype))
        bank = np.asarray(bank)
    return jnp.asarray(bank, dtype)


class _HashablePlan:
    """Wrap a BankPlan so it can be a static jit argument (hashed by identity)."""

    def __init__(self, plan):
        self._plan = plan

    def __getattr__(self, name):
        return getattr(self._plan, name)

    def __hash__(self):
        return id(self._plan)

    def __eq__(self, other):
        return isinstance(other, _HashablePlan) and other._plan is self._plan
