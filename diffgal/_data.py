"""Where diffgal finds its external data files, and how it fetches and verifies them.

diffgal never ships third-party data tables in the repository or the wheel. Tables are read from a
data directory laid out like this:

```
$DIFFGAL_DATA_DIR/
  yields/
    tng/
      SNII.hdf5  AGB.hdf5  SNIa.hdf5
```

The directory is, in order of precedence: the `data_dir` argument of a function, the environment
variable `DIFFGAL_DATA_DIR`, and, for files fetched with `diffgal.fetch_tng_yields`, the pooch
cache folder (`pooch.os_cache("diffgal")`). Every file is checked against a SHA-256 hash before
use, local copies included.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import types

__all__ = ["data_dir", "fetch_tng_yields", "tng_files_present", "tng_yield_paths"]

#: Environment variable naming the data directory.
DATA_DIR_ENV = "DIFFGAL_DATA_DIR"

#: Commit of `jan-rybizki/Chempy` (MIT) that the TNG yield files are downloaded from.
TNG_COMMIT = "18260a0647b448a8a937384271c8a4de8702aefe"
_TNG_URL = (
    "https://raw.githubusercontent.com/jan-rybizki/Chempy/{commit}/Chempy/input/yields/TNG/{name}"
)

#: The IllustrisTNG yield tables as shipped with CHEMPY: file name -> SHA-256 of its bytes.
TNG_SHA256: types.MappingProxyType[str, str] = types.MappingProxyType(
    {
        "SNII.hdf5": "8497085be168f9715f263933f4e80246458014708fbb256c2d27cb041f50d062",
        "AGB.hdf5": "1c3394d8ff7511c696f360f8961202df7b767a2029ba82dd245c3d0250f60664",
        "SNIa.hdf5": "8779146fdb582a0459eac5cba7727cbf59e387ef7c2c38e536e56566e6cad129",
    }
)

#: Fixed-commit download URL of each TNG file.
TNG_URLS: types.MappingProxyType[str, str] = types.MappingProxyType(
    {name: _TNG_URL.format(commit=TNG_COMMIT, name=name) for name in TNG_SHA256}
)

#: Location of the TNG files relative to the data directory.
TNG_SUBDIR = pathlib.PurePosixPath("yields", "tng")

# (resolved path, mtime_ns, size) -> sha256 hex digest, so each file is hashed once per process.
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def data_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path | None:
    """The diffgal data directory.

    **Arguments:**

    - `data_dir`: an explicit directory. It wins over the environment.

    **Returns:**

    `data_dir` if given, else `$DIFFGAL_DATA_DIR` if set and non-empty, else `None`.

    ```python
    import diffgal

    assert diffgal.data_dir("/tmp/diffgal-data").name == "diffgal-data"
    ```
    """
    return _resolve_dir(data_dir)


def _resolve_dir(explicit: str | os.PathLike | None) -> pathlib.Path | None:
    if explicit is not None:
        return pathlib.Path(explicit).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return pathlib.Path(env).expanduser()
    return None


def _sha256(path: pathlib.Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    digest = _HASH_CACHE.get(key)
    if digest is None:
        sha = hashlib.sha256()
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                sha.update(chunk)
        digest = sha.hexdigest()
        _HASH_CACHE[key] = digest
    return digest


def _pooch_cache() -> pathlib.Path | None:
    try:
        import pooch
    except ImportError:
        return None
    return pathlib.Path(pooch.os_cache("diffgal"))


def _candidate_dirs(data_dir_: str | os.PathLike | None) -> list[pathlib.Path]:
    explicit = _resolve_dir(data_dir_)
    if explicit is not None:
        return [explicit]
    cache = _pooch_cache()
    return [] if cache is None else [cache]


def _tng_dir_with_files(data_dir_: str | os.PathLike | None) -> pathlib.Path | None:
    for root in _candidate_dirs(data_dir_):
        folder = root / TNG_SUBDIR
        if all((folder / name).is_file() for name in TNG_SHA256):
            return folder
    return None


def tng_files_present(data_dir: str | os.PathLike | None = None) -> bool:
    """Whether all three TNG yield files exist (their hashes are not checked here).

    **Arguments:**

    - `data_dir`: the data directory; defaults to `$DIFFGAL_DATA_DIR`, else the pooch cache.

    **Returns:**

    `True` if `<data_dir>/yields/tng/{SNII,AGB,SNIa}.hdf5` all exist.
    """
    return _tng_dir_with_files(data_dir) is not None


def _missing_message(data_dir_: str | os.PathLike | None) -> str:
    searched = [str(root / TNG_SUBDIR) for root in _candidate_dirs(data_dir_)]
    where = ", ".join(searched) if searched else "nowhere (no data directory is set)"
    files = ", ".join(TNG_SHA256)
    return (
        "`tng_yield_paths`: the TNG yield tables were not found. Searched: "
        f"{where}. Expected the files {files} in `<data_dir>/{TNG_SUBDIR}/`, where <data_dir> is "
        f"the `data_dir` argument or the environment variable {DATA_DIR_ENV}. Fix: set "
        f"{DATA_DIR_ENV} to a directory with that layout, or download the files once with "
        '`diffgal.fetch_tng_yields()` (needs `pip install "diffgal[data]"` and network access).'
    )


def verify_sha256(path: str | os.PathLike, expected: str) -> pathlib.Path:
    """Check a file against its SHA-256 digest (computed once per process per file version).

    **Arguments:**

    - `path`: the file.
    - `expected`: its hex SHA-256 digest.

    **Returns:**

    The path, as a `pathlib.Path`. Raises a `ValueError` naming the file, the expected and the
    computed digests if they differ.
    """
    path = pathlib.Path(path)
    got = _sha256(path)
    if got != expected:
        raise ValueError(
            f"`verify_sha256`: {path} is not the expected file: SHA-256 expected {expected}, "
            f"got {got}. The copy is corrupted or a different version. Fix: delete it and "
            "run `diffgal.fetch_tng_yields()`, or copy the original file again."
        )
    return path


def tng_yield_paths(
    data_dir: str | os.PathLike | None = None, *, download: bool = False
) -> dict[str, pathlib.Path]:
    """Locate and verify the three IllustrisTNG yield files.

    **Arguments:**

    - `data_dir`: the data directory; defaults to `$DIFFGAL_DATA_DIR`, else the pooch cache
      that `diffgal.fetch_tng_yields` fills.
    - `download`: if the files are missing, download them with
      `diffgal.fetch_tng_yields` (needs `pooch` and network access).

    **Returns:**

    A dict `{"SNII.hdf5": path, "AGB.hdf5": path, "SNIa.hdf5": path}`. Each file's SHA-256 is
    verified (once per process and file version). Raises `FileNotFoundError` when the files are
    missing and `ValueError` when a hash does not match.
    """
    folder = _tng_dir_with_files(data_dir)
    if folder is None:
        if download:
            return fetch_tng_yields(data_dir)
        raise FileNotFoundError(_missing_message(data_dir))
    return {name: verify_sha256(folder / name, digest) for name, digest in TNG_SHA256.items()}


def fetch_tng_yields(data_dir: str | os.PathLike | None = None) -> dict[str, pathlib.Path]:
    """Download the IllustrisTNG yield tables (CHEMPY, MIT) and check their SHA-256 hashes.

    The files come from the public repository `jan-rybizki/Chempy` at a fixed commit (see
    `diffgal._data.TNG_URLS`). Files already present with the right hash are not downloaded
    again.

    **Arguments:**

    - `data_dir`: where to put them, as `<data_dir>/yields/tng/<file>`. Defaults to
      `$DIFFGAL_DATA_DIR`, else `pooch.os_cache("diffgal")`, which diffgal also searches.

    **Returns:**

    A dict `{"SNII.hdf5": path, "AGB.hdf5": path, "SNIa.hdf5": path}`. Call it once, e.g.
    `diffgal.fetch_tng_yields()`; afterwards `load_yields("tng")` finds the files.
    """
    try:
        import pooch
    except ImportError as error:
        raise ImportError(
            "`fetch_tng_yields` needs the optional dependency `pooch`. Fix: "
            '`pip install "diffgal[data]"` (or `pip install pooch`).'
        ) from error
    root = _resolve_dir(data_dir)
    if root is None:
        root = pathlib.Path(pooch.os_cache("diffgal"))
    folder = root / TNG_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, digest in TNG_SHA256.items():
        fetched = pooch.retrieve(
            TNG_URLS[name], known_hash=f"sha256:{digest}", fname=name, path=folder
        )
        paths[name] = verify_sha256(fetched, digest)
    return paths
