"""Training sets of the chemistry model: batched runs written as HDF5 shards, resumable.

`simulate_training_set` draws parameters from a `ChemistryPrior`, runs `chempy_tng` (vmapped
inside jit) and writes one HDF5 file per shard next to a `manifest.json`. Shard `i` derives its
key from `fold_in(key, i)`, so an interrupted run that is started again with the same
arguments skips the finished shards and produces exactly the files an uninterrupted run would
have. Each shard is written to a temporary name and renamed, so a shard on disk is complete.

Runs the original code rejects are kept with `failed = True` and NaN abundances (never zero
rows, sbi-chempy's convention); `load_training_set` drops them and says how many.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import time
import typing

import h5py
import jax
import numpy as np
from jaxtyping import PRNGKeyArray

from ..chemistry import CHEMPY_COLUMNS, THETA_COLUMNS, chempy_tng, load_yields
from ..chemistry._yields import Yields
from ._prior import ChemistryPrior

__all__ = ["TrainingSet", "load_training_set", "simulate_training_set"]

MANIFEST = "manifest.json"
FORMAT = "diffgal.inference.training_set/1"


class TrainingSet(typing.NamedTuple):
    """Simulated pairs: `theta` `(N, 6)`, abundances `x` `(N, 9)` in `CHEMPY_COLUMNS` order.

    `n_failed` runs were dropped (rejected by the model); `config` is the manifest.
    """

    theta: np.ndarray
    x: np.ndarray
    n_failed: int
    config: dict


def _prior_config(prior: ChemistryPrior) -> dict:
    return {
        "loc": np.asarray(prior.loc).tolist(),
        "scale": np.asarray(prior.scale).tolist(),
        "t_low": prior.t_low,
        "t_high": prior.t_high,
    }


def _yields_id(yields: Yields) -> str:
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(yields):
        digest.update(np.ascontiguousarray(np.asarray(leaf, np.float64)).tobytes())
    return f"{yields.name}:sha256:{digest.hexdigest()[:16]}"


def _shard_path(root: pathlib.Path, i: int) -> pathlib.Path:
    return root / f"shard_{i:05d}.h5"


def _shard_complete(path: pathlib.Path, n: int) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("complete", False) and f["theta"].shape == (n, 6)
    except (OSError, KeyError):
        return False


def simulate_training_set(
    key: PRNGKeyArray,
    out: str | os.PathLike,
    n_sims: int,
    *,
    prior: ChemistryPrior | None = None,
    mode: str = "faithful",
    yields: str | Yields = "tng",
    data_dir=None,
    shard_size: int = 20_000,
    chunk_size: int = 2048,
    show_progress: bool = True,
) -> pathlib.Path:
    """Simulate `n_sims` (theta, abundances) pairs into the directory `out`; resumable.

    **Arguments:**

    - `key`: a `jax.random.key`; shard `i` uses `fold_in(key, i)`.
    - `out`: the output directory (created). If it holds a manifest of the same settings, the
      finished shards are kept and only the missing ones are simulated; a manifest of other
      settings is an error (pick another directory).
    - `n_sims`: number of runs.
    - `prior`: a `ChemistryPrior` (default sbi-chempy's).
    - `mode`, `yields`, `data_dir`: passed to `diffgal.chemistry.chempy_tng`. `yields` is a
      yield-set name or a `Yields` object (recorded in the manifest by its name and a SHA-256
      of its tables, so a changed table is not mistaken for the finished one).
    - `shard_size`: runs per HDF5 file; `chunk_size`: runs vmapped at once.
    - `show_progress`: a tqdm bar over shards.

    **Returns:** the directory; read it with `load_training_set`.
    """
    if n_sims < 1:
        raise ValueError(f"`simulate_training_set`: `n_sims` must be >= 1; got {n_sims}.")
    if shard_size < 1:
        raise ValueError(f"`simulate_training_set`: `shard_size` must be >= 1; got {shard_size}.")
    prior = ChemistryPrior() if prior is None else prior
    root = pathlib.Path(out)
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT,
        "n_sims": int(n_sims),
        "shard_size": int(shard_size),
        "mode": mode,
        "yields": yields if isinstance(yields, str) else _yields_id(yields),
        "prior": _prior_config(prior),
        "key": np.asarray(jax.random.key_data(key)).tolist(),
        "theta_columns": list(THETA_COLUMNS),
        "x_columns": list(CHEMPY_COLUMNS),
    }
    manifest = root / MANIFEST
    if manifest.is_file():
        stored = json.loads(manifest.read_text())
        diffs = [k for k in config if stored.get(k) != config[k]]
        if diffs:
            raise ValueError(
                f"`simulate_training_set`: {str(root)!r} holds a training set made with other "
                f"settings ({', '.join(diffs)} differ); pass the same arguments to resume, or "
                "another `out` directory."
            )
    else:
        manifest.write_text(json.dumps(config, indent=1))

    table = load_yields(yields, data_dir=data_dir) if isinstance(yields, str) else yields
    n_shards = -(-n_sims // shard_size)
    todo = []
    for i in range(n_shards):
        n = min(shard_size, n_sims - i * shard_size)
        if not _shard_complete(_shard_path(root, i), n):
            todo.append((i, n))
    bar = None
    if show_progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=n_sims, initial=n_sims - sum(n for _, n in todo), unit="run", desc="simulate"
        )
    for i, n in todo:
        t0 = time.perf_counter()
        theta = prior.sample(jax.random.fold_in(key, i), (n,))
        x, failed = chempy_tng(theta, mode=mode, yields=table, chunk_size=chunk_size)
        x, failed = np.asarray(x), np.asarray(failed)
        path = _shard_path(root, i)
        tmp = path.with_name(path.name + ".tmp")
        with h5py.File(tmp, "w") as f:
            f["theta"] = np.asarray(theta)
            f["x"] = x
            f["failed"] = failed
            f.attrs["seconds"] = time.perf_counter() - t0
            f.attrs["complete"] = True
        os.replace(tmp, path)
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    return root


def load_training_set(path: str | os.PathLike, *, n: int | None = None) -> TrainingSet:
    """Read a directory written by `simulate_training_set` (failed runs dropped).

    `n` keeps the first `n` runs (before dropping). Missing shards are an error that says to
    resume the simulation.
    """
    root = pathlib.Path(path)
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(
            f"`load_training_set`: {str(root)!r} has no {MANIFEST}; create it with "
            "`simulate_training_set` (or `diffgal infer simulate`)."
        )
    config = json.loads(manifest.read_text())
    if config.get("format") != FORMAT:
        raise ValueError(
            f"`load_training_set`: {str(manifest)!r} is not a {FORMAT!r} manifest "
            f"(format {config.get('format')!r})."
        )
    n_sims, shard_size = config["n_sims"], config["shard_size"]
    thetas, xs, fails = [], [], []
    for i in range(-(-n_sims // shard_size)):
        size = min(shard_size, n_sims - i * shard_size)
        p = _shard_path(root, i)
        if not _shard_complete(p, size):
            raise ValueError(
                f"`load_training_set`: shard {p.name} of {str(root)!r} is missing or incomplete; "
                "run `simulate_training_set` again with the same arguments to finish it."
            )
        with h5py.File(p, "r") as f:
            thetas.append(f["theta"][...])
            xs.append(f["x"][...])
            fails.append(f["failed"][...])
    theta, x, failed = (np.concatenate(a) for a in (thetas, xs, fails))
    if n is not None:
        theta, x, failed = theta[:n], x[:n], failed[:n]
    bad = failed | ~np.all(np.isfinite(x), axis=1)
    return TrainingSet(theta[~bad], x[~bad], int(bad.sum()), config)
