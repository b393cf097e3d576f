"""The orbax-checkpoint side of `statemap.checkpoint`: a checkpoint directory of named arrays and a description.

orbax-checkpoint is the optional extra ``statemap[checkpoint]``; this module imports it only inside the functions
that need it (`_orbax`), so ``import statemap`` and ``.npz`` checkpoints work with jax and numpy alone.

A checkpoint is an orbax composite checkpoint directory with two items:

- ``arrays/``: the leaves, as one flat dict ``{leaf name: array}`` written by orbax's `PyTreeCheckpointHandler`
  (tensorstore, OCDBT). Every process writes the shards it holds, so a `jax.Array` sharded over a mesh, across
  processes too, is never gathered; `read_arrays` reads each leaf into the sharding it is given.
- ``statemap/``: the JSON description of the states (the same as the ``.npz`` format's ``__statemap__`` entry).

Caveats:

- Atomic save: orbax writes into ``<path>.orbax-checkpoint-tmp-<n>`` and renames it to `path` once every process
  has finished; its restore refuses such a temporary directory.
- Overwrite: orbax's own ``force`` deletes the old directory *before* writing the new one. `write` instead
  saves into ``<path>.statemap-staging`` and swaps it in only when complete (process 0 renames, then every process
  waits at a barrier), so a failed overwrite keeps the previous checkpoint. Only the instant between the two
  renames leaves no checkpoint at `path` (the old one is then at ``<path>.statemap-old``); never a partial one.
- Every process of a `jax.distributed` job must call `write` and `read_arrays` (orbax synchronises them).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import jax

from ._errors import CheckpointError, message

ITEM = "statemap"  # the composite item holding the JSON description
_ARRAYS = "arrays"  # the composite item holding the leaves


def _orbax(who: str, path: str) -> Any:
    """The `orbax.checkpoint` module, or a `CheckpointError` naming the extra to install."""
    try:
        import orbax.checkpoint as ocp
    except ImportError as e:
        raise CheckpointError(
            message(
                who,
                f"the checkpoint directory {path!r} is an orbax checkpoint, and orbax-checkpoint is not installed",
                "the optional extra statemap[checkpoint] (orbax-checkpoint) for checkpoint directories",
                f"ImportError: {e}",
                "pip install 'statemap[checkpoint]', or use a single-file checkpoint: a path ending in '.npz'",
            )
        ) from None
    return ocp


def is_checkpoint(path: str) -> bool:
    """Whether `path` is a directory that `write` made (it holds the description item)."""
    return os.path.isdir(os.path.join(path, ITEM))


def _save(ocp: Any, path: str, arrays: dict[str, Any], meta: dict[str, Any], force: bool) -> None:
    items = {ITEM: ocp.args.JsonSave(meta)}
    if arrays:  # orbax refuses an empty tree: states without leaves need no array item
        items[_ARRAYS] = ocp.args.PyTreeSave(arrays)
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    try:
        checkpointer.save(path, ocp.args.Composite(**items), force=force)
    finally:
        checkpointer.close()


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def write(path: str, arrays: dict[str, Any], meta: dict[str, Any], *, overwrite: bool) -> None:
    """Save `arrays` (leaf name → array) and the description `meta` as a checkpoint directory at `path`.

    The caller has checked that `path` is absent, or (with `overwrite`) a checkpoint that `write` made.
    """
    ocp = _orbax("save", path)
    if not (overwrite and os.path.exists(path)):
        _save(ocp, path, arrays, meta, force=False)
        return
    staging, old = path + ".statemap-staging", path + ".statemap-old"
    _save(ocp, staging, arrays, meta, force=True)  # force: a staging directory left by a failed save goes
    if jax.process_index() == 0:
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(staging, path)
        shutil.rmtree(old)
    _barrier("statemap.checkpoint.save:" + path)


def read_description(path: str) -> dict[str, Any]:
    """The JSON description of the checkpoint directory at `path`."""
    if not is_checkpoint(path):
        raise CheckpointError(
            message(
                "restore",
                f"{path!r} is not a complete statemap checkpoint",
                f"a directory written by statemap.checkpoint.save (with a {ITEM!r} item)",
                f"a directory holding {sorted(os.listdir(path))[:5]}",
                "restore a directory written by save (one named '*.orbax-checkpoint-tmp*' is a save that did not "
                "finish); read other orbax checkpoints with orbax and pass the values to load_state_dict",
            )
        )
    ocp = _orbax("restore", path)
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    try:
        out: dict[str, Any] = checkpointer.restore(path, ocp.args.Composite(**{ITEM: ocp.args.JsonRestore()}))[ITEM]
    except (ValueError, FileNotFoundError, KeyError) as e:  # an incomplete or damaged checkpoint
        raise CheckpointError(
            message(
                "restore",
                f"orbax cannot read the checkpoint directory {path!r}",
                "a complete checkpoint written by statemap.checkpoint.save",
                f"{type(e).__name__}: {e}",
                "restore another checkpoint (a save that failed leaves no directory at its path)",
            )
        ) from None
    finally:
        checkpointer.close()
    return out


def read_arrays(path: str, targets: dict[str, jax.ShapeDtypeStruct]) -> dict[str, Any]:
    """Read the leaves named in `targets`, each as a `jax.Array` with its target's sharding (NumPy without one)."""
    if not targets:
        return {}
    ocp = _orbax("restore", path)
    args = ocp.args.PyTreeRestore(
        item=targets, restore_args=ocp.checkpoint_utils.construct_restore_args(targets), partial_restore=True
    )
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    try:
        out: dict[str, Any] = checkpointer.restore(path, ocp.args.Composite(**{_ARRAYS: args}))[_ARRAYS]
    finally:
        checkpointer.close()
    return out
