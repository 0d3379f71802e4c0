"""`mock_stars`: a bad truth is rejected before the model runs, naming the argument."""

import jax
import numpy as np
import pytest

from diffgal.inference import mock_stars


@pytest.mark.parametrize(
    ("truth", "match"),
    [
        ((-2.3,), r"`mock_stars`: `truth` must hold the 2 global parameters.*got shape \(1,\)"),
        ([[-2.3, -2.89]], r"`truth` must hold the 2 global parameters.*got shape \(1, 2\)"),
        ((np.nan, -2.89), r"`mock_stars`: `truth` must be finite and inside the prior support"),
        ((-2.3, np.inf), r"got \[-2.3, inf\]"),
    ],
)
def test_bad_truth_raises_naming_the_argument(truth, match):
    # `yields` is never loaded: the check comes first.
    with pytest.raises(ValueError, match=match):
        mock_stars(jax.random.key(0), 3, truth=truth, yields="no-such-set")
