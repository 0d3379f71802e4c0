"""diffgal.spectra: simple-stellar-population (SSP) template grids and their loaders."""

from ._grid import (
    TemplateGrid as TemplateGrid,
    bilinear_weights as bilinear_weights,
    load_template_hdf5 as load_template_hdf5,
    load_template_npz as load_template_npz,
    save_template_hdf5 as save_template_hdf5,
    save_template_npz as save_template_npz,
    synthetic_grid as synthetic_grid,
)
from ._loaders import (
    air_to_vacuum as air_to_vacuum,
    available_template_libraries as available_template_libraries,
    load_bc03_miles as load_bc03_miles,
    load_bc03lr as load_bc03lr,
    load_emiles as load_emiles,
    load_ppxf_npz as load_ppxf_npz,
    load_templates as load_templates,
    vacuum_to_air as vacuum_to_air,
)
