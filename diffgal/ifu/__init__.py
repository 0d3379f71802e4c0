"""diffgal.ifu: a differentiable, sharded IFU data-cube renderer."""

from ._cosmology import (
    angular_diameter_distance_mpc as angular_diameter_distance_mpc,
    comoving_distance_mpc as comoving_distance_mpc,
    kpc_per_arcsec as kpc_per_arcsec,
    luminosity_distance_mpc as luminosity_distance_mpc,
)
from ._cube import IFUCube as IFUCube
from ._particles import (
    StellarParticles as StellarParticles,
    as_particles as as_particles,
    load_particles_hdf5 as load_particles_hdf5,
    save_particles_hdf5 as save_particles_hdf5,
)
from ._render import (
    IFURenderer as IFURenderer,
    make_renderer as make_renderer,
    rotation_matrix as rotation_matrix,
)
from ._telescope import (
    TELESCOPES as TELESCOPES,
    Telescope as Telescope,
    get_telescope as get_telescope,
    telescope_presets as telescope_presets,
)
