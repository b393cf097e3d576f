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
   declared spec follows ``unexpected_out_state_mapping``: ``'raise'`` is a `BatchAxisError` naming the state;
   ``'warn'``/``'ignore'``/``'auto'`` bring it back as **rows**: a new leading axis with one row per shard (in
   mesh order, split by ``P(<every mesh axis>)``), as `vmap2` scatters an undeclared per-lane write on a new axis
   0. Under ``'auto'`` a state that is read and already has one row per shard on axis 0 is planned again with
   rows on input too: each shard sees its own row (axis 0 removed) and writes it back, so the state keeps its
   shape. Random states give every shard its own stream from one split of the key (as `vmap2`/`pmap2` do), and
   the key advances once per call.

Calls run through the shared `Dispatcher` like `jit` and the mappings, and the program is `jax.jit`-compiled.
With ``check_vma=False`` JAX records no varying axes, so every write is taken to be the same on every shard.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import weakref
from collections.abc import Callable, Hashable
from typing import Any

import jax
from jax.sharding import PartitionSpec as P

from .. import _compat
from .._errors import BatchAxisError, MappingRuntimeError, describe_state, message, tree_aval, warn_user
from .._state import State, generation, peek
from .._trace import StateTrace
from ..random._rng import RandomState, lane_keys
from ..util.filter import Predicate
from ._arguments import ArgSpec, CallSignature
from ._dispatch import Dispatcher, Program, check_signatures
from ._mapping import MappingPlan
from ._mapping_axes import POLICIES, first_match, is_unmatched, selector_table
from ._mapping_plan import lane_key_pairs, state_row
from ._reductions import Reduction, label, lane_reduce, match_reduction, normalize_state_reduce

__all__ = ["shard_map", "StatefulShardMap", "ShardMapConfig"]

_RNG = "split-rng"  # input role of a RandomState holding one key: every shard draws its own stream
_ROWS = "rows"  # input role under policy 'auto': one row per shard on axis 0, each shard sees its own row

Specs = tuple[tuple[P, Predicate], ...]


@dataclasses.dataclass(frozen=True)
class ShardMapConfig:
    """The declared configuration of a stateful `shard_map`, which validates the options and builds it (see
    `shard_map` for each option's meaning).

    Attributes:
      mesh / in_specs / out_specs / check_vma: As in `jax.shard_map`.
      state_in / state_out: Normalised ``((PartitionSpec, predicate), ...)``.
      state_reduce: Normalised ``((reduction, predicate), ...)`` (`_reductions.py`).
      policy: ``unexpected_out_state_mapping``.

    Examples:
      >>> import numpy as np
      >>> from jax.sharding import Mesh, PartitionSpec as P
      >>> mesh = Mesh(np.array(jax.devices()), ("d",))
      >>> config = sm.transform.shard_map(abs, mesh, P("d"), P("d"), unexpected_out_state_mapping="warn").config
      >>> type(config).__name__, config.policy, config.rows_spec
      ('ShardMapConfig', 'warn', P('d',))
    """

    mesh: jax.sharding.Mesh
    in_specs: Any
    out_specs: Any
    check_vma: bool = True
    state_in: Specs = ()
    state_out: Specs = ()
    state_reduce: tuple[tuple[Reduction, Predicate], ...] = ()
    policy: str = "raise"

    @property
    def axes(self) -> tuple[Any, ...]:
        return tuple(self.mesh.axis_names)

    @property
    def rows_spec(self) -> P:
        """How rows (one per shard, on axis 0) are split: over every mesh axis, in mesh order."""
        axes = self.axes
        return _spec(axes[0] if len(axes) == 1 else axes)


