"""`shard_map`: a `jax.shard_map` whose function may read and write states.

One call signature is planned once, in two steps:

1. **Discover** (`_discover`). The function runs once abstractly inside `jax.shard_map` (under
   `jax.make_jaxpr`, so nothing is computed). At its first touch, a state selected by `state_in_specs` is seen as
   its own block (the full value sliced by the shard's mesh coordinates), a random state as the shard's own key,
   any other state as its full (replicated) value. What the function writes, and whether each written value
   varies over the mesh (its type's varying manual axes), is recorded.
2. **Program** (`_program`). The states become inputs of one `jax.shard_map`, split by their specs (the rest
   replicated); written states come back with their spec: the `state_out_specs` entry, their input spec, or
   replicated (``P()``) when the value is the same on every shard. A value that differs per shard without a
   declared spec is a `BatchAxisError` naming the state. Random states give every shard its own stream from
   one split of the key (as `vmap2`/`pmap2` do), and the key advances once per call.

Calls run through the shared `Dispatcher` like `jit` and the mappings, and the program is `jax.jit`-compiled.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable
from typing import Any

import jax
from jax.sharding import PartitionSpec as P

from .. import _compat
from .._errors import BatchAxisError, MappingRuntimeError, describe_state, message, tree_aval
from .._state import State, generation, peek
from .._trace import StateTrace
from ..random._rng import RandomState, lane_keys
from ..util.filter import Predicate
from ._arguments import ArgSpec, CallSignature
from ._dispatch import Dispatcher, Program, check_signatures
from ._mapping import MappingPlan
from ._mapping_axes import coerce_selector, first_match, is_unmatched
from ._mapping_plan import lane_key_pairs, state_row
from ._reductions import label, lane_reduce, match_reduction, normalize_state_reduce

__all__ = ["shard_map", "StatefulShardMap"]

_RNG = "split-rng"


def shard_map(
    f: Callable[..., Any],
    mesh: jax.sharding.Mesh,
    in_specs: Any,
    out_specs: Any,
    *,
    state_in_specs: dict[Any, Any] | None = None,
    state_out_specs: dict[Any, Any] | None = None,
    state_reduce: dict[Any, Any] | None = None,
    check_vma: bool = True,
) -> StatefulShardMap:
    """`jax.shard_map` for a function that reads and writes states (see the module docstring for the rules).

    Args:
      f: Function of the argument blocks; it may read and write `State`s it closes over.
      mesh / in_specs / out_specs / check_vma: As in `jax.shard_map` (specs for positional arguments).
      state_in_specs: ``{PartitionSpec: selector}``: states split by that spec (each shard sees its block).
      state_out_specs: ``{PartitionSpec: selector}``: written states that come back with that spec.
      state_reduce: ``{reduction: selector}`` for replicated states written per shard, as in `vmap2`: the
        reduction over all shards (a collective over every mesh axis); they come back replicated.

    Returns:
      A `StatefulShardMap`; call it like `f`.

    Raises:
      BatchAxisError: a selected state's dimension does not divide by its mesh axes, or a state is written
        with a value that differs per shard but has no spec to come back with.

    Examples:
      >>> import numpy as np
      >>> from jax.sharding import Mesh, PartitionSpec as P
      >>> mesh = Mesh(np.array(jax.devices()), ("d",))
      >>> n = len(jax.devices())
      >>> rows = sm.ShortTermState(jnp.zeros((2 * n, 3)), name="rows")   # split by rows over the mesh
      >>> total = sm.ShortTermState(jnp.zeros(3), name="total")           # replicated
      >>> def step(x):
      ...     rows.value = rows.value + x
      ...     total.value = total.value + jax.lax.psum(x.sum(axis=0), "d")
      ...     return x * 2
      >>> f = sm.transform.shard_map(step, mesh, P("d"), P("d"), state_in_specs={P("d"): rows})
      >>> f(jnp.ones((2 * n, 3))).shape == (2 * n, 3), float(rows.value.sum()) == 6 * n, float(total.value[0]) == 2 * n
      (True, True, True)
    """
    return StatefulShardMap(f, mesh, in_specs, out_specs, state_in_specs, state_out_specs, state_reduce, check_vma)


def _specs(spec: dict[Any, Any] | None, what: str) -> tuple[tuple[P, Predicate], ...]:
    if spec is None:
        return ()
    if not isinstance(spec, dict) or not all(isinstance(k, P) for k in spec):
        raise TypeError(
            message(
                "shard_map",
                f"{what} is not a dict of PartitionSpec keys",
                f"{what}={{PartitionSpec: selector}}",
                f"{spec!r:.80}",
                f"write e.g. {what}={{P('d'): state}}",
            )
        )
    return tuple((k, coerce_selector(v)) for k, v in spec.items())


def _match(specs: tuple[tuple[P, Predicate], ...], state: State) -> P | None:
    """The spec of the first entry selecting `state`, or None (``P()`` is a spec: replicated)."""
    found = first_match(specs, state)
    return None if is_unmatched(found) else found


class StatefulShardMap:
    """The callable returned by `shard_map` (one plan per call signature, run by the shared `Dispatcher`).

    Examples:
      >>> import numpy as np
      >>> from jax.sharding import Mesh, PartitionSpec as P
      >>> mesh = Mesh(np.array(jax.devices()), ("d",))
      >>> f = sm.transform.shard_map(lambda x: x + 1, mesh, P("d"), P("d"))
      >>> type(f).__name__, f(jnp.zeros(len(jax.devices()))).sum() == len(jax.devices())
      ('StatefulShardMap', Array(True, dtype=bool))
    """

    def __init__(
        self,
        f: Callable[..., Any],
        mesh: jax.sharding.Mesh,
        in_specs: Any,
        out_specs: Any,
        state_in_specs: dict[Any, Any] | None,
        state_out_specs: dict[Any, Any] | None,
        state_reduce: dict[Any, Any] | None,
        check_vma: bool,
    ) -> None:
        if not callable(f):
            raise TypeError(f"shard_map: expected a callable, got {type(f).__name__}")
        self.origin_fun = f
        self.mesh, self.in_specs, self.out_specs, self.check_vma = mesh, in_specs, out_specs, check_vma
        self._state_in = _specs(state_in_specs, "state_in_specs")
        self._state_out = _specs(state_out_specs, "state_out_specs")
        self._reduce = normalize_state_reduce(state_reduce, "shard_map")
        self._plans: dict[Hashable, tuple[Program, int]] = {}
        self._dispatcher = Dispatcher(self._resolve, ArgSpec("shard_map"), fast=True)
        functools.update_wrapper(self, f, updated=())

    def __call__(self, *args: Any) -> Any:
        return self._dispatcher(args, {})

    def _resolve(self, sig: CallSignature, fresh: bool) -> tuple[Program, list[State]]:
        cached = None if fresh else self._plans.get(sig.key)
        if cached is not None and cached[1] == generation():
            states = cached[0].states()
            if states is not None:
                return cached[0], states
        found = _discover(self, sig)
        program = _program(self, sig, found)
        if program.cacheable:
            self._plans[sig.key] = (program, generation())
        return program, found.states

    def explain(self, *args: Any) -> MappingPlan:
        """How a call with these arguments treats each state, without running it (as `StatefulMapping.explain`).

        Examples:
          >>> import numpy as np
          >>> from jax.sharding import Mesh, PartitionSpec as P
          >>> mesh = Mesh(np.array(jax.devices()), ("d",))
          >>> h = sm.ShortTermState(jnp.zeros((2 * len(jax.devices()),)), name="h")
          >>> f = sm.transform.shard_map(lambda x: h.__setattr__("value", h.value + x), mesh, P("d"), P("d"),
          ...                            state_in_specs={P("d"): h})
          >>> row = f.explain(jnp.ones(2 * len(jax.devices()))).rows[0]
          >>> row["state"], row["in_axis"], row["out_axis"], row["how"]
          ("'h'", "P('d',)", "P('d',)", 'declared')
        """
        sig = CallSignature.of(self._dispatcher.spec, args, {})
        found = _discover(self, sig)
        rows = [_row(self, found, i) for i in range(len(found.states))]
        cached = self._plans.get(sig.key)
        return MappingPlan("shard_map", self.mesh.size, rows, "hit" if cached else "miss")

    def _role(self, state: State) -> Any:
        if isinstance(state, RandomState) and getattr(peek(state), "shape", None) == ():
            return _RNG
        return _match(self._state_in, state)


class _Found:
    """What one abstract run found: touched states, their roles, written ones and whether each write varies."""

    def __init__(self) -> None:
        self.states: list[State] = []
        self.roles: list[Any] = []
        self.written: list[bool] = []
        self.read: list[bool] = []
        self.varies: list[bool] = []


def _discover(sm_: StatefulShardMap, sig: CallSignature) -> _Found:
    found = _Found()
    mesh = sm_.mesh

    def probe(*blocks: Any) -> tuple[()]:
        trace = _compat.current_trace()

        def hook(state: State, value: Any) -> Any:
            role = sm_._role(state)
            with _compat.use_trace(trace):
                return _probe_view(mesh, state, role, value)

        with lane_keys(), StateTrace(hook, "shard_map") as frame:
            sm_.origin_fun(*blocks)
        for i, state in enumerate(frame.states):
            found.states.append(state)
            found.roles.append(sm_._role(state))
            found.written.append(frame.written[i])
            found.read.append(frame.read[i])
            found.varies.append(frame.written[i] and _compat.varies_over_mesh(frame.values[i]))
        return ()

    mapped = jax.shard_map(probe, mesh=mesh, in_specs=sm_.in_specs, out_specs=(), check_vma=sm_.check_vma)
    jax.make_jaxpr(mapped)(*sig.args)
    return found


def _axis_size(mesh: jax.sharding.Mesh, names: Any) -> int:
    names = names if isinstance(names, tuple) else (names,)
    return math.prod(mesh.shape[n] for n in names)


def _shard_index(mesh: jax.sharding.Mesh, names: Any) -> Any:
    """This shard's linear index over the mesh axes `names` (inside `jax.shard_map`)."""
    names = names if isinstance(names, tuple) else (names,)
    index: Any = 0
    for n in names:
        index = index * mesh.shape[n] + jax.lax.axis_index(n)
    return index


