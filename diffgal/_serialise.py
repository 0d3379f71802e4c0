"""One file format for saved models: a JSON header line followed by `eqx.tree_serialise_leaves`.

The header carries a `format` tag, the hyperparameters needed to rebuild the module skeleton,
and the size and SHA-256 of the payload, so that a truncated, corrupted or foreign file is
rejected with a clear error instead of loading garbage. Never pickle.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import typing

import equinox as eqx
import jax
import jax.numpy as jnp


def write_model(path: str | os.PathLike, header: dict, tree: typing.Any) -> pathlib.Path:
    """Write `header` (JSON-able, with a `format` key) and the leaves of `tree` atomically."""
    path = pathlib.Path(path)
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, tree)
    payload = buffer.getvalue()
    header = {
        **header,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write((json.dumps(header, sort_keys=True) + "\n").encode())
        f.write(payload)
    os.replace(tmp, path)
    return path


def read_header(path: str | os.PathLike, *, api: str, format: str) -> tuple[dict, bytes]:
    """Read and check the header of a file written by `write_model`; returns (header, payload).

    `api` names the calling function in error messages; `format` is the expected tag.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`{api}`: {str(path)!r} does not exist.")
    raw = path.read_bytes()
    line, sep, payload = raw.partition(b"\n")
    try:
        header = json.loads(line.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"`{api}`: {str(path)!r} is not a diffgal {format!r} file or its header is corrupted "
            f"(could not parse the JSON header: {err})."
        ) from None
    if not sep or not isinstance(header, dict) or header.get("format") != format:
        found = header.get("format") if isinstance(header, dict) else None
        raise ValueError(
            f"`{api}`: {str(path)!r} is not a {format!r} file (its format tag is {found!r}); "
            "pass a file written by the matching `save` function."
        )
    if len(payload) != header.get("payload_bytes") or (
        hashlib.sha256(payload).hexdigest() != header.get("payload_sha256")
    ):
        raise ValueError(
            f"`{api}`: {str(path)!r} is corrupted or truncated: its payload ({len(payload)} bytes) "
            f"does not match the size ({header.get('payload_bytes')} bytes) and SHA-256 in its "
            "header. Re-create or re-download the file."
        )
    return header, payload


def read_leaves(payload: bytes, like: typing.Any, *, api: str, path, dtype=None) -> typing.Any:
    """Deserialise `payload` into the structure of `like`, with a clear error on mismatch.

    `dtype` (the floating dtype the file was written in) first casts every floating array of
    `like` to it, and every signed-integer array to the integer of the same width, so a
    float32 file loads in a process running with `jax_enable_x64` (where freshly built
    skeletons are 64-bit).
    """
    if dtype is not None:
        dtype = jnp.dtype(dtype)
        int_dtype = jnp.dtype(jnp.int64 if dtype.itemsize == 8 else jnp.int32)

        def cast(a):
            if eqx.is_inexact_array(a):
                return a.astype(dtype)
            if eqx.is_array(a) and jnp.issubdtype(a.dtype, jnp.signedinteger):
                return a.astype(int_dtype)
            return a

        like = jax.tree.map(cast, like)
    try:
        return eqx.tree_deserialise_leaves(io.BytesIO(payload), like)
    except Exception as err:  # shape/dtype/structure mismatch inside equinox or numpy
        raise ValueError(
            f"`{api}`: {str(path)!r} does not match the structure its header describes (its "
            f"arrays have other shapes or dtypes): {err}"
        ) from None