def shard_map(
    f: Callable[..., Any],
    mesh: jax.sharding.Mesh,
    in_specs: Any,
    out_specs: Any,
    *,
    state_in_specs: dict[Any, Any] | None = None,
    state_out_specs: dict[Any, Any] | None = None,
    state_reduce: dict[Any, Any] | None = None,
    unexpected_out_state_mapping: str = "raise",
    check_vma: bool = True,
) -> StatefulShardMap:
    """`jax.shard_map` for a function that reads and writes states (see the module docstring for the rules).

    Args:
      f: Function of the argument blocks; it may read and write `State`s it closes over.
      mesh / in_specs / out_specs / check_vma: As in `jax.shard_map` (specs for positional arguments).
      state_in_specs: ``{PartitionSpec: selector}``: states split by that spec (each shard sees its block).
        Selectors are those of `vmap2`'s ``state_in_axes``: a `State`, states, a State type, a tag, a filter.
      state_out_specs: ``{PartitionSpec: selector}``: written states that come back with that spec.
      state_reduce: ``{reduction: selector}`` for replicated states written per shard, as in `vmap2`: the
        reduction over all shards (a collective over every mesh axis); they come back replicated.
      unexpected_out_state_mapping: A state written with a value that differs per shard but selected by no
        spec or reduction: ``'raise'`` (default) a `BatchAxisError`; ``'warn'`` bring it back as rows (a new
        axis 0 with one row per shard, split by ``P(<every mesh axis>)``) with a warning; ``'ignore'`` the same,
        silently; ``'auto'`` the same, but a state that is read and already has one row per shard on axis 0
        is split into rows on input too (each shard sees its row), so it keeps its shape.

    Returns:
      A `StatefulShardMap`; call it like `f`.

    Raises:
      BatchAxisError: a selected state's dimension does not divide by its mesh axes, or a state is written
        with a value that differs per shard but has no spec to come back with (policy ``'raise'``).

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

      An undeclared per-shard write under ``'auto'``: the first call brings it back with one row per shard
      (with a warning), later calls give each shard its own row:

      >>> import warnings
      >>> seen = sm.ShortTermState(jnp.zeros(()), name="seen")
      >>> def count(x):
      ...     seen.value = seen.value + x.sum()
      ...     return x
      >>> g = sm.transform.shard_map(count, mesh, P("d"), P("d"), unexpected_out_state_mapping="auto")
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     _ = g(jnp.ones(2 * n))
      >>> seen.value.shape == (n,), "one row per shard" in str(caught[0].message)
      (True, True)
      >>> _ = g(jnp.ones(2 * n))
      >>> seen.value.shape == (n,), float(seen.value[0])
      (True, 4.0)
    """
    if unexpected_out_state_mapping not in POLICIES:
        raise ValueError(
            message(
                "shard_map",
                f"unexpected_out_state_mapping={unexpected_out_state_mapping!r} is not a policy",
                f"one of {', '.join(repr(p) for p in POLICIES)}",
                repr(unexpected_out_state_mapping),
                "use 'raise' (default), 'warn', 'ignore' or 'auto'",
            )
        )
    config = ShardMapConfig(
        mesh,
        in_specs,
        out_specs,
        bool(check_vma),
        _specs(state_in_specs, "state_in_specs"),
        _specs(state_out_specs, "state_out_specs"),
        normalize_state_reduce(state_reduce, "shard_map"),
        unexpected_out_state_mapping,
    )
    return StatefulShardMap(f, config)


def _specs(spec: dict[Any, Any] | None, what: str) -> Specs:
    return selector_table(spec, "shard_map", what, "PartitionSpec", lambda k: isinstance(k, P), "{P('d'): state}")


def _match(specs: Specs, state: State) -> P | None:
    """The spec of the first entry selecting `state`, or None (``P()`` is a spec: replicated)."""
    found = first_match(specs, state)
    return None if is_unmatched(found) else found


