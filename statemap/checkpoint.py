"""Checkpoints: the values of a module's states as a flat dict, saved to and restored from a portable file.

A *state dict* maps a string key per state to the state's value (a pytree of arrays). For a `statemap.nn.Module`
the key is the state's path joined by dots (``'layers.0.weight'``); for a dict of states it is the dict's key,
and for a list of states its index. `save` writes a state dict to one NumPy ``.npz`` file (a zip of ``.npy``
arrays, one per leaf, plus a JSON entry describing the states), which `numpy.load` can read without statemap.
`restore` and `load_state_dict` write the values back *in place*: the same `State` objects, so closures and
compiled transforms keep working, after checking every name, structure, shape and dtype first (nothing is
written when one does not fit).

Why `Module` and `State` are not pytrees: a pytree is taken apart into its leaves by every JAX transform, so
``jax.jit(f)(model)`` (or a statemap transform given a module as an argument) would receive copies of the
values, and the writes made inside would be lost without an error. statemap keeps states out of arguments
(`StateArgumentError`) and threads them by closure instead; `state_dict` is the pytree view of a module's
values, for `jax.tree_util`, optimisers and checkpoints.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import CheckpointError, describe_state, message, tree_aval
from ._state import State, peek
from .nn._module import Module
from .util.filter import to_predicate

__all__ = ["CheckpointError", "state_dict", "load_state_dict", "save", "restore"]

_META = "__statemap__"  # the JSON entry of a checkpoint file
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


def _conform(state: State, key: str, value: Any, who: str) -> Any:
    """`value` with the leaf types of the state's current value, after checking structure, shapes, dtypes."""
    cur_leaves, cur_def_ = jax.tree_util.tree_flatten(peek(state))
    cur_def: Any = cur_def_
    new_leaves, new_def = jax.tree_util.tree_flatten(value)
    if not cur_leaves:  # a state not yet initialised takes any value
        return jax.tree_util.tree_map(jnp.asarray, value)
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
    out = [b if _is_key(b) else jnp.asarray(b) for b in new_leaves]
    return jax.tree_util.tree_unflatten(cur_def, out)


def _load(states: Mapping[str, State], values: Mapping[str, Any], strict: bool, who: str) -> None:
    _check_keys(states, list(values), strict, who)
    new = {k: _conform(s, k, values[k], who) for k, s in states.items() if k in values}
    for k, v in new.items():  # everything fits: write (a ParamState keeps its shapes, so this cannot fail)
        states[k].value = v


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


def _leaf_array(state: State, key: str, leaf: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """A NumPy array to store for `leaf`, and its description (dtype name, PRNG implementation)."""
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
    info: dict[str, Any] = {"dtype": str(jnp.result_type(leaf)), "impl": None}
    if _is_key(leaf):
        info["impl"] = str(jax.random.key_impl(leaf))
        leaf = jax.random.key_data(leaf)
    arr = np.asarray(leaf)
    if np.dtype(arr.dtype.str) != arr.dtype:  # bfloat16 and other ml_dtypes: store the raw bits
        arr = arr.view(f"u{arr.dtype.itemsize}")
    return arr, info


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


def save(path: str | os.PathLike[str], target: Any, *filters: Any) -> None:
    """Save the values of the states of `target` to a NumPy ``.npz`` file at `path` (used as given).

    Each leaf of each state is one array, named by the state's key and the leaf's path inside the value
    (``'layers.0.weight'``, ``"opt['mu']"``); PRNG keys are stored as their raw data and ``bfloat16`` as raw
    bits, with their types in the file's JSON entry ``__statemap__``. The file is written to a temporary file
    in the same folder and renamed, so an interrupted save never leaves a partial checkpoint at `path`.

    Args:
      path: Destination file.
      target: A `statemap.nn.Module`, a dict of `State`s or a list of `State`s.
      *filters: Save only the states matching any of these.
    Raises:
      CheckpointError: a state holds a tracer (save was called inside a transform), or two states share a key.

    Examples:
      >>> import os, tempfile
      >>> w = sm.ParamState(jnp.arange(3.0), name="w")
      >>> path = os.path.join(tempfile.mkdtemp(), "w.npz")
      >>> sm.checkpoint.save(path, {"w": w})
      >>> w.value = jnp.zeros(3)
      >>> sm.checkpoint.restore(path, {"w": w}); w.value
      Array([0., 1., 2.], dtype=float32)
    """
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"format": _FORMAT, "states": {}}
    for key, state in _states_of(target, filters, "save").items():
        leaves = []
        for kp, leaf in jax.tree_util.tree_flatten_with_path(peek(state))[0]:
            name = key + jax.tree_util.keystr(kp)
            arrays[name], info = _leaf_array(state, key, leaf)
            leaves.append({"name": name, **info})
        meta["states"][key] = {"type": type(state).__name__, "leaves": leaves}
    arrays[_META] = np.array(json.dumps(meta))
    _write_npz(os.fspath(path), arrays)