def _probe_view(mesh: jax.sharding.Mesh, state: State, role: Any, value: Any) -> Any:
    """A state's value as one shard sees it, from its full value (discovery only: nothing is computed)."""
    if role == _RNG:
        return jax.random.split(value, mesh.size)[_shard_index(mesh, tuple(mesh.axis_names))]
    if role is None:
        return value

    def block(x: Any) -> Any:
        _check_divides(mesh, state, role, x)
        for dim, names in enumerate(role):
            if names is not None:
                size = x.shape[dim] // _axis_size(mesh, names)
                x = jax.lax.dynamic_slice_in_dim(x, _shard_index(mesh, names) * size, size, axis=dim)
        return x

    return jax.tree_util.tree_map(block, value)


def _check_divides(mesh: jax.sharding.Mesh, state: State, spec: P, x: Any) -> None:
    for dim, names in enumerate(spec):
        if names is None:
            continue
        size = _axis_size(mesh, names)
        if dim >= x.ndim or x.shape[dim] % size:
            raise BatchAxisError(
                message(
                    "shard_map",
                    f"{describe_state(state)} is split by state_in_specs {spec} but its value {tree_aval(x)} "
                    f"does not divide along dimension {dim}",
                    f"dimension {dim} a multiple of {size} (the size of mesh axes {names})",
                    f"shape {tuple(x.shape)}",
                    "give the state a dimension divisible by the mesh axes, or leave it replicated",
                )
            )


