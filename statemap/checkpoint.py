"""Checkpoints: the values of a module's states as a flat dict, saved to and restored from disk.

A *state dict* maps a string key per state to the state's value (a pytree of arrays). For a `statemap.nn.Module`
the key is the state's path joined by dots (``'layers.0.weight'``); for a dict of states it is the dict's key,
and for a list of states its index. `restore` and `load_state_dict` write the values back *in place*: the same
`State` objects, so closures and compiled transforms keep working, after checking every name, structure, shape
and dtype first (nothing is written when one does not fit).

`save` stores one array per leaf, named by the state's key and the leaf's path inside the value
(``'layers.0.weight'``, ``"opt['mu']"``), with a JSON description of the states (type, dtype, shape and PRNG
implementation of every leaf). The path chooses the format:

- **a directory** (any path not ending in ``.npz``; the default): an orbax-checkpoint directory, from the optional
  extra ``pip install 'statemap[checkpoint]'``. Each process writes the shards it holds, so a `jax.Array` sharded
  over a mesh is never gathered, and `restore` reads every leaf into the sharding of the value it replaces.
- **a file ending in** ``.npz``: one NumPy ``.npz`` file of whole arrays (bfloat16 stored as raw bits, PRNG keys
  as their key data), which `numpy.load` reads without statemap. It needs no extra, and one process.

Both formats are written under a temporary name and renamed when complete, so a failed save leaves no checkpoint
at its path that `restore` would accept; an existing path is refused unless ``overwrite=True``, and a failed
overwrite keeps the previous checkpoint.

Why `Module` and `State` are not pytrees: a pytree is taken apart into its leaves by every JAX transform, so
``jax.jit(f)(model)`` (or a statemap transform given a module as an argument) would receive copies of the
values, and the writes made inside would be lost without an error. statemap keeps states out of arguments
(`StateArgumentError`) and threads them by closure instead; `state_dict` is the pytree view of a module's
values, for `jax.tree_util`, optimisers and checkpoints.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import _orbax_io
from ._errors import CheckpointError, describe_state, message, tree_aval
from ._state import State, peek, write_back
from .nn._module import Module
from .util.filter import to_predicate

__all__ = ["CheckpointError", "state_dict", "load_state_dict", "save", "restore"]

_META = "__statemap__"  # the JSON entry of an .npz checkpoint
_FORMAT = "statemap.checkpoint/1"


def _states_of(target: Any, filters: tuple[Any, ...], who: str) -> dict[str, State]:
    """Key → State for a Module (dotted paths), a mapping of states (its keys) or a sequence of states."""
    if isinstance(target, Module):
        items = [(".".join(str(p) for p in path), s) for path, s in target.states(*filters).items()]
    elif isinstance(target, Mapping):
        items = [(str(k), s) for k, s in target.items()]
    elif isinstance(target, Sequence) and not isinstance(target, str):
        items = [(str(i), s) for i, s in enumerate(target)]
    else:
        raise CheckpointError(
            message(
                who,
                f"cannot take the states of a {type(target).__name__}",
                "a statemap.nn.Module, a dict of States or a list of States",
                f"{type(target).__name__} {target!r:.60}",
                "pass the module itself, or collect the states, e.g. {'w': w, 'b': b}",
            )
        )
    out: dict[str, State] = {}
    for key, s in items:
        if not isinstance(s, State):
            raise CheckpointError(
                message(who, f"entry {key!r} is not a State", "States", type(s).__name__, "pass States only")
            )
        if key in out and out[key] is not s:
            raise CheckpointError(
                message(
                    who,
                    f"two states have the key {key!r}: {describe_state(out[key])} and {describe_state(s)}",
                    "one key per state",
                    "a path that contains a dot, or two equal keys",
                    "rename the attribute or dict key so that the dotted paths differ",
                )
            )
        out[key] = s
    if filters and not isinstance(target, Module):
        pred = to_predicate(list(filters))
        out = {k: s for k, s in out.items() if pred((k,), s)}
    return out


def _names(keys: Sequence[str], states: Mapping[str, State] | None = None, limit: int = 5) -> str:
    shown = [f"{k!r} ({describe_state(states[k])})" if states else repr(k) for k in keys[:limit]]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(shown) + more


def _check_keys(states: Mapping[str, State], keys: Sequence[str], strict: bool, who: str) -> None:
    """With `strict`, refuse keys of `states` absent from `keys`, and `keys` with no state."""
    if not strict:
        return
    missing = [k for k in states if k not in keys]
    unexpected = [k for k in keys if k not in states]
    if not missing and not unexpected:
        return
    problems = []
    if missing:
        problems.append(f"missing entries for {_names(missing, states)}")
    if unexpected:
        problems.append(f"unexpected entries {_names(unexpected)} (no state has these keys)")
    raise CheckpointError(
        message(
            who,
            "the keys do not match the states: " + "; ".join(problems),
            "exactly one entry per state (strict=True)",
            f"{len(keys)} entries for {len(states)} states",
            "load a checkpoint of the same model, select states with filters, or pass strict=False to load "
            "only the entries that match a state",
        )
    )


def _is_key(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jax.dtypes.prng_key)


def _check_fits(state: State, key: str, value: Any, who: str) -> None:
    """Refuse `value` (arrays or `jax.ShapeDtypeStruct`s) unless it has the structure, shapes, dtypes of the state's."""
    cur_leaves, cur_def_ = jax.tree_util.tree_flatten(peek(state))
    cur_def: Any = cur_def_
    if not cur_leaves:  # a state not yet initialised takes any value
        return
    new_leaves, new_def = jax.tree_util.tree_flatten(value)
    fits = cur_def == new_def and all(
        np.shape(a) == np.shape(b) and jnp.result_type(a) == jnp.result_type(b)
        for a, b in zip(cur_leaves, new_leaves, strict=False)
    )
    if not fits:
        what = "shape or dtype" if cur_def == new_def else "pytree structure"
        raise CheckpointError(
            message(
                who,
                f"entry {key!r} has another {what} than {describe_state(state)}",
                f"{tree_aval(peek(state))} (structure {cur_def})",
                f"{tree_aval(value)} (structure {new_def})",
                "load a checkpoint made from the same model configuration, or resize the state first "
                "(`state.restore_value(...)`)",
            )
        )