class StatefulShardMap:
    """The callable returned by `shard_map` (one plan per call signature, run by the shared `Dispatcher`).

    Attributes:
      origin_fun: The wrapped function.
      config: The frozen `ShardMapConfig`.

    Examples:
      >>> import numpy as np
      >>> from jax.sharding import Mesh, PartitionSpec as P
      >>> mesh = Mesh(np.array(jax.devices()), ("d",))
      >>> f = sm.transform.shard_map(lambda x: x + 1, mesh, P("d"), P("d"))
      >>> type(f).__name__, f(jnp.zeros(len(jax.devices()))).sum() == len(jax.devices())
      ('StatefulShardMap', Array(True, dtype=bool))
    """

    def __init__(self, f: Callable[..., Any], config: ShardMapConfig) -> None:
        if not callable(f):
            raise TypeError(f"shard_map: expected a callable, got {type(f).__name__}")
        self.origin_fun = f
        self.config = config
        self._plans: dict[Hashable, tuple[Program, int, tuple[Any, ...]]] = {}
        self._warned: weakref.WeakSet[State] = weakref.WeakSet()  # states a policy warned about (once each)
        self._rows: weakref.WeakSet[State] = weakref.WeakSet()  # states a policy brought back as rows
        self._dispatcher = Dispatcher(self._resolve, ArgSpec("shard_map"), fast=True)
        functools.update_wrapper(self, f, updated=())

    def __call__(self, *args: Any) -> Any:
        return self._dispatcher(args, {})

    def _resolve(self, sig: CallSignature, fresh: bool) -> tuple[Program, list[State]]:
        cached = None if fresh else self._plans.get(sig.key)
        states = None if cached is None else cached[0].states()
        if cached is not None and states is not None and cached[1] == generation():
            return cached[0], states
        gen = generation()
        found = _plan(self, sig)
        if cached is not None and states is not None and _same(states, cached[2], found):
            self._plans[sig.key] = (cached[0], gen, cached[2])  # a new generation, the same plan: keep the code
            return cached[0], states
        program = _program(self, sig, found)
        if program.cacheable:
            self._plans[sig.key] = (program, gen, _summary(found))
        return program, found.states

    def explain(self, *args: Any) -> MappingPlan:
        """How a call with these arguments treats each state, without running it (as `StatefulMapping.explain`).

        ``in_axis`` is the state's input spec (``'broadcast'``: replicated; ``'split-rng'``; ``'rows P(...)'``:
        one row per shard on axis 0, policy ``'auto'``), ``out_axis`` its output spec (``'rows P(...)'`` for a
        write brought back with one row per shard), ``how`` one of ``'declared'``, ``'replicated'``,
        ``'reduce:<r>'``, ``'policy:<p>'``, ``'rng'`` or ``'read-only'``.

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
        found = _plan(self, sig)
        rows = [_row(self.config, found, i) for i in range(len(found.states))]
        cached = self._plans.get(sig.key)
        return MappingPlan("shard_map", self.config.mesh.size, rows, "hit" if cached else "miss")

    def _as_rows(self, state: State, warning: str | None) -> None:
        """Record that a policy brings `state` back as rows (policy 'auto' reads them per shard next time)."""
        self._rows.add(state)
        if warning is not None and state not in self._warned:
            self._warned.add(state)
            warn_user(warning)


class _Found:
    """What one abstract run found: touched states, their roles, written ones and whether each write varies."""

    def __init__(self) -> None:
        self.states: list[State] = []
        self.roles: list[Any] = []
        self.written: list[bool] = []
        self.read: list[bool] = []
        self.varies: list[bool] = []
        self.shapes: list[Any] = []  # per state, the shapes of its leaves at the end of the run


def _summary(found: _Found) -> tuple[Any, ...]:
    """What a plan depends on besides the State objects themselves (their roles, writes and shapes)."""
    return (tuple(found.roles), tuple(found.written), tuple(found.read), tuple(found.varies), tuple(found.shapes))


def _same(states: list[State], summary: tuple[Any, ...], found: _Found) -> bool:
    """Whether a new discovery `found` gives the plan of these `states` and `summary` again."""
    return (
        len(states) == len(found.states)
        and all(a is b for a, b in zip(states, found.states, strict=True))
        and summary == _summary(found)
    )


def _role(config: ShardMapConfig, state: State, promoted: frozenset[int]) -> Any:
    if isinstance(state, RandomState) and getattr(peek(state), "shape", None) == ():
        return _RNG
    if id(state) in promoted:
        return _ROWS
    return _match(config.state_in, state)


def _plan(sm_: StatefulShardMap, sig: CallSignature) -> _Found:
    """Discover the call, giving rows on input to the states policy 'auto' promotes.

    Those are the states this transform brought back as rows before (known before tracing, so the function
    never sees their full value), and any other state read and written per shard that already has one row per
    shard (found by the first discovery, which then runs once more).
    """
    config = sm_.config
    promoted = frozenset(id(s) for s in sm_._rows if _has_rows(config, s)) if config.policy == "auto" else frozenset()
    found = _discover(sm_, sig, promoted)
    more = frozenset(id(s) for i, s in enumerate(found.states) if _promotes(config, found, i))
    return _discover(sm_, sig, promoted | more) if more else found


def _discover(sm_: StatefulShardMap, sig: CallSignature, promoted: frozenset[int]) -> _Found:
    found = _Found()
    config = sm_.config

    def probe(*blocks: Any) -> tuple[()]:
        trace = _compat.current_trace()

        def hook(state: State, value: Any) -> Any:
            with _compat.use_trace(trace):
                return _probe_view(config, state, _role(config, state, promoted), value)

        with lane_keys(), StateTrace(hook, "shard_map") as frame:
            sm_.origin_fun(*blocks)
        for i, state in enumerate(frame.states):
            found.states.append(state)
            found.roles.append(_role(config, state, promoted))
            found.written.append(frame.written[i])
            found.read.append(frame.read[i])
            found.varies.append(frame.written[i] and _compat.varies_over_mesh(frame.values[i]))
            found.shapes.append([tuple(x.shape) for x in jax.tree_util.tree_leaves(frame.values[i])])
        return ()

    mapped = jax.shard_map(probe, mesh=config.mesh, in_specs=config.in_specs, out_specs=(), check_vma=config.check_vma)
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


def _probe_view(config: ShardMapConfig, state: State, role: Any, value: Any) -> Any:
    """A state's value as one shard sees it, from its full value (discovery only: nothing is computed)."""
    mesh = config.mesh
    if role == _RNG:
        return jax.random.split(value, mesh.size)[_shard_index(mesh, config.axes)]
    if role == _ROWS:
        index = _shard_index(mesh, config.axes)
        return jax.tree_util.tree_map(lambda x: jax.lax.dynamic_index_in_dim(x, index, keepdims=False), value)
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


