"""diffgal.inference: emulator, neural posterior estimation, many-star aggregation, calibration
diagnostics, explicit-likelihood baselines (NUTS, gradient MAP) and model comparison across
yield sets."""

from ._aggregate import (
    FactorisedLogPosterior as FactorisedLogPosterior,
    GaussianPosterior as GaussianPosterior,
    LaplaceResult as LaplaceResult,
    NUTSResult as NUTSResult,
    aggregate_log_posteriors as aggregate_log_posteriors,
    gaussian_fit as gaussian_fit,
    gaussian_product as gaussian_product,
    gaussian_product_compat as gaussian_product_compat,
    laplace_aggregate as laplace_aggregate,
    nuts_aggregate as nuts_aggregate,
)
from ._calibration import calibrate as calibrate
from ._compare import (
    CANDIDATE_SETS as CANDIDATE_SETS,
    Candidate as Candidate,
    EvidenceResult as EvidenceResult,
    ModelComparison as ModelComparison,
    build_candidate as build_candidate,
    candidate_yields as candidate_yields,
    compare_models as compare_models,
    comparison_calibration as comparison_calibration,
    log_evidence as log_evidence,
    plot_comparison as plot_comparison,
    plot_ppc as plot_ppc,
    plot_reliability as plot_reliability,
    posterior_predictive as posterior_predictive,
    posterior_predictive_check as posterior_predictive_check,
    reliability_table as reliability_table,
    run_compare as run_compare,
    shared_global_correction as shared_global_correction,
    star_log_evidence as star_log_evidence,
)
from ._diagnostics import (
    CoverageResult as CoverageResult,
    SBCResult as SBCResult,
    TARPCheck as TARPCheck,
    TARPResult as TARPResult,
    c2st as c2st,
    central_interval_coverage as central_interval_coverage,
    check_sbc as check_sbc,
    check_tarp as check_tarp,
    expected_coverage as expected_coverage,
    plot_corner as plot_corner,
    plot_coverage as plot_coverage,
    plot_sbc_ranks as plot_sbc_ranks,
    plot_tarp as plot_tarp,
    run_tarp as run_tarp,
    sbc_ranks as sbc_ranks,
)
from ._emulator import (
    Emulator as Emulator,
    EmulatorAccuracy as EmulatorAccuracy,
    EmulatorFit as EmulatorFit,
    emulator_accuracy as emulator_accuracy,
    fit_emulator as fit_emulator,
    load_emulator as load_emulator,
    save_emulator as save_emulator,
)
from ._headline import (
    aggregate_stars as aggregate_stars,
    mock_stars as mock_stars,
    run_headline as run_headline,
)
from ._hierarchical import (
    GlobalPosterior as GlobalPosterior,
    check_observations as check_observations,
    hierarchical_nuts as hierarchical_nuts,
    map_fit as map_fit,
    read_star_table as read_star_table,
)
from ._npe import (
    NPEFit as NPEFit,
    Posterior as Posterior,
    load_posterior as load_posterior,
    save_posterior as save_posterior,
    train_npe as train_npe,
)
from ._prior import (
    GLOBAL_NAMES as GLOBAL_NAMES,
    ChemistryPrior as ChemistryPrior,
)
from ._simulate import (
    TrainingSet as TrainingSet,
    load_training_set as load_training_set,
    simulate_training_set as simulate_training_set,
)