def _conform(state: State, key: str, value: Any, who: str) -> Any:
    """`value` with JAX array leaves (PRNG keys kept), after checking that it fits the state (`_check_fits`)."""
    _check_fits(state, key, value, who)
    return jax.tree_util.tree_map(lambda b: b if _is_key(b) else jnp.asarray(b), value)


def _load(states: Mapping[str, State], values: Mapping[str, Any], strict: bool, who: str) -> None:
    _check_keys(states, list(values), strict, who)
    keys = [k for k in states if k in values]
    new = {i: _conform(states[k], k, values[k], who) for i, k in enumerate(keys)}
    # Everything fits: one write-back of all the states (committed together, under the write lock).
    write_back([states[k] for k in keys], new, who)


def state_dict(target: Any, *filters: Any) -> dict[str, Any]:
    """The values of the states of `target`, keyed by path (``'layers.0.weight'``), dict key or list index.

    Args:
      target: A `statemap.nn.Module`, a dict of `State`s or a list of `State`s.
      *filters: Keep only the states matching any of these (`statemap.util.filter` filters or State types).
    Returns:
      A new dict of the states' current values (pytrees of arrays, not copies of the states).

    Examples:
      >>> class Lin(sm.nn.Module):
      ...     def __init__(self):
      ...         self.w = sm.ParamState(jnp.ones((2, 3)))
      ...         self.steps = sm.ShortTermState(jnp.array(0))
      >>> {k: v.shape for k, v in sm.checkpoint.state_dict(Lin()).items()}
      {'w': (2, 3), 'steps': ()}
      >>> list(sm.checkpoint.state_dict(Lin(), sm.ParamState))
      ['w']
    """
    return {k: s.value for k, s in _states_of(target, filters, "state_dict").items()}


def load_state_dict(target: Any, values: Mapping[str, Any], *, strict: bool = True) -> None:
    """Write `values` (a `state_dict`) into the states of `target`, in place.

    Every entry is checked before anything is written: its pytree structure, leaf shapes and dtypes must be
    those of the state's current value (a state whose value has no leaves, not yet initialised, takes any
    value). Leaves are converted to JAX arrays.

    Args:
      target: A `statemap.nn.Module`, a dict of `State`s or a list of `State`s.
      values: Key → value, as returned by `state_dict`.
      strict: Require exactly one entry per state. With False, states without an entry keep their values and
        entries without a state are ignored (shapes and dtypes are still checked).
    Raises:
      CheckpointError: a key is missing or unexpected (with `strict`), or an entry does not fit its state.

    Examples:
      >>> w = sm.ParamState(jnp.zeros(2), name="w")
      >>> sm.checkpoint.load_state_dict({"w": w}, {"w": jnp.ones(2)}); w.value
      Array([1., 1.], dtype=float32)
      >>> sm.checkpoint.load_state_dict({"w": w}, {"w": jnp.ones(3)})
      Traceback (most recent call last):
      ...
      statemap._errors.CheckpointError: load_state_dict: entry 'w' has another shape or dtype than state 'w' ...
    """
    _load(_states_of(target, (), "load_state_dict"), values, strict, "load_state_dict")


