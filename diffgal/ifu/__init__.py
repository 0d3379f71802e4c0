"""diffgal.ifu: a differentiable, sharded IFU data-cube renderer.

`render(particles, telescope="MUSE")` is the one-call entry point. For fitting, build an
`IFURenderer` once with `make_renderer` and call it inside `jax.jit` / `jax.grad`.
"""

from ._api import (
    default_templates as default_templates,
    render as render,
    render_streaming as render_streaming,
)
from ._cosmology import (
    angular_diameter_distance_mpc as angular_diameter_distance_mpc,
    comoving_distance_mpc as comoving_distance_mpc,
    kpc_per_arcsec as kpc_per_arcsec,
    luminosity_distance_mpc as luminosity_distance_mpc,
)
from ._cube import IFUCube as IFUCube
from ._io import (
    read_fits as read_fits,
    read_hdf5 as read_hdf5,
    write_fits as write_fits,
    write_hdf5 as write_hdf5,
)
from ._noise import (
    AbstractNoise as AbstractNoise,
    GivenVariance as GivenVariance,
    PoissonNoise as PoissonNoise,
    TargetSNR as TargetSNR,
    add_noise as add_noise,
)
from ._particles import (
    StellarParticles as StellarParticles,
    as_particles as as_particles,
    load_particles_hdf5 as load_particles_hdf5,
    save_particles_hdf5 as save_particles_hdf5,
)
from ._plot import (
    plot_dispersion_map as plot_dispersion_map,
    plot_spectra as plot_spectra,
    plot_velocity_map as plot_velocity_map,
    plot_white_light as plot_white_light,
    quicklook as quicklook,
)
from ._render import (
    IFURenderer as IFURenderer,
    make_renderer as make_renderer,
    rotation_matrix as rotation_matrix,
)
from ._shard import make_mesh as make_mesh, render_sharded as render_sharded
from ._telescope import (
    TELESCOPES as TELESCOPES,
    Telescope as Telescope,
    get_telescope as get_telescope,
    telescope_presets as telescope_presets,
)
