"""The template bank: SSP templates LSF-matched, Doppler-shifted to each velocity bin and
integrated exactly over the telescope's pixels.

For velocity bin v_k the observed-frame density of a template T(λ) is T(λ/S_k)/S_k with the
stretch S_k = (1 + z) exp(v_k / c). Its mean over the observed pixel [λ_lo, λ_hi] is

    B_k = (C(λ_hi / S_k) - C(λ_lo / S_k)) / (λ_hi - λ_lo),

where C is the exact running integral of the piecewise-linear template (the trapezoid rule is
exact for it). So the bank conserves flux to rounding, reproduces a template node exactly, and
shifts by the exact Doppler factor at the bin centres; the velocity deposit interpolates
linearly between two neighbouring bins. LSF matching is one banded Gaussian operator on the
template's own wavelength grid, with column-normalised weights, so it conserves the integral.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

C_KMS = 299792.458
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
LSUN_ERG_S = 3.828e33
MPC_CM = 3.0856775814913673e24


@dataclasses.dataclass(frozen=True)
class BankPlan:
    """Host-side (numpy float64) geometry of a template bank; see `plan_bank`."""

    cut: slice  # the template wavelength range used
    wave: np.ndarray  # (n_cut,) rest Å in the telescope's medium
    band: np.ndarray  # (n_cut, 2H+1) LSF operator: T'_i = sum_d band[i, d] T_{i+d-H}
    seg: np.ndarray  # (n_k, n_edges) template segment index of each shifted pixel edge
    x: np.ndarray  # (n_k, n_edges) rest-frame position of each shifted pixel edge, Å
    dwave_obs: np.ndarray  # (n_wave,) observed pixel widths, Å
    lsf_clipped_fraction: float  # fraction of used template pixels coarser than the telescope
    lsf_fwhm_effective_aa: float  # median effective LSF FWHM in the observed frame, Å


def plan_bank(
    template_wave: np.ndarray,
    template_fwhm: np.ndarray | None,
    edges_obs: np.ndarray,
    lsf_fwhm_obs_aa: float,
    redshift: float,
    velscale: float,
    n_k: int,
    api: str = "render",
) -> BankPlan:
    """Precompute the bank geometry for one telescope, redshift and velocity grid."""
    template_wave = np.asarray(template_wave, np.float64)
    half = (n_k - 1) // 2
    v = (np.arange(n_k) - half) * velscale
    stretch = (1.0 + redshift) * np.exp(v / C_KMS)
    x = edges_obs[None, :] / stretch[:, None]
    x_min, x_max = float(x.min()), float(x.max())
    if x_min < template_wave[0] or x_max > template_wave[-1]:
        raise ValueError(
            f"`{api}`: the telescope band {edges_obs[0]:.1f}-{edges_obs[-1]:.1f} Å observed "
            f"needs rest-frame templates over {x_min:.1f}-{x_max:.1f} Å (redshift {redshift:g}, "
            f"velocities up to +-{half * velscale:g} km/s), but the templates cover only "
            f"{template_wave[0]:.1f}-{template_wave[-1]:.1f} Å. Use templates with a wider "
            "range, a telescope with a narrower band, another redshift, or a smaller `v_max`."
        )
    # LSF: sigma_diff in velocity at the same rest wavelength, then in Å at rest.
    sig_tel_v = C_KMS * lsf_fwhm_obs_aa * FWHM_TO_SIGMA / (template_wave * (1.0 + redshift))
    if template_fwhm is None:
        sig_tpl_v = np.zeros_like(template_wave)
    else:
        sig_tpl_v = C_KMS * np.asarray(template_fwhm, np.float64) * FWHM_TO_SIGMA / template_wave
    diff2 = sig_tel_v**2 - sig_tpl_v**2
    coarse = diff2 < -1e-9 * sig_tel_v**2
    sig_diff_aa = np.sqrt(np.maximum(diff2, 0.0)) * template_wave / C_KMS
    in_band = (template_wave >= x_min) & (template_wave <= x_max)
    clipped_fraction = float(coarse[in_band].mean()) if in_band.any() else 0.0
    eff_v = np.sqrt(np.maximum(sig_tel_v, sig_tpl_v) ** 2)[in_band]
    eff_fwhm = float(
        np.median(eff_v / FWHM_TO_SIGMA * template_wave[in_band] * (1 + redshift) / C_KMS)
    )
    # Cut the template range: [x_min, x_max] plus 6 LSF sigmas and one node.
    spacing = np.diff(template_wave)
    margin = 6.0 * float(sig_diff_aa[in_band].max()) if in_band.any() else 0.0
    lo = max(int(np.searchsorted(template_wave, x_min - margin, side="right")) - 2, 0)
    hi = min(int(np.searchsorted(template_wave, x_max + margin, side="left")) + 2,
             template_wave.size)
    cut = slice(lo, hi)
    wave = template_wave[cut]
    sig = sig_diff_aa[cut]
    band = _lsf_band(wave, sig, spacing[lo : max(hi - 1, lo + 1)])
    seg = np.clip(np.searchsorted(wave, x, side="right") - 1, 0, wave.size - 2)
    return BankPlan(
        cut=cut,
        wave=wave,
        band=band,
        seg=seg.astype(np.int32),
        x=x,
        dwave_obs=np.diff(edges_obs),
        lsf_clipped_fraction=clipped_fraction,
        lsf_fwhm_effective_aa=eff_fwhm,
    )


def _trapezoid_weights(wave: np.ndarray) -> np.ndarray:
    w = np.empty_like(wave)
    d = np.diff(wave)
    w[0], w[-1] = d[0] / 2, d[-1] / 2
    w[1:-1] = (d[:-1] + d[1:]) / 2
    return w


def _lsf_band(wave: np.ndarray, sigma_aa: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Column-normalised Gaussian LSF operator in band form (n, 2H+1)."""
    n = wave.size
    min_spacing = float(spacing.min())
    half = int(math.ceil(5.0 * float(sigma_aa.max()) / min_spacing)) if sigma_aa.max() > 0 else 0
    offsets = np.arange(-half, half + 1)
    w = _trapezoid_weights(wave)
    sig = np.maximum(sigma_aa, 1e-3 * min_spacing)
    # E[j, e] = G(wave[j+e] - wave[j]; sig[j]) for source pixel j.
    j = np.arange(n)[:, None]
    target = j + offsets[None, :]
    valid = (target >= 0) & (target < n)
    tc = np.clip(target, 0, n - 1)
    e = np.where(valid, np.exp(-0.5 * ((wave[tc] - wave[j]) / sig[j]) ** 2), 0.0)
    norm = np.sum(e * w[tc], axis=1)
    col = e * (w[j] / norm[:, None])  # contribution of source j to target j+e, per unit density
    # band[i, d] = col[i + H - d, d-reversed]: target i receives from source s = i - e.
    band = np.zeros((n, offsets.size))
    for k, off in enumerate(offsets):
        # source s = i - off contributes col[s, k] to target i.
        s = np.arange(n) - off
        ok = (s >= 0) & (s < n)
        band[ok, offsets.size - 1 - k] = col[s[ok], k]
    return band