def _promotes(config: ShardMapConfig, found: _Found, i: int) -> bool:
    """Policy 'auto': an undeclared state read and written per shard that already has one row per shard."""
    state = found.states[i]
    if config.policy != "auto" or not (found.varies[i] and found.read[i]) or found.roles[i] is not None:
        return False
    if _match(config.state_out, state) is not None or match_reduction(config.state_reduce, state) is not None:
        return False
    return _has_rows(config, state)


def _has_rows(config: ShardMapConfig, state: State) -> bool:
    """Whether every leaf of the state's value has one row per shard on axis 0."""
    if isinstance(state, RandomState) or _match(config.state_in, state) is not None:
        return False
    leaves = jax.tree_util.tree_leaves(peek(state))
    return bool(leaves) and all(getattr(x, "ndim", 0) >= 1 and x.shape[0] == config.mesh.size for x in leaves)


def _out_spec(config: ShardMapConfig, found: _Found, i: int) -> tuple[P, str]:
    """(output spec, how it was decided) of a written state that is not reduced."""
    state, role = found.states[i], found.roles[i]
    decl = _match(config.state_out, state)
    if decl is not None:
        return decl, "declared"
    if role == _ROWS:
        return config.rows_spec, "policy:auto"
    if isinstance(role, P):
        return role, "declared"
    if not found.varies[i]:
        return _spec(), "replicated"
    if config.policy == "raise":
        raise BatchAxisError(
            message(
                "shard_map",
                f"{describe_state(state)} was written with a value that differs per shard, but state_out_specs "
                "does not select it",
                "a state_out_specs entry for every state written per shard (or a value reduced over the mesh)",
                f"a per-shard write of {tree_aval(peek(state))}",
                "declare it, e.g. state_in_specs={P('d'): s} and state_out_specs={P('d'): s}, reduce the value "
                "with jax.lax.psum/pmean before writing it, or pass unexpected_out_state_mapping='warn'/'auto' to "
                "bring it back with one row per shard",
            )
        )
    return config.rows_spec, f"policy:{config.policy}"


def _row(config: ShardMapConfig, found: _Found, i: int) -> dict[str, Any]:
    state, role = found.states[i], found.roles[i]
    in_axis = {_RNG: "split-rng", _ROWS: f"rows {config.rows_spec!r}", None: "broadcast"}.get(role, repr(role))
    row = state_row(state, in_axis, found.read[i], found.written[i])
    if role == _RNG:
        row["how"] = "rng"
    elif found.written[i]:
        reduction = match_reduction(config.state_reduce, state)
        if reduction is not None:
            row["out_axis"], row["how"] = "P()", label(reduction)
        else:
            spec, how = _out_spec(config, found, i)
            row["out_axis"] = f"rows {spec!r}" if how.startswith("policy:") else repr(spec)
            row["how"] = how
    return row


