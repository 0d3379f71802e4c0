"""diffgal.chemistry: a differentiable one-zone chemical-evolution model (CHEMPY-equivalent)."""

from ._compat import (
    CHEMPY_COLUMNS as CHEMPY_COLUMNS,
    CHEMPY_ELEMENTS as CHEMPY_ELEMENTS,
    SBI_CHEMPY_COLUMNS as SBI_CHEMPY_COLUMNS,
    chempy_columns as chempy_columns,
    chempy_history as chempy_history,
    chempy_tng as chempy_tng,
)
from ._dtd import (
    AbstractDTD as AbstractDTD,
    ExponentialDTD as ExponentialDTD,
    PowerLawDTD as PowerLawDTD,
)
from ._evolve import (
    RESULTS as RESULTS,
    ChemicalHistory as ChemicalHistory,
    Margins as Margins,
    bracket_x_h as bracket_x_h,
    default_time_grid as default_time_grid,
    evolve as evolve,
)
from ._imf import (
    AbstractIMF as AbstractIMF,
    ChabrierIMF as ChabrierIMF,
    KroupaIMF as KroupaIMF,
    SalpeterIMF as SalpeterIMF,
    grid_mass_weights as grid_mass_weights,
)
from ._lifetimes import (
    AbstractLifetimes as AbstractLifetimes,
    ArgastLifetimes as ArgastLifetimes,
    PortinariLifetimes as PortinariLifetimes,
    grid_dying_mass as grid_dying_mass,
)
from ._options import GCEOptions as GCEOptions
from ._params import (
    AGE_OF_UNIVERSE as AGE_OF_UNIVERSE,
    DEFAULT_LOG10_TAU_IA as DEFAULT_LOG10_TAU_IA,
    THETA_COLUMNS as THETA_COLUMNS,
    ChemistryParams as ChemistryParams,
)
from ._sfh import AbstractSFH as AbstractSFH, GammaSFH as GammaSFH
from ._solar import ASPLUND09 as ASPLUND09, ATOMIC_WEIGHTS as ATOMIC_WEIGHTS
from ._ssp import (
    StarContext as StarContext,
    make_context as make_context,
    metallicity_weights as metallicity_weights,
    ssp_returns as ssp_returns,
)
from ._yields import (
    DEFAULT_ELEMENTS as DEFAULT_ELEMENTS,
    SNIaYieldTable as SNIaYieldTable,
    StellarYieldTable as StellarYieldTable,
    Yields as Yields,
    available_yield_sets as available_yield_sets,
    load_yields as load_yields,
    write_yields_hdf5 as write_yields_hdf5,
)