def lsf_convolve(flux: jax.Array, band: jax.Array) -> jax.Array:
    """Apply the banded LSF operator to templates (..., n) -> (..., n)."""
    width = band.shape[1]
    half = (width - 1) // 2
    if half == 0:
        return flux * band[:, 0]
    pad = [(0, 0)] * (flux.ndim - 1) + [(half, half)]
    fp = jnp.pad(flux, pad)
    n = flux.shape[-1]
    out = jnp.zeros_like(flux)
    for d in range(width):
        out = out + band[:, d] * fp[..., d : d + n]
    return out


def _running_integral(wave, flux):
    """C at the nodes: the exact integral of the piecewise-linear template from wave[0]."""
    steps = 0.5 * (flux[..., 1:] + flux[..., :-1]) * jnp.diff(wave)
    zero = jnp.zeros(flux.shape[:-1] + (1,), flux.dtype)
    return jnp.concatenate([zero, jnp.cumsum(steps, axis=-1)], axis=-1)


def template_bank(flux_cut: jax.Array, plan: BankPlan, dtype) -> jax.Array:
    """The bank (n_ssp * n_k, n_wave) from templates (n_ssp, n_cut) on `plan.wave`.

    Differentiable in `flux_cut` (linear). Channel c = ssp * n_k + k.
    """
    wave = jnp.asarray(plan.wave, flux_cut.dtype)
    flux = lsf_convolve(flux_cut, jnp.asarray(plan.band, flux_cut.dtype))
    cum = _running_integral(wave, flux)
    slope = jnp.diff(flux, axis=-1) / jnp.diff(wave)
    dw = jnp.asarray(plan.dwave_obs, flux_cut.dtype)

    def one_bin(args):
        seg, x = args
        dx = x - wave[seg]
        integral = cum[:, seg] + dx * flux[:, seg] + 0.5 * slope[:, seg] * dx**2
        return (jnp.diff(integral, axis=-1) / dw).astype(dtype)

    bank = jax.lax.map(
        one_bin, (jnp.asarray(plan.seg), jnp.asarray(plan.x, flux_cut.dtype))
    )  # (n_k, n_ssp, n_wave)
    n_k, n_ssp, n_wave = bank.shape
    return jnp.transpose(bank, (1, 0, 2)).reshape(n_ssp * n_k, n_wave)


def gaussian_kernel_1d(sigma_px: float) -> np.ndarray:
    """A normalised Gaussian sampled at pixel centres, half-width ceil(4 sigma)."""
    half = max(int(math.ceil(4.0 * sigma_px)), 1)
    d = np.arange(-half, half + 1, dtype=np.float64)
    k = np.exp(-0.5 * (d / sigma_px) ** 2)
    return k / k.sum()


def moffat_kernel_2d(fwhm_px: float, beta: float, oversample: int = 5) -> np.ndarray:
    """A normalised Moffat kernel, pixel-averaged, truncated at 3 FWHM (renormalised)."""
    alpha = fwhm_px / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    half = max(int(math.ceil(3.0 * fwhm_px)), 1)
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    d = np.arange(-half, half + 1, dtype=np.float64)
    xs = (d[:, None] + sub[None, :]).ravel()
    r2 = xs[:, None] ** 2 + xs[None, :] ** 2
    img = (1.0 + r2 / alpha**2) ** (-beta)
    n = d.size
    img = img.reshape(n, oversample, n, oversample).mean(axis=(1, 3))
    return img / img.sum()
