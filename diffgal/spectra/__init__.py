"""diffgal.spectra: simple-stellar-population (SSP) template grids and their loaders."""

from ._grid import (
    TemplateGrid as TemplateGrid,
    bilinear_weights as bilinear_weights,
    load_emiles as load_emiles,
    load_template_hdf5 as load_template_hdf5,
    load_template_npz as load_template_npz,
    save_template_hdf5 as save_template_hdf5,
    save_template_npz as save_template_npz,
    synthetic_grid as synthetic_grid,
)