def _out_spec(sm_: StatefulShardMap, found: _Found, i: int) -> P:
    state, role = found.states[i], found.roles[i]
    decl = _match(sm_._state_out, state)
    if decl is not None:
        return decl
    if isinstance(role, P):
        return role
    if found.varies[i]:
        raise BatchAxisError(
            message(
                "shard_map",
                f"{describe_state(state)} was written with a value that differs per shard, but state_out_specs "
                "does not select it",
                "a state_out_specs entry for every state written per shard (or a value reduced over the mesh)",
                f"a per-shard write of {tree_aval(peek(state))}",
                "declare it, e.g. state_in_specs={P('d'): s} and state_out_specs={P('d'): s}, or reduce the "
                "value with jax.lax.psum/pmean before writing it",
            )
        )
    return _spec()


def _row(sm_: StatefulShardMap, found: _Found, i: int) -> dict[str, Any]:
    state, role = found.states[i], found.roles[i]
    in_axis = "split-rng" if role == _RNG else (repr(role) if isinstance(role, P) else "broadcast")
    row = state_row(state, in_axis, found.read[i], found.written[i])
    if role == _RNG:
        row["how"] = "rng"
    elif found.written[i]:
        reduction = match_reduction(sm_._reduce, state)
        if reduction is not None:
            row["out_axis"], row["how"] = "P()", label(reduction)
        else:
            row["out_axis"] = repr(_out_spec(sm_, found, i))
            row["how"] = "declared" if isinstance(role, P) or _match(sm_._state_out, state) else "replicated"
    return row