# -- save ------------------------------------------------------------------------------------------------------
def _as_array(state: State, key: str, leaf: Any) -> jax.Array:
    """`leaf` as a JAX array: refuse a tracer (save inside a transform) or a leaf that is not array-like."""
    if isinstance(leaf, jax.core.Tracer):
        raise CheckpointError(
            message(
                "save",
                f"{describe_state(state)} holds a JAX tracer (entry {key!r})",
                "concrete values",
                f"a tracer {tree_aval(leaf)}: save was called inside a transform",
                "call save outside every transform",
            )
        )
    if isinstance(leaf, jax.Array):
        return leaf
    try:
        return jnp.asarray(leaf)
    except TypeError:
        raise CheckpointError(
            message(
                "save",
                f"{describe_state(state)} holds a leaf that is not an array (entry {key!r})",
                "array leaves: JAX or NumPy arrays, Python numbers",
                f"a {type(leaf).__name__}",
                "keep non-array data out of states, e.g. as a plain attribute",
            )
        ) from None


def _npz_array(state: State, key: str, leaf: jax.Array) -> np.ndarray:
    """The whole of `leaf` as a NumPy array; bfloat16 and other ml_dtypes as their raw bits."""
    if not leaf.is_fully_addressable:
        raise CheckpointError(
            message(
                "save",
                f"{describe_state(state)} holds an array sharded across processes (entry {key!r})",
                "whole arrays on this process, for an .npz file",
                f"{tree_aval(leaf)} with {leaf.sharding}",
                "save to a directory (a path not ending in '.npz'): orbax writes each process's shards",
            )
        )
    arr = np.asarray(leaf)
    if np.dtype(arr.dtype.str) != arr.dtype:
        arr = arr.view(f"u{arr.dtype.itemsize}")
    return arr


def _orbax_array(state: State, key: str, leaf: jax.Array) -> jax.Array:
    """`leaf` as orbax saves it: under `jax.distributed`, an array each process holds whole becomes global.

    orbax saves only global arrays across processes. A plain array on a local device (a scalar, a replicated
    parameter) is taken to be the same on every process: it becomes an array replicated on one device per process,
    and process 0's copy is written. An array split over one process's devices (rows that differ per process) is
    refused.
    """
    if jax.process_count() == 1 or not leaf.is_fully_addressable:
        return leaf
    if not leaf.sharding.is_fully_replicated:
        raise CheckpointError(
            message(
                "save",
                f"{describe_state(state)} holds an array split over this process's devices only (entry {key!r})",
                "a global array (sharded over the devices of every process), or one each process holds whole",
                f"{tree_aval(leaf)} with {leaf.sharding}",
                "build it as a global array: jax.make_array_from_process_local_data(sharding, local_rows)",
            )
        )
    one_each = [jax.local_devices(process_index=p)[0] for p in range(jax.process_count())]
    replicated = NamedSharding(Mesh(np.array(one_each), ("processes",)), PartitionSpec())  # type: ignore[no-untyped-call]
    out: jax.Array = jax.make_array_from_process_local_data(replicated, np.asarray(leaf))  # type: ignore[no-untyped-call]
    return out


def _stored(state: State, key: str, leaf: Any, npz: bool) -> tuple[Any, dict[str, Any]]:
    """The array to store for `leaf`, and its description: dtype, shape and PRNG implementation (or None)."""
    leaf = _as_array(state, key, leaf)
    info: dict[str, Any] = {"dtype": str(leaf.dtype), "shape": list(leaf.shape), "impl": None}
    if _is_key(leaf):
        info["impl"] = str(jax.random.key_impl(leaf))
        leaf = jax.random.key_data(leaf)
    return (_npz_array(state, key, leaf) if npz else _orbax_array(state, key, leaf)), info