def _read_meta(data: Any, path: str) -> dict[str, Any]:
    if _META not in data.files:
        raise CheckpointError(
            message(
                "restore",
                f"{path!r} is not a statemap checkpoint",
                f"an .npz file written by statemap.checkpoint.save (with a {_META!r} entry)",
                f"entries {sorted(data.files)[:5]}",
                "load the arrays with numpy.load and pass them to load_state_dict",
            )
        )
    meta: dict[str, Any] = json.loads(str(data[_META]))
    return meta


def _leaf_value(data: Any, info: dict[str, Any]) -> Any:
    arr = data[info["name"]]
    if info["impl"] is not None:
        return jax.random.wrap_key_data(arr, impl=info["impl"])
    dtype = jnp.dtype(info["dtype"])
    return arr.view(dtype) if arr.dtype != dtype and arr.dtype.itemsize == dtype.itemsize else arr


def _rebuild(state: State, key: str, saved: dict[str, Any], data: Any) -> Any:
    """The saved value of state `key`, in the pytree structure of the state's current value."""
    kps, treedef = jax.tree_util.tree_flatten_with_path(peek(state))
    names = [key + jax.tree_util.keystr(kp) for kp, _ in kps]
    saved_names = [info["name"] for info in saved["leaves"]]
    values = [_leaf_value(data, info) for info in saved["leaves"]]
    if names == saved_names:
        return jax.tree_util.tree_unflatten(treedef, values)
    if not names and saved_names == [key]:  # a state not yet initialised, saved with one array
        return values[0]
    raise CheckpointError(
        message(
            "restore",
            f"entry {key!r} has another pytree structure than {describe_state(state)}",
            f"leaves {names}",
            f"leaves {saved_names}",
            "restore a checkpoint made from the same model configuration",
        )
    )


def restore(path: str | os.PathLike[str], target: Any, *filters: Any, strict: bool = True) -> None:
    """Restore the states of `target`, in place, from a file written by `save`.

    Every entry is checked (keys, pytree structure, shapes, dtypes) before any state is written, as in
    `load_state_dict`.

    Args:
      path: A file written by `save`.
      target: A `statemap.nn.Module`, a dict of `State`s or a list of `State`s.
      *filters: Restore only the states matching any of these (with `strict`, the file must hold exactly them).
      strict: Require exactly one entry per state; with False, unmatched states and entries are skipped.
    Raises:
      CheckpointError: the file is not a statemap checkpoint, or does not fit the states.

    Examples:
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "ab.npz")
      >>> sm.checkpoint.save(path, [sm.State(jnp.ones(2))])
      >>> sm.checkpoint.restore(path, [sm.State(jnp.ones(2)), sm.State(1.0)])
      Traceback (most recent call last):
      ...
      statemap._errors.CheckpointError: restore: the keys do not match the states: missing entries for '1' ...
    """
    states = _states_of(target, filters, "restore")
    with np.load(os.fspath(path), allow_pickle=False) as data:
        saved = _read_meta(data, os.fspath(path))["states"]
        _check_keys(states, list(saved), strict, "restore")
        values = {k: _rebuild(s, k, saved[k], data) for k, s in states.items() if k in saved}
    _load(states, values, False, "restore")