def _spec(*names: Any) -> P:
    """A `PartitionSpec` (typed: JAX's constructor is not annotated)."""
    return P(*names)  # type: ignore[no-untyped-call]


def _out_specs(
    sm_: StatefulShardMap, found: _Found, writes: list[int]
) -> tuple[dict[int, Reduction], list[P], set[int]]:
    """Per written state: its reduction, its output spec, and whether it comes back as rows (a policy)."""
    config, states = sm_.config, found.states
    reduced = {i: r for i in writes if (r := match_reduction(config.state_reduce, states[i])) is not None}
    specs: list[P] = []
    rows: set[int] = set()
    for i in writes:
        if i in reduced:
            specs.append(_spec())
            continue
        spec, how = _out_spec(config, found, i)
        specs.append(spec)
        if how.startswith("policy:"):
            rows.add(i)
            sm_._as_rows(states[i], _rows_warning(config, found, i) if how != "policy:ignore" else None)
    return reduced, specs, rows


def _rows_warning(config: ShardMapConfig, found: _Found, i: int) -> str | None:
    if found.roles[i] == _ROWS:  # read per shard already: nothing changes shape
        return None
    shapes = ", ".join(str((config.mesh.size, *shape)) for shape in found.shapes[i])
    return (
        f"shard_map: {describe_state(found.states[i])} was written with a value that differs per shard but is not "
        f"declared in state_out_specs; it comes back with one row per shard on a new axis 0 of size "
        f"{config.mesh.size} (new shape {shapes}). Declare it to silence this warning."
    )


def _program(sm_: StatefulShardMap, sig: CallSignature, found: _Found) -> Program:
    config, states = sm_.config, found.states
    writes = [i for i, w in enumerate(found.written) if w and found.roles[i] != _RNG]
    rng = [i for i, r in enumerate(found.roles) if r == _RNG]
    in_state_specs = tuple(_in_spec(config, r) for r in found.roles)
    reduced, out_state_specs, rows = _out_specs(sm_, found, writes)
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
                elif r == _ROWS:  # the shard's block is its one row
                    b = jax.tree_util.tree_map(lambda x: x[0], b)
                views[id(s)] = b
            with StateTrace(functools.partial(_view, views), "shard_map") as frame:
                out = sm_.origin_fun(*args)
        new = []
        for i in writes:
            value = frame.values[frame.index(states[i])]  # type: ignore[index]
            if i in reduced:  # a collective over every mesh axis: the same value on every shard
                value = lane_reduce(reduced[i], value, views[id(states[i])], config.axes)
            elif i in rows:  # one row per shard
                value = jax.tree_util.tree_map(lambda x: x[None], value)
            new.append(value)
        return out, tuple(new)

    per_arg = config.in_specs if isinstance(config.in_specs, tuple) else (config.in_specs,) * len(sig.args)
    mapped = jax.shard_map(
        body,
        mesh=config.mesh,
        in_specs=(per_arg, in_state_specs),
        out_specs=(config.out_specs, tuple(out_state_specs)),
        check_vma=config.check_vma,
    )

    def run(arg_leaves: list[Any], values: list[Any]) -> tuple[list[Any], Any]:
        check_signatures(values, sigs)
        args, _ = sig.rebuild(arg_leaves)
        blocks, new_keys = list(values), []
        for i in rng:
            new_key, pairs = lane_key_pairs(values[i], config.mesh.size)
            blocks[i] = pairs
            new_keys.append(new_key)
        out, written = mapped(tuple(args), tuple(blocks))
        return list(written) + new_keys, out

    return Program(states, writes + rng, run, jax.jit(run))


def _in_spec(config: ShardMapConfig, role: Any) -> P:
    if role in (_RNG, _ROWS):
        return config.rows_spec if role == _ROWS else _spec(config.axes)
    return role if isinstance(role, P) else _spec()


def _view(views: dict[int, Any], state: State, value: Any) -> Any:
    try:
        return views[id(state)]
    except KeyError:
        raise MappingRuntimeError(
            f"shard_map: {describe_state(state)} was touched only on a second run of the function (its Python "
            "code depends on something other than its arguments and states); call it again to plan anew"
        ) from None