def _collect(states: Mapping[str, State], npz: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(leaf name → array to store, the JSON description of the states)."""
    arrays: dict[str, Any] = {}
    meta: dict[str, Any] = {"format": _FORMAT, "states": {}}
    for key, state in states.items():
        leaves = []
        for kp, leaf in jax.tree_util.tree_flatten_with_path(peek(state))[0]:
            name = key + jax.tree_util.keystr(kp)
            if name in arrays:
                raise CheckpointError(
                    message(
                        "save",
                        f"two leaves have the name {name!r}, one of them in {describe_state(state)}",
                        "one name per leaf: the state's key followed by the leaf's path in its value",
                        "a state key that equals another state's key and leaf path",
                        "rename the dict key or attribute so that the names differ",
                    )
                )
            arrays[name], info = _stored(state, key, leaf, npz)
            leaves.append({"name": name, **info})
        meta["states"][key] = {"type": type(state).__name__, "leaves": leaves}
    return arrays, meta


def _check_destination(path: str, npz: bool, overwrite: bool) -> None:
    """Refuse an existing `path`, unless `overwrite` and it is a checkpoint of the same format."""
    if not os.path.lexists(path):
        return
    kind = "directory" if os.path.isdir(path) else "file"
    replaceable = kind == "file" if npz else _orbax_io.is_checkpoint(path)
    if overwrite and replaceable:
        return
    if replaceable:
        problem, expected = f"{path!r} already exists", "a path that does not exist yet, or overwrite=True"
        fix = "pass overwrite=True to replace it, or choose another path"
    else:
        problem = f"{path!r} exists and is not a {'file' if npz else 'statemap checkpoint directory'}"
        expected = "a path that does not exist yet, or (with overwrite=True) a checkpoint of the same format"
        fix = "choose another path: save replaces only a checkpoint of the same format"
    raise CheckpointError(message("save", problem, expected, f"a {kind}", fix))


def _write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` as an ``.npz`` file at `path`, atomically (a temporary file renamed over it)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".statemap-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name, arr in arrays.items():
                    with zf.open(name + ".npy", "w", force_zip64=True) as out:
                        np.lib.format.write_array(out, arr, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save(path: str | os.PathLike[str], target: Any, *filters: Any, overwrite: bool = False) -> None:
    """Save the values of the states of `target`: an orbax checkpoint directory, or an ``.npz`` file.

    A path ending in ``.npz`` is written as one NumPy ``.npz`` file; any other path as an orbax-checkpoint
    directory (needs ``pip install 'statemap[checkpoint]'``), where each process writes the shards of the sharded
    arrays it holds. Either way each leaf is one array, named by the state's key and the leaf's path in its value
    (``'layers.0.weight'``, ``"opt['mu']"``), with a JSON description of the states (PRNG keys are stored as
    their key data and implementation). The checkpoint is written under a temporary name and renamed when
    complete, so a failed save leaves no checkpoint at `path`, and a failed overwrite keeps the old one. Under
    `jax.distributed`, every process calls `save` with the same path (on a file system they share).

    Args:
      path: The checkpoint directory, or a file name ending in ``.npz``.
      target: A `statemap.nn.Module`, a dict of `State`s or a list of `State`s.
      *filters: Save only the states matching any of these.
      overwrite: Replace a checkpoint already at `path` (only a file for ``.npz``, only a directory written by
        `save` otherwise). With False, an existing path is an error (as orbax's ``force=False``).
    Raises:
      CheckpointError: `path` exists (without `overwrite`, or is not a checkpoint of the same format); a state
        holds a tracer (save was called inside a transform) or a non-array leaf; two states share a key, or two
        leaves a name; orbax-checkpoint is missing for a directory; an array is split in a way the format cannot
        hold (across processes for ``.npz``; over one process's devices only, under `jax.distributed`).

    Examples:
      >>> import os, tempfile
      >>> folder = tempfile.mkdtemp()
      >>> w = sm.ParamState(jnp.arange(3.0), name="w")
      >>> sm.checkpoint.save(os.path.join(folder, "ckpt"), {"w": w})  # a directory (orbax)
      >>> sm.checkpoint.save(os.path.join(folder, "w.npz"), {"w": w})  # one file (NumPy)
      >>> sorted(os.listdir(folder))
      ['ckpt', 'w.npz']
      >>> w.value = jnp.zeros(3)
      >>> sm.checkpoint.save(os.path.join(folder, "ckpt"), {"w": w})
      Traceback (most recent call last):
      ...
      statemap._errors.CheckpointError: save: '...ckpt' already exists ...
      >>> sm.checkpoint.save(os.path.join(folder, "ckpt"), {"w": w}, overwrite=True)
    """
    dest = os.fspath(path)
    npz = dest.endswith(".npz")
    states = _states_of(target, filters, "save")
    _check_destination(dest, npz, overwrite)
    arrays, meta = _collect(states, npz)
    if npz:
        _write_npz(dest, {**arrays, _META: np.array(json.dumps(meta))})
    else:
        _orbax_io.write(os.path.abspath(dest), arrays, meta, overwrite=overwrite)


# -- restore ---------------------------------------------------------------------------------------------------
def _check_format(meta: dict[str, Any], path: str) -> dict[str, Any]:
    """The states' descriptions of a checkpoint, after checking its format version."""
    if meta.get("format") != _FORMAT:
        raise CheckpointError(
            message(
                "restore",
                f"{path!r} has an unknown checkpoint format",
                repr(_FORMAT),
                repr(meta.get("format")),
                "restore it with the statemap version that wrote it",
            )
        )
    states: dict[str, Any] = meta["states"]
    return states


@functools.cache
def _key_dtype(impl: str) -> Any:
    return jax.eval_shape(lambda: jax.random.key(0, impl=impl)).dtype


def _saved_struct(info: dict[str, Any]) -> jax.ShapeDtypeStruct:
    """The abstract value of a saved leaf (a PRNG key array for a key)."""
    dtype = _key_dtype(info["impl"]) if info["impl"] else jnp.dtype(info["dtype"])
    return jax.ShapeDtypeStruct(tuple(info["shape"]), dtype)  # type: ignore[no-untyped-call]


def _wrap(arr: Any, info: dict[str, Any]) -> Any:
    """A stored array as the leaf it was: a PRNG key array from its key data, bfloat16 from its raw bits."""
    if info["impl"] is not None:
        return jax.random.wrap_key_data(arr, impl=info["impl"])
    dtype = jnp.dtype(info["dtype"])
    return arr.view(dtype) if arr.dtype != dtype and arr.dtype.itemsize == dtype.itemsize else arr


def _rebuild(state: State, key: str, entry: dict[str, Any], leaves: list[Any]) -> Any:
    """The saved leaves of state `key`, in the pytree structure of the state's current value."""
    kps, treedef = jax.tree_util.tree_flatten_with_path(peek(state))
    names = [key + jax.tree_util.keystr(kp) for kp, _ in kps]
    saved_names = [info["name"] for info in entry["leaves"]]
    if names == saved_names:
        return jax.tree_util.tree_unflatten(treedef, leaves)
    if not names and saved_names == [key]:  # a state not yet initialised, saved with one array
        return leaves[0]
    raise CheckpointError(
        message(
            "restore",
            f"entry {key!r} has another pytree structure than {describe_state(state)}",
            f"leaves {names}",
            f"leaves {saved_names}",
            "restore a checkpoint made from the same model configuration",
        )
    )


def _open_npz(path: str) -> Any:
    """The open `numpy.lib.npyio.NpzFile` of a statemap ``.npz`` checkpoint at `path`."""
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile) as e:  # not an .npz file (a missing one raises as is)
        found = f"{type(e).__name__}: {e}"
    else:
        if not isinstance(data, np.lib.npyio.NpzFile):
            found = f"a single {type(data).__name__} (an .npy file)"
        elif _META in data.files:
            return data
        else:
            found = f"an .npz file with entries {sorted(data.files)[:5]}"
            data.close()
    raise CheckpointError(
        message(
            "restore",
            f"{path!r} is not a statemap checkpoint",
            f"a directory or an .npz file written by statemap.checkpoint.save (with a {_META!r} entry)",
            found,
            "load the arrays with numpy.load and pass them to load_state_dict",
        )
    )


def _sharding(leaf: Any, key_data: bool = False) -> jax.sharding.Sharding | None:
    """The sharding of a concrete `jax.Array` leaf (with `key_data`, of a PRNG key array's key data), else None."""
    if not isinstance(leaf, jax.Array) or isinstance(leaf, jax.core.Tracer):
        return None
    return (jax.random.key_data(leaf) if key_data and _is_key(leaf) else leaf).sharding


def _placed(state: State, key: str, value: Any) -> Any:
    """`value`, checked to fit the state, with each leaf on the sharding of the `jax.Array` it replaces."""
    _check_fits(state, key, value, "restore")
    current = jax.tree_util.tree_leaves(peek(state))
    if not current:  # a state not yet initialised: the default device
        return value
    leaves, treedef = jax.tree_util.tree_flatten(value)
    shardings = [_sharding(cur) for cur in current]
    placed = [new if sh is None else jax.device_put(new, sh) for new, sh in zip(leaves, shardings, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, placed)


def _read_npz(path: str, states: Mapping[str, State], strict: bool) -> dict[str, Any]:
    with _open_npz(path) as data:
        saved = _check_format(json.loads(str(data[_META])), path)
        _check_keys(states, list(saved), strict, "restore")
        return {
            k: _placed(s, k, _rebuild(s, k, saved[k], [_wrap(data[i["name"]], i) for i in saved[k]["leaves"]]))
            for k, s in states.items()
            if k in saved
        }


def _targets(state: State, infos: list[dict[str, Any]]) -> dict[str, jax.ShapeDtypeStruct]:
    """Leaf name → what to read it as: its stored shape and dtype, with the sharding of the value it replaces."""
    current = jax.tree_util.tree_leaves(peek(state)) or [None] * len(infos)
    out = {}
    for cur, info in zip(current, infos, strict=True):
        want = _saved_struct(info)
        stored = jax.eval_shape(jax.random.key_data, want) if info["impl"] else want
        # A leaf that is not a jax.Array (or a state not yet initialised) has no sharding: it is read as NumPy.
        out[info["name"]] = jax.ShapeDtypeStruct(stored.shape, stored.dtype, sharding=_sharding(cur, key_data=True))  # type: ignore[no-untyped-call]
    return out


def _read_orbax(path: str, states: Mapping[str, State], strict: bool) -> dict[str, Any]:
    saved = _check_format(_orbax_io.read_description(path), path)
    _check_keys(states, list(saved), strict, "restore")
    picked = [k for k in states if k in saved]
    targets: dict[str, jax.ShapeDtypeStruct] = {}
    for k in picked:  # check everything against the description before reading any array
        infos = saved[k]["leaves"]
        _check_fits(states[k], k, _rebuild(states[k], k, saved[k], [_saved_struct(i) for i in infos]), "restore")
        targets.update(_targets(states[k], infos))
    arrays = _orbax_io.read_arrays(path, targets)
    # The leaves are on their targets' shardings; `_placed` also gives a key array its key array's sharding.
    return {
        k: _placed(states[k], k, _rebuild(states[k], k, saved[k], [_wrap(arrays[i["name"]], i) for i in infos]))
        for k in picked
        for infos in [saved[k]["leaves"]]
    }


def restore(path: str | os.PathLike[str], target: Any, *filters: Any, strict: bool = True) -> None:
    """Restore the states of `target`, in place, from a checkpoint written by `save`.

    A directory is read as an orbax checkpoint, a file as an ``.npz`` checkpoint. Every entry is checked (keys,
    pytree structure, shapes, dtypes; for a directory from its description, before any array is read), then all
    values are read, then all states are written at once: a restore that fails leaves every state as it was.
    From a directory, each leaf is read into the sharding of the value it replaces (a `jax.Array` sharded over a
    mesh comes back sharded the same way, across processes too); a leaf that is not a `jax.Array`, or a state
    not yet initialised, comes back on the default device. PRNG keys come back as key arrays.

    Args:
      path: A checkpoint directory or ``.npz`` file written by `save`.
      target: A `statemap.nn.Module`, a dict of `State`s or a list of `State`s.
      *filters: Restore only the states matching any of these (with `strict`, the checkpoint must hold exactly
        them).
      strict: Require exactly one entry per state; with False, unmatched states and entries are skipped.
    Raises:
      CheckpointError: `path` is not a complete statemap checkpoint, or does not fit the states; the
        orbax-checkpoint extra is missing for a directory.
      FileNotFoundError: nothing is at `path`.

    Examples:
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
      >>> sm.checkpoint.save(path, [sm.State(jnp.ones(2))])
      >>> sm.checkpoint.restore(path, [sm.State(jnp.ones(2)), sm.State(1.0)])
      Traceback (most recent call last):
      ...
      statemap._errors.CheckpointError: restore: the keys do not match the states: missing entries for '1' ...
      >>> key = sm.State(jax.random.key(1))
      >>> sm.checkpoint.restore(path, [key], strict=False)  # '0' is a float array, not a key
      Traceback (most recent call last):
      ...
      statemap._errors.CheckpointError: restore: entry '0' has another shape or dtype than state ...
    """
    src = os.fspath(path)
    states = _states_of(target, filters, "restore")
    with jax.ensure_compile_time_eval():  # concrete arrays, also when called inside a transform
        values = _read_orbax(src, states, strict) if os.path.isdir(src) else _read_npz(src, states, strict)
    _load(states, values, False, "restore")
