"""diffgal.lagrangian: second-order neural ODEs, Helmholtz metrics, test systems and training."""

# Helmholtz conditions and the learned-multiplier metric.
# The issue-5 experiments: learn a force from noisy positions, then score it.
from ._experiments import (
    EXPERIMENTS as EXPERIMENTS,
    TRAINING as TRAINING,
    ExperimentSetup as ExperimentSetup,
    LearnedForce as LearnedForce,
    learn_force as learn_force,
    score_learned_force as score_learned_force,
)
from ._helmholtz import (
    HelmholtzLoss as HelmholtzLoss,
    HelmholtzMetricResult as HelmholtzMetricResult,
    HelmholtzResiduals as HelmholtzResiduals,
    MultiplierComparison as MultiplierComparison,
    MultiplierFit as MultiplierFit,
    SantilliResiduals as SantilliResiduals,
    SymmetricMatrixMLP as SymmetricMatrixMLP,
    compare_multiplier as compare_multiplier,
    dynamical_time as dynamical_time,
    euler_lagrange_expression as euler_lagrange_expression,
    fit_multiplier as fit_multiplier,
    helmholtz_loss as helmholtz_loss,
    helmholtz_metric as helmholtz_metric,
    helmholtz_residuals as helmholtz_residuals,
    normalised_residuals as normalised_residuals,
    rescale_time as rescale_time,
    santilli_residuals as santilli_residuals,
    sigma_min as sigma_min,
    soft_clip as soft_clip,
)

# Neural second-order ODEs, the Lagrangian neural ODE, training and the LNN baseline.
from ._lnn import (
    LNNBaseline as LNNBaseline,
    euler_lagrange_acceleration as euler_lagrange_acceleration,
)
from ._lnode import (
    LagrangianNeuralODE as LagrangianNeuralODE,
    make_optimiser as make_optimiser,
    reconstruction_loss as reconstruction_loss,
    routed_gradients as routed_gradients,
)
from ._node import (
    ForceMLP as ForceMLP,
    NeuralSecondOrderODE as NeuralSecondOrderODE,
    Normaliser as Normaliser,
    fit_normaliser as fit_normaliser,
)

# Second-order ODE solves.
from ._ode import (
    SecondOrderSolution as SecondOrderSolution,
    semi_implicit_euler_ok as semi_implicit_euler_ok,
    solve_second_order as solve_second_order,
)

# Scoring named test systems (`diffgal lagrangian score`).
from ._score import SYSTEMS as SYSTEMS, get_system as get_system, score_system as score_system

# Test systems and noisy trajectories.
from ._systems import (
    AbstractSystem as AbstractSystem,
    CurlForce as CurlForce,
    DampedOscillator as DampedOscillator,
    DoublePendulum as DoublePendulum,
    DouglasCaseIIIb as DouglasCaseIIIb,
    DouglasCaseIV as DouglasCaseIV,
    HarmonicOscillator as HarmonicOscillator,
    KeplerPolar as KeplerPolar,
    RotatingFrame as RotatingFrame,
    SamplingBox as SamplingBox,
    Trajectories as Trajectories,
    simulate as simulate,
)
from ._train import (
    TrainResult as TrainResult,
    load_checkpoint as load_checkpoint,
    train_lnode as train_lnode,
)
