"""diffgal.pipeline: physical parameters -> chemistry -> star particles -> IFU cube + abundances.

One jittable model from (alpha_IMF, log10 N_Ia, log10 tau_Ia, SFE, SFR peak, x_out) to what
telescopes measure, with gradients through the whole chain; likelihoods, a joint fit with a
Laplace covariance, and the `diffgal demo` job.
"""

from ._fit import (
    FitResult as FitResult,
    fit as fit,
    laplace_hessian as laplace_hessian,
    negative_log_posterior as negative_log_posterior,
    shot_noise_covariance as shot_noise_covariance,
    total_uncertainty as total_uncertainty,
)
from ._model import (
    ChemistryModel as ChemistryModel,
    Pipeline as Pipeline,
    abundance_columns as abundance_columns,
    make_chemistry as make_chemistry,
    make_pipeline as make_pipeline,
    metallicity_mh as metallicity_mh,
    sfh_birth_times as sfh_birth_times,
)
from ._observe import (
    AbundanceCatalogue as AbundanceCatalogue,
    CubeObservation as CubeObservation,
    JointLikelihood as JointLikelihood,
    abundance_loglik as abundance_loglik,
    cube_chi2 as cube_chi2,
    cube_chi2_split as cube_chi2_split,
    draw_birth_times as draw_birth_times,
    make_likelihood as make_likelihood,
    noise_model as noise_model,
    observe_abundances as observe_abundances,
    observe_cube as observe_cube,
    split_particles as split_particles,
)
from ._params import (
    DEFAULT_PRIOR as DEFAULT_PRIOR,
    GLOBAL_PARAMS as GLOBAL_PARAMS,
    LOCAL_PARAMS as LOCAL_PARAMS,
    PARAM_NAMES as PARAM_NAMES,
    SUPPORT as SUPPORT,
    GalaxyParams as GalaxyParams,
    from_unconstrained as from_unconstrained,
    to_unconstrained as to_unconstrained,
)
