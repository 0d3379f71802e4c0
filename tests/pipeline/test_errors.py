"""Acceptance: bad input gets a clear error naming the argument: inconsistent particle and star
catalogues, a variance cube with zeros or negatives, a missing observation, and parameters
starting outside their support. None of these tests evaluates the model (nothing compiles)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgal.galaxy import MockGalaxy, load_mock_galaxy, make_mock_galaxy, save_mock_galaxy
from diffgal.pipeline import (
    AbundanceCatalogue,
    CubeObservation,
    GalaxyParams,
    cube_chi2,
    fit,
    make_likelihood,
    make_pipeline,
    observe_abundances,
)

from .conftest import T_OBS


@pytest.fixture(scope="module")
def shape(telescope):
    return telescope.shape


@pytest.fixture(scope="module")
def cube_obs(shape):
    return CubeObservation(jnp.ones(shape), jnp.ones(shape), jnp.ones(shape[:2], bool))


def catalogue(columns, birth_time=(2.0, 5.0, 9.0), values=None, errors=None):
    n, k = len(birth_time), len(columns)
    values = np.zeros((n, k)) if values is None else values
    errors = np.full((n, k), 0.05) if errors is None else errors
    return AbundanceCatalogue(jnp.asarray(birth_time, float), jnp.asarray(values),
                              jnp.asarray(errors), columns)


@pytest.fixture(scope="module")
def star_cat(pipeline):
    return catalogue(pipeline.columns)


# --- inconsistent particle and star catalogues ------------------------------------------------


def test_mock_galaxy_with_mismatched_lengths(galaxy):
    g = galaxy
    with pytest.raises(ValueError, match=r"`MockGalaxy`: the particle arrays must have one entry "
                                         r"per star; got lengths .*'mass': 2999"):
        MockGalaxy(g.position, g.velocity, g.mass[:-1], g.birth_quantile, None)
    with pytest.raises(ValueError, match=r"'birth_quantile': 10"):
        MockGalaxy(g.position, g.velocity, g.mass, g.birth_quantile[:10], None)
    with pytest.raises(ValueError,
                       match=r"`velocity` must have shape \(n_star, 3\); got \(3000, 2\)"):
        MockGalaxy(g.position, g.velocity[:, :2], g.mass, g.birth_quantile, None)
    with pytest.raises(ValueError, match=r"`mass` must be 1-D"):
        MockGalaxy(g.position, g.velocity, g.mass[:, None], g.birth_quantile, None)
    with pytest.raises(ValueError, match=r"exactly one of `birth_quantile`.*got both"):
        MockGalaxy(g.position, g.velocity, g.mass, g.birth_quantile, g.birth_quantile)
    with pytest.raises(ValueError, match=r"exactly one of `birth_quantile`.*got neither"):
        MockGalaxy(g.position, g.velocity, g.mass, None, None)
    with pytest.raises(ValueError, match=r"`age_gyr` must be a number in \(0, 13.797617\]"):
        MockGalaxy(g.position, g.velocity, g.mass, g.birth_quantile, None, age_gyr=14.5)


def test_mock_galaxy_with_impossible_values(galaxy):
    g = galaxy
    with pytest.raises(ValueError, match=r"`birth_time` must lie in \[0, age_gyr = 12.5\] Gyr "
                                         r"\(no particle is born after the time of observation"):
        MockGalaxy(g.position, g.velocity, g.mass, None, jnp.full(g.n_star, 13.0), age_gyr=12.5)
    with pytest.raises(ValueError, match=r"`birth_time` must lie in \[0, age_gyr"):
        MockGalaxy(g.position, g.velocity, g.mass, None, jnp.full(g.n_star, -0.5), age_gyr=12.5)
    with pytest.raises(ValueError, match=r"`birth_quantile` must lie in \[0, 1\]; got 1 "):
        MockGalaxy(g.position, g.velocity, g.mass, g.birth_quantile.at[3].set(1.5), None)
    with pytest.raises(ValueError, match=r"`birth_quantile` has 1 non-finite"):
        MockGalaxy(g.position, g.velocity, g.mass, g.birth_quantile.at[3].set(jnp.nan), None)
    with pytest.raises(ValueError, match=r"`position` has 1 non-finite"):
        MockGalaxy(g.position.at[0, 2].set(jnp.inf), g.velocity, g.mass, g.birth_quantile, None)
    with pytest.raises(ValueError, match=r"`mass` must be >= 0"):
        MockGalaxy(g.position, g.velocity, -g.mass, g.birth_quantile, None)
    # the boundaries themselves are fine (age 0 and age_gyr; zero-mass particles)
    MockGalaxy(g.position, g.velocity, g.mass * 0, None,
               jnp.linspace(0.0, 12.5, g.n_star), age_gyr=12.5)


def test_mock_galaxy_constructors_and_files(tmp_path, galaxy):
    with pytest.raises(ValueError, match=r"`make_mock_galaxy`: `n_star` must be an int >= 1"):
        make_mock_galaxy(jax.random.key(0), 0)
    with pytest.raises(ValueError, match=r"`make_mock_galaxy`: `sampling` must be"):
        make_mock_galaxy(jax.random.key(0), 10, sampling="sobol")
    with pytest.raises(FileNotFoundError, match=r"`load_mock_galaxy`: no such file"):
        load_mock_galaxy(tmp_path / "missing.h5")
    small = make_mock_galaxy(jax.random.key(1), 10)
    with pytest.raises(ValueError, match=r"`save_mock_galaxy`: `particles` has 10 stars but the "
                                         r"galaxy has 3000"):
        save_mock_galaxy(tmp_path / "x.h5", galaxy, small.with_particles(
            jnp.ones(10), jnp.zeros(10), metal_kind="MH"))


def test_abundance_catalogue_with_inconsistent_arrays(pipeline):
    cols = pipeline.columns
    k = len(cols)
    with pytest.raises(ValueError, match=r"`AbundanceCatalogue`: `values` must have shape "
                                         r"\(n_star, n_col\) = \(3, 7\)"):
        catalogue(cols, values=np.zeros((3, k + 1)))
    with pytest.raises(ValueError, match=r"`errors` must have shape \(n_star, n_col\) = \(3, 7\) "
                                         r"to match `birth_time` \(3 stars\)"):
        catalogue(cols, errors=np.full((4, k), 0.1))
    with pytest.raises(ValueError, match=r"`values` must have shape .* \(2, 7\)"):
        catalogue(cols, birth_time=(1.0, 2.0), values=np.zeros((3, k)))
    with pytest.raises(ValueError, match=r"`birth_time` must be 1-D"):
        AbundanceCatalogue(jnp.ones((3, 1)), jnp.zeros((3, k)), jnp.ones((3, k)), cols)
    one_zero = np.full((3, k), 0.05)
    one_zero[0, 0] = 0.0
    with pytest.raises(ValueError, match=r"`errors` must be > 0 .* got 1 entries <= 0"):
        catalogue(cols, errors=one_zero)
    with pytest.raises(ValueError, match=r"`errors` must be > 0 .* got 21 entries <= 0"):
        catalogue(cols, errors=np.full((3, k), -0.1))
    nan_values = np.zeros((3, k))
    nan_values[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"`values` has 1 non-finite entries"):
        catalogue(cols, values=nan_values)
    with pytest.raises(ValueError, match=r"`birth_time` has 1 non-finite entries"):
        catalogue(cols, birth_time=(1.0, np.nan, 3.0))


def test_stars_and_particles_must_agree(pipeline, galaxy, star_cat):
    cols = pipeline.columns
    late = catalogue(cols, birth_time=(2.0, 12.0, 13.1))
    with pytest.raises(ValueError, match=r"the catalogue `stars` and the particle catalogue "
                                         r"`galaxy` disagree: 1 stars are born after the "
                                         r"galaxy's time of observation age_gyr = 12.5 Gyr"):
        make_likelihood(pipeline, galaxy, stars=late, use=("abundances",))
    early = catalogue(cols, birth_time=(0.0, 2.0, 3.0))
    with pytest.raises(ValueError, match=r"`galaxy` disagree: 0 stars .* and 1 at or before t = 0"):
        make_likelihood(pipeline, galaxy, stars=early, use=("abundances",))
    # the same stars are fine for a galaxy observed later
    older = MockGalaxy(galaxy.position, galaxy.velocity, galaxy.mass, galaxy.birth_quantile,
                       None, age_gyr=13.5)
    make_likelihood(pipeline, older, stars=late, use=("abundances",))
    # a catalogue for another element list (or order) is refused, naming both column lists
    other = catalogue(("[Fe/H]", "[Mg/Fe]", "[Ca/Fe]"))
    with pytest.raises(ValueError, match=r"the catalogue `stars` has columns \['\[Fe/H\]', "
                                         r"'\[Mg/Fe\]', '\[Ca/Fe\]'\] but the pipeline's yield "
                                         r"set 'default' predicts \['\[Fe/H\]', '\[C/Fe\]'"):
        make_likelihood(pipeline, galaxy, stars=other, use=("abundances",))
    swapped = catalogue(cols[::-1])
    with pytest.raises(ValueError, match=r"Reorder or subset the catalogue"):
        make_likelihood(pipeline, galaxy, stars=swapped, use=("abundances",))
    # the columns may be given as a list (stored as a tuple)
    as_list = catalogue(list(cols))
    assert as_list.columns == cols
    make_likelihood(pipeline, galaxy, stars=as_list, use=("abundances",))
    make_likelihood(pipeline, galaxy, stars=star_cat, use=("abundances",))


def test_observe_abundances_after_the_time_of_observation(pipeline):
    with pytest.raises(ValueError, match=r"`observe_abundances`: every `birth_time` must lie in "
                                         r"\(0, t_obs = 12.5\] Gyr"):
        observe_abundances(jax.random.key(0), pipeline, GalaxyParams(), jnp.asarray([3.0, 13.0]),
                           T_OBS)


# --- the cube ---------------------------------------------------------------------------------


def test_variance_with_zeros_or_negatives_inside_the_mask(shape):
    flux = jnp.ones(shape)
    mask = np.zeros(shape[:2], bool)
    mask[2:6, 2:6] = True
    for bad_value, label in ((0.0, "zero"), (-1.0, "negative"), (np.nan, "NaN")):
        var = np.ones(shape)
        var[3, 4, 10] = bad_value
        var[4, 4, :] = bad_value
        with pytest.raises(ValueError, match=r"`CubeObservation`: `variance` must be finite and "
                                             r"> 0 in every pixel of the masked spaxels; got "
                                             r"121 zero, negative or NaN pixels in 2 spaxels"):
            CubeObservation(flux, jnp.asarray(var), jnp.asarray(mask))
        # the same pixels outside the mask are accepted
        var_out = np.ones(shape)
        var_out[0, 0, :] = bad_value
        var_out[7, 1, 5] = bad_value
        obs = CubeObservation(flux, jnp.asarray(var_out), jnp.asarray(mask))
        assert np.isfinite(float(cube_chi2(jnp.zeros(shape), obs, "fixed"))), label


def test_cube_observation_shapes_and_values(shape):
    ones = jnp.ones(shape)
    with pytest.raises(ValueError, match=r"`variance` must have the shape of `flux`"):
        CubeObservation(ones, ones[:, :, :-1], jnp.ones(shape[:2], bool))
    with pytest.raises(ValueError, match=r"`mask` must be \(n_x, n_y\) = \(8, 8\); got \(8, 7\)"):
        CubeObservation(ones, ones, jnp.ones((8, 7), bool))
    with pytest.raises(ValueError, match=r"`mask` must be a boolean array .* got dtype float"):
        CubeObservation(ones, ones, jnp.ones(shape[:2]))
    with pytest.raises(ValueError, match=r"`flux` must be \(n_x, n_y, n_wave\)"):
        CubeObservation(ones[0], ones[0], jnp.ones(shape[1:2], bool))
    with pytest.raises(ValueError, match=r"`flux` has non-finite pixels"):
        CubeObservation(ones.at[0, 0, 0].set(jnp.nan), ones, jnp.ones(shape[:2], bool))


def test_cube_that_does_not_match_the_telescope(pipeline, galaxy, shape):
    wrong = (4, 4, shape[2])
    obs = CubeObservation(jnp.ones(wrong), jnp.ones(wrong), jnp.ones(wrong[:2], bool))
    with pytest.raises(ValueError, match=r"`make_likelihood`: `cube` has shape \(4, 4, 120\) but "
                                         r"the pipeline's telescope 'T' renders \(8, 8, 120\)"):
        make_likelihood(pipeline, galaxy, cube=obs, use=("cube",))
    with pytest.raises(ValueError, match=r"`cube_chi2`: the model cube has shape \(8, 8, 120\) "
                                         r"but the observation has \(4, 4, 120\)"):
        cube_chi2(jnp.ones(shape), obs)
    empty = CubeObservation(jnp.ones(shape), jnp.ones(shape), jnp.zeros(shape[:2], bool))
    with pytest.raises(ValueError, match=r"the mask of `cube` selects no spaxel"):
        make_likelihood(pipeline, galaxy, cube=empty, use=("cube",))


# --- missing observations and bad options -----------------------------------------------------


def test_missing_observations(pipeline, galaxy, cube_obs, star_cat):
    with pytest.raises(ValueError, match=r"`make_likelihood`: `use` includes 'cube' but no `cube` "
                                         r"observation was given"):
        make_likelihood(pipeline, galaxy, stars=star_cat, use=("cube",))
    with pytest.raises(ValueError, match=r"`use` includes 'cube' but no `cube`"):
        make_likelihood(pipeline, galaxy, stars=star_cat)  # the default uses both
    with pytest.raises(ValueError, match=r"`use` includes 'abundances' but no `stars` catalogue "
                                         r"was given"):
        make_likelihood(pipeline, galaxy, cube=cube_obs, use=("abundances",))
    with pytest.raises(ValueError, match=r"`use` includes 'abundances' but no `stars`"):
        make_likelihood(pipeline, galaxy, cube=cube_obs)
    with pytest.raises(ValueError, match=r"`galaxy` is missing"):
        make_likelihood(pipeline, cube=cube_obs, stars=star_cat)
    with pytest.raises(ValueError, match=r"`use` must be a non-empty subset"):
        make_likelihood(pipeline, galaxy, cube=cube_obs, stars=star_cat, use=())
    with pytest.raises(ValueError, match=r"`use` must be a non-empty subset"):
        make_likelihood(pipeline, galaxy, cube=cube_obs, stars=star_cat, use=("spectra",))
    # one observable alone needs only its own observation
    like = make_likelihood(pipeline, galaxy, cube=cube_obs, use=("cube",))
    assert like.stars is None and like.cube is cube_obs
    like = make_likelihood(pipeline, galaxy, stars=star_cat, cube=cube_obs, use=("abundances",))
    assert like.cube is None and like.stars is star_cat


def test_bad_options(pipeline, galaxy, cube_obs, star_cat, telescope, grid):
    kw = dict(cube=cube_obs, stars=star_cat)
    with pytest.raises(ValueError, match=r"`normalisation` must be one of \('fixed', "
                                         r"'per_spaxel'\); got 'none'"):
        make_likelihood(pipeline, galaxy, normalisation="none", **kw)
    with pytest.raises(ValueError, match=r"`prior` names unknown parameters \['alpha'\]"):
        make_likelihood(pipeline, galaxy, prior={"alpha": (0.0, 1.0)}, **kw)
    with pytest.raises(ValueError, match=r"prior sigma of `imf_slope` must be > 0; got 0"):
        make_likelihood(pipeline, galaxy, prior={"imf_slope": (-2.3, 0)}, **kw)
    with pytest.raises(ValueError, match=r"`make_pipeline`: `shard_mode` must be one of"):
        make_pipeline(telescope, grid, yields="default", shard_mode="rows")
    with pytest.raises(ValueError, match=r"`GalaxyParams.from_array`: expected a last axis of "
                                         r"length 6"):
        GalaxyParams.from_array(jnp.zeros(5))
    with pytest.raises(ValueError, match=r"`GalaxyParams.replace`: unknown parameter\(s\) "
                                         r"\['alpha_imf'\]"):
        GalaxyParams().replace(alpha_imf=-2.0)


# --- parameters outside their support ---------------------------------------------------------


@pytest.fixture(scope="module")
def likelihood(pipeline, galaxy, cube_obs, star_cat):
    return make_likelihood(pipeline, galaxy, cube=cube_obs, stars=star_cat)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("outflow_fraction", 1.3,
         r"`fit`: `init.outflow_fraction` = 1.3 is outside its support \(0.0, 1.0\)\. Start "
         r"inside it, e.g. at the prior mean 0.5"),
        ("imf_slope", -5.0,
         r"`fit`: `init.imf_slope` = -5.0 is outside its support \(-4.0, -1.0\)"),
        ("outflow_fraction", 0.0, r"`init.outflow_fraction` = 0.0 is outside its support"),
        ("log10_sfr_peak", float("nan"), r"`init.log10_sfr_peak` = nan is outside its support"),
        ("log10_tau_ia", 0.7, r"`init.log10_tau_ia` = 0.7 is outside its support \(-3.0, 0.5\)"),
    ],
)
def test_fit_start_outside_the_support(likelihood, name, value, message):
    with pytest.raises(ValueError, match=message):
        fit(likelihood, GalaxyParams().replace(**{name: value}), steps=1, show_progress=False)


def test_fit_arguments(likelihood):
    init = GalaxyParams()
    with pytest.raises(ValueError, match=r"`init.log10_sfe` must be a scalar; got shape \(2,\)"):
        fit(likelihood, init.replace(log10_sfe=jnp.asarray([-0.3, -0.2])), show_progress=False)
    with pytest.raises(ValueError, match=r"`fit`: `free` must name some of"):
        fit(likelihood, init, free=("imf_slope", "alpha"), show_progress=False)
    with pytest.raises(ValueError, match=r"`fit`: `steps` must be an int >= 0; got -1"):
        fit(likelihood, init, steps=-1, show_progress=False)
    with pytest.raises(TypeError, match=r"`fit`: `likelihood` must be a `JointLikelihood`"):
        fit(lambda p: 0.0, init)
    with pytest.raises(TypeError, match=r"`fit`: `init` must be a `GalaxyParams`"):
        fit(likelihood, init.to_array())
