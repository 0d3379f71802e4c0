"""Quick-look plots of an `IFUCube` (needs matplotlib: `pip install "diffgal[plot]"`).

Images are drawn as FITS viewers show them: the (n_y, n_x) transpose of the (x, y)-indexed maps
with `origin="lower"`, so +x (FITS axis 1, RA decreasing) points right and +y (north) up. Axes
are offsets from the field centre in arcsec; spaxels outside the aperture are blank.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ._cube import IFUCube

__all__ = [
    "plot_dispersion_map",
    "plot_spectra",
    "plot_velocity_map",
    "plot_white_light",
    "quicklook",
]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "`diffgal.ifu` plotting needs matplotlib, which is not installed. Install it with "
            '`pip install "diffgal[plot]"`.'
        ) from error
    return plt


def _axes(ax):
    if ax is not None:
        return ax
    _, ax = _pyplot().subplots()
    return ax


def _extent(cube: IFUCube) -> list[float]:
    n_x, n_y, _ = cube.shape
    half_x = n_x * cube.pixel_arcsec / 2
    half_y = n_y * cube.pixel_arcsec / 2
    return [-half_x, half_x, -half_y, half_y]


def _show_map(cube: IFUCube, values, ax, *, label: str, title: str, **imshow_kwargs):
    """Draw an (n_x, n_y) map with origin lower, x right, NaN outside the aperture."""
    values = np.asarray(values, dtype=np.float64)
    values = np.where(np.asarray(cube.mask, dtype=bool), values, np.nan)
    image = ax.imshow(
        values.T, origin="lower", extent=_extent(cube), interpolation="nearest", **imshow_kwargs
    )
    ax.set_xlabel("x offset [arcsec]")
    ax.set_ylabel("y offset [arcsec]")
    ax.set_title(title)
    ax.figure.colorbar(image, ax=ax, label=label)
    return image


def plot_white_light(cube: IFUCube, ax=None):
    """The white-light image: flux summed over wavelength times the pixel width.

    **Arguments:**

    - `cube`: the `IFUCube`.
    - `ax`: a matplotlib `Axes` to draw into; `None` makes a new figure.

    **Returns:**

    The `Axes`.
    """
    ax = _axes(ax)
    _show_map(
        cube,
        cube.white_light(),
        ax,
        label=f"[{cube.unit}] x Angstrom",
        title="white light",
        cmap="magma",
    )
    return ax


def plot_velocity_map(cube: IFUCube, ax=None):
    """The light-weighted line-of-sight velocity map (truth), on a diverging colour map.

    The colour limits are symmetric, ±max |v| over the aperture; v > 0 is receding (red).

    **Arguments:**

    - `cube`: the `IFUCube`.
    - `ax`: a matplotlib `Axes` to draw into; `None` makes a new figure.

    **Returns:**

    The `Axes`.
    """
    ax = _axes(ax)
    velocity = np.asarray(cube.velocity_map, dtype=np.float64)
    inside = velocity[np.asarray(cube.mask, dtype=bool) & np.isfinite(velocity)]
    limit = float(np.max(np.abs(inside))) if inside.size else 0.0
    limit = limit if limit > 0 else 1.0
    _show_map(
        cube,
        velocity,
        ax,
        label="v_los [km/s]",
        title="velocity",
        cmap="RdBu_r",
        vmin=-limit,
        vmax=limit,
    )
    return ax


def plot_dispersion_map(cube: IFUCube, ax=None):
    """The light-weighted line-of-sight velocity dispersion map (truth), from 0.

    **Arguments:**

    - `cube`: the `IFUCube`.
    - `ax`: a matplotlib `Axes` to draw into; `None` makes a new figure.

    **Returns:**

    The `Axes`.
    """
    ax = _axes(ax)
    _show_map(
        cube, cube.dispersion_map, ax, label="σ [km/s]", title="dispersion", cmap="viridis", vmin=0
    )
    return ax


def _default_spaxels(cube: IFUCube) -> list[tuple[int, int]]:
    n_x, n_y, _ = cube.shape
    centre = (n_x // 2, n_y // 2)
    off = (min(n_x - 1, n_x // 2 + max(n_x // 4, 1)), n_y // 2)
    return [centre] if off == centre else [centre, off]


def _check_spaxels(cube: IFUCube, spaxels) -> list[tuple[int, int]]:
    n_x, n_y, _ = cube.shape
    checked = []
    for spaxel in spaxels:
        i, j = (int(k) for k in spaxel)
        if not (0 <= i < n_x and 0 <= j < n_y):
            raise ValueError(
                f"`plot_spectra`: spaxel {tuple(spaxel)} is outside the cube; indices are "
                f"(i, j) with 0 <= i < n_x = {n_x} and 0 <= j < n_y = {n_y}."
            )
        checked.append((i, j))
    return checked


def plot_spectra(cube: IFUCube, spaxels: Sequence[tuple[int, int]] | None = None, ax=None):
    """Spectra of some spaxels against wavelength.

    **Arguments:**

    - `cube`: the `IFUCube`.
    - `spaxels`: (i, j) indices into `cube.flux[i, j]` (x, then y). Default: the central
        spaxel and one a quarter of the field to its right.
    - `ax`: a matplotlib `Axes` to draw into; `None` makes a new figure.

    **Returns:**

    The `Axes`.
    """
    ax = _axes(ax)
    spaxels = _check_spaxels(cube, _default_spaxels(cube) if spaxels is None else spaxels)
    wave = np.asarray(cube.wavelength)
    flux = np.asarray(cube.flux)
    for i, j in spaxels:
        ax.plot(wave, flux[i, j], lw=0.8, label=f"spaxel ({i}, {j})")
    ax.set_xlabel(f"wavelength [Angstrom, {cube.medium}]")
    ax.set_ylabel(f"flux [{cube.unit}]")
    ax.set_title("spectra")
    if spaxels:
        ax.legend(loc="best", fontsize="small")
    return ax


def quicklook(
    cube: IFUCube,
    path: str | os.PathLike | None = None,
    spaxels: Sequence[tuple[int, int]] | None = None,
):
    """A 2x2 overview: white light, velocity, dispersion and a few spectra.

    The chosen spaxels are marked on the white-light image. The figure is made with pyplot;
    close it with `plt.close(fig)` when making many.

    **Arguments:**

    - `cube`: the `IFUCube`.
    - `path`: if given, the figure is saved there (format from the suffix, e.g. `.png`).
    - `spaxels`: (i, j) spaxels for the spectra panel; default as in `plot_spectra`.

    **Returns:**

    The matplotlib `Figure`.
    """
    plt = _pyplot()
    spaxels = _check_spaxels(cube, _default_spaxels(cube) if spaxels is None else spaxels)
    fig, axes = plt.subplots(2, 2, figsize=(11, 9), layout="constrained")
    plot_white_light(cube, ax=axes[0, 0])
    x_centre = (np.arange(cube.shape[0]) + 0.5 - cube.shape[0] / 2) * cube.pixel_arcsec
    y_centre = (np.arange(cube.shape[1]) + 0.5 - cube.shape[1] / 2) * cube.pixel_arcsec
    for i, j in spaxels:
        axes[0, 0].plot(x_centre[i], y_centre[j], marker="+", color="cyan", ms=10)
    plot_velocity_map(cube, ax=axes[0, 1])
    plot_dispersion_map(cube, ax=axes[1, 0])
    plot_spectra(cube, spaxels, ax=axes[1, 1])
    if path is not None:
        fig.savefig(os.fspath(path), dpi=100, bbox_inches="tight")
    return fig