def _spec(*names: Any) -> P:
    """A `PartitionSpec` (typed: JAX's constructor is not annotated)."""
    return P(*names)  # type: ignore[no-untyped-call]


def _program(sm_: StatefulShardMap, sig: CallSignature, found: _Found) -> Program:
    mesh, states = sm_.mesh, found.states
    axes = tuple(mesh.axis_names)
    writes = [i for i, w in enumerate(found.written) if w and found.roles[i] != _RNG]
    rng = [i for i, r in enumerate(found.roles) if r == _RNG]
    in_state_specs = tuple(_spec(axes) if r == _RNG else (r if isinstance(r, P) else _spec()) for r in found.roles)
    reduced = {i: r for i in writes if (r := match_reduction(sm_._reduce, states[i])) is not None}
    out_state_specs = tuple(_spec() if i in reduced else _out_spec(sm_, found, i) for i in writes)
    sigs = tuple(
        tuple((a.shape, a.dtype, a.weak_type) for a in map(jax.typeof, jax.tree_util.tree_leaves(peek(s))))
        for s in states
    )

    def body(args: tuple[Any, ...], blocks: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
        views: dict[int, Any] = {}
        with lane_keys() as register:
            for s, r, b in zip(states, found.roles, blocks, strict=True):
                if r == _RNG:
                    carry = b[0][1]
                    register(carry, b[0][0])
                    b = carry
                views[id(s)] = b
            with StateTrace(functools.partial(_view, views), "shard_map") as frame:
                out = sm_.origin_fun(*args)
        new = []
        for i in writes:
            value = frame.values[frame.index(states[i])]  # type: ignore[index]
            if i in reduced:  # a collective over every mesh axis: the same value on every shard
                value = lane_reduce(reduced[i], value, views[id(states[i])], axes)
            new.append(value)
        return out, tuple(new)

    mapped = jax.shard_map(
        body,
        mesh=mesh,
        in_specs=(sm_.in_specs if isinstance(sm_.in_specs, tuple) else (sm_.in_specs,) * len(sig.args), in_state_specs),
        out_specs=(sm_.out_specs, out_state_specs),
        check_vma=sm_.check_vma,
    )

    def run(arg_leaves: list[Any], values: list[Any]) -> tuple[list[Any], Any]:
        check_signatures(values, sigs)
        args, _ = sig.rebuild(arg_leaves)
        blocks, new_keys = list(values), []
        for i in rng:
            new_key, pairs = lane_key_pairs(values[i], mesh.size)
            blocks[i] = pairs
            new_keys.append(new_key)
        out, written = mapped(tuple(args), tuple(blocks))
        return list(written) + new_keys, out

    return Program(states, writes + rng, run, jax.jit(run))


def _view(views: dict[int, Any], state: State, value: Any) -> Any:
    try:
        return views[id(state)]
    except KeyError:
        raise MappingRuntimeError(
            f"shard_map: {describe_state(state)} was touched only on a second run of the function (its Python "
            "code depends on something other than its arguments and states); call it again to plan anew"
        ) from None
