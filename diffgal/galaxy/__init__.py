"""diffgal.galaxy: mock galaxies and the star-particle snapshot format."""

from ..ifu._particles import (
    load_particles_hdf5 as load_particles_hdf5,
    save_particles_hdf5 as save_particles_hdf5,
)
from ._disk import exponential_disk as exponential_disk, rotation_curve as rotation_curve
from ._mock import (
    MockGalaxy as MockGalaxy,
    load_mock_galaxy as load_mock_galaxy,
    make_mock_galaxy as make_mock_galaxy,
    save_mock_galaxy as save_mock_galaxy,
)
