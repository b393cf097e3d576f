"""The state-aware mapping engine behind `StatefulMapping`, `vmap2`, `pmap2` and `map`.

Passes of a cold call (one per abstract signature):

1. **Axes.** Broadcast `in_axes` over the arguments (kwargs are mapped on axis 0), validate every mapped leaf and
   collect the batch sizes they imply.
2. **Trace.** Trace the user's function once, abstractly, on one lane (`trace_stateful`). At its first touch each
   state is given its input role: a random state with a scalar key is split per lane; a state selected by
   `state_in_axes` at axis ``k`` enters as one lane (its axis ``k`` removed, after checking it exists); any other
   state is broadcast. Its module path is passed to the filters.
3. **Discovery.** Evaluate the traced jaxpr (not the Python body) under `jax.vmap` inside `jax.make_jaxpr`, which
   computes nothing, and read which outputs *this* vmap batched (`_compat.batch_dim_in`, which compares trace
   identity, so values batched only by an enclosing map are not mistaken for inner-batched ones).
4. **Plan.** Decide each written state's output axis from the declarations and the policy
   ``unexpected_out_state_mapping``; every inconsistency is a `BatchAxisError` naming the state.
5. **Executable.** Build ``mapping_fn(lane, ...)`` once per plan; for `jax.vmap` it is wrapped in `jax.jit`, so a
   warm eager call is one cached executable with a stable identity (under an outer `jit` it simply inlines).

Eager calls of a `jax.vmap` mapping without static arguments take the *dispatch* path: one `jax.jit` built at
construction receives the values of every state the mapping is known to touch plus the arguments, so JAX's C++
dispatch does the signature check; its traced body (run by JAX only for a new signature) finds or builds the
plan and inlines it. Other calls (inside an enclosing statemap transform, `pmap`, static arguments) look the plan
up by the abstract signature of the arguments and static values, read the states' values, run the executable
and write results back. Plans hold states by weak reference; a dead state, or a state whose
shape changed (detected when JAX retraces the executable), rebuilds the plan. Random states advance exactly once
per call: their key is split into ``B + 1`` keys inside the executable, lane ``i`` gets key ``i + 1`` and the
state keeps key 0.

Caveats: under ``'auto'`` a read-modify-write state that is promoted to per-lane input is traced a second time on
the cold call (it needs a different per-lane shape); the Python body of the function runs once per trace.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax

from .. import _compat
from .._errors import (
    BatchAxisError,
    MappingRuntimeError,
    StatemapError,
    describe_state,
    message,
    short_aval,
    tree_aval,
    without_jax_note,
)
from .._state import State
from .._trace import CONTEXT
from ..random._rng import RandomState
from ._dispatch import DeadState, NewStates, dead
from ._make_jaxpr import (
    Traced,
    leaf_signature,
    normalize_argnames,
    normalize_argnums,
    positional_names,
    resolve_argnums,
    signature_key,
    static_split,
    trace_stateful,
    value_signature,
)
from ._mapping_axes import (
    POLICIES,
    arg_leaf_axes,
    check_in_axes_type,
    drop_axis,
    is_unmatched,
    leaf_size,
    match_axis,
    normalize_state_axes,
    prefix_leaf_axes,
)
from ._method import bind_method, shift_argnums, weak_partial

__all__ = ["StatefulMapping", "MappingPlan"]

# Input roles of a state.
_RNG = "rng"  # scalar-key RandomState: split per lane
_BCAST = "broadcast"


class _StalePlan(Exception):
    """Internal: a state changed shape since the plan was built (never reaches users)."""


def _sds(x: Any) -> jax.ShapeDtypeStruct:
    aval = jax.typeof(x)
    return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type)


def _is_scalar_key(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return (
        dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and getattr(value, "shape", None) == ()
    )


def vmap_fn(spmd_axis_name: Hashable | tuple[Hashable, ...] | None) -> Callable:
    """`jax.vmap`, or a partial of it with `spmd_axis_name` (still recognised as vmap by `_is_vmap`)."""
    if spmd_axis_name is None:
        return jax.vmap
    return functools.partial(jax.vmap, spmd_axis_name=spmd_axis_name)


def _is_vmap(mapping_fn: Callable) -> bool:
    fn = mapping_fn
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn is jax.vmap


class MappingPlan:
    """How one signature of a mapped function treats each state (returned by `StatefulMapping.explain`).

    Attributes:
      name: Name of the mapping transform.
      batch_size: Size of the mapped axis.
      rows: One dict per touched state: ``state`` (label), ``type``, ``created``, ``shape``, ``read``,
        ``written``, ``in_axis`` (int, ``'broadcast'`` or ``'split-rng'``), ``out_axis`` (int, ``None`` for an
        unbatched write-back, ``'-'`` when not written back), ``how`` (``'declared'``, ``'inferred'``,
        ``'policy:<p>'``, ``'rng'`` or ``'read-only'``).
      cache: ``'hit'`` or ``'miss'`` for the signature explained.

    Example:
      >>> h = sm.ShortTermState(jnp.zeros(3), name="h")
      >>> f = sm.transform.vmap2(lambda x: h.__setattr__("value", h.value + x), state_in_axes={0: h})
      >>> plan = f.explain(jnp.ones(3))
      >>> plan.batch_size, plan.cache, plan.rows[0]["state"], plan.rows[0]["out_axis"]
      (3, 'miss', "'h'", 0)
    """

    def __init__(self, name: str, batch_size: int, rows: list[dict[str, Any]], cache: str) -> None:
        self.name = name
        self.batch_size = batch_size
        self.rows = rows
        self.cache = cache

    def __str__(self) -> str:
        cols = ["state", "type", "created", "shape", "read", "written", "in_axis", "out_axis", "how"]
        table = [cols] + [[str(r[c]) for c in cols] for r in self.rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
        lines = [f"{self.name}: batch size {self.batch_size}, plan cache {self.cache}"]
        for j, row in enumerate(table):
            lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
            if j == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))
        if not self.rows:
            lines.append("  (no states touched)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"MappingPlan(name={self.name!r}, batch_size={self.batch_size}, states={len(self.rows)})"


class _Plan:
    """A built plan: the traced entry, the states' roles and the executable."""

    __slots__ = (
        "refs",
        "entry",
        "size",
        "roles",
        "out_list",
        "out_axes",
        "rng",
        "write",
        "exe",
        "run",
        "rows",
    )

    def __init__(self) -> None:
        self.refs: list[weakref.ref] = []
        self.entry: Traced
        self.size = 0
        self.roles: list[Any] = []  # per state (entry order): an int axis, _BCAST or _RNG
        self.out_list: list[int] = []  # state indices written back, in order
        self.out_axes: list[int | None] = []
        self.rng: list[int] = []
        self.write: list[int] = []  # out_list + rng: the order of the executable's new state values
        self.exe: Callable
        self.run: Callable
        self.rows: list[dict[str, Any]] = []

    def live_states(self) -> list[State] | None:
        states = [r() for r in self.refs]
        if any(s is None for s in states):
            return None
        return states  # type: ignore[return-value]


class StatefulMapping:
    """A `jax.vmap`/`jax.pmap` that keeps state semantics.

    States the function closes over are handled per lane: states selected by `state_in_axes` are sliced along
    the mapped axis and written back there; other states are broadcast; random states (`RandomState` holding one
    key) are split per lane and advance once per call; states written with a per-lane value are scattered as
    `state_out_axes` declares, and undeclared ones as `unexpected_out_state_mapping` says.

    Args:
      fun: Function to map; it may read and write `State`s it closes over.
      in_axes: As in `jax.vmap`: int, None, or a tuple/pytree prefix with one entry per positional argument.
        Keyword arguments are mapped on axis 0.
      out_axes: As in `jax.vmap`, for the function's result.
      state_in_axes: ``{axis: selector}`` or a bare selector (axis 0). A selector is a filter (type, tag, ``...``,
        predicate…), a `State`, or an iterable of States. Axis None means explicitly broadcast.
      state_out_axes: Same form; where a written state's mapped axis goes.
      unexpected_out_state_mapping: What to do with an undeclared state written with a per-lane value:
        ``'raise'`` (default) a `BatchAxisError`; ``'warn'`` scatter it on axis 0 with a warning; ``'ignore'``
        scatter it silently; ``'auto'`` scatter it, and map it per lane on input too when it is read first and
        already has the batch size on axis 0.
      static_argnums / static_argnames: Arguments closed over as constants (hashable; part of the cache key).
      axis_env: Extra ``[(axis_name, size)]`` named axes visible to collectives while tracing.
      return_only_write: If False, states that are only read are written back too (unchanged values).
      axis_size: Size of the mapped axis; required when nothing mapped determines it.
      axis_name: Name of the mapped axis for collectives (`jax.lax.psum`…).
      name: Name used in messages (default ``'StatefulMapping'``).
      mapping_fn: `jax.vmap`, `jax.pmap`, a partial of them, or any callable with their keyword interface.
      mapping_kwargs: Extra keyword arguments for `mapping_fn`.

    Attributes:
      origin_fun: The wrapped function.
      state_in_axes / state_out_axes: The normalised ``{axis: predicate}`` dicts.
      mapping_fn, mapping_kwargs, in_axes, out_axes, axis_size, axis_name, name, static_argnums,
      static_argnames, axis_env, return_only_write, unexpected_out_state_mapping: As given.

    Raises:
      TypeError: `in_axes` has an unsupported type, or a selector cannot be converted.
      ValueError: an invalid policy (at construction); `BatchAxisError` (a `ValueError`) for missing, out of range
        or inconsistent batch axes and undeclared per-lane writes.
      RuntimeError: `MappingRuntimeError` when statemap's own machinery fails. Exceptions raised by `fun` propagate
        with their own type, with a note naming the mapped function.

    Example:
      The state is the counter of each of three lanes, so it has a leading axis of size 3:

      >>> from statemap.util.filter import OfType
      >>> counter = sm.ShortTermState(jnp.zeros(3), name="counter")
      >>> def accumulate(x):
      ...     counter.value = counter.value + x
      ...     return counter.value
      >>> batched = sm.transform.StatefulMapping(
      ...     accumulate,
      ...     in_axes=0,
      ...     out_axes=0,
      ...     state_in_axes={0: OfType(sm.ShortTermState)},
      ...     state_out_axes={0: OfType(sm.ShortTermState)},
      ...     name="batched_accumulate",
      ... )
      >>> batched(jnp.array([1.0, 2.0, 3.0]))
      Array([1., 2., 3.], dtype=float32)
      >>> counter.value
      Array([1., 2., 3.], dtype=float32)

      A 0-d counter cannot be mapped on axis 0: lanes are independent, so it needs one slot per lane. The error
      says so and names the fixes (a running sum over the inputs is a sequential `map`):

      >>> scalar = sm.ShortTermState(jnp.array(0.0), name="scalar_counter")
      >>> def accumulate(x):
      ...     scalar.value = scalar.value + x
      ...     return scalar.value
      >>> sm.transform.StatefulMapping(accumulate, state_in_axes={0: OfType(sm.ShortTermState)},
      ...                              state_out_axes={0: OfType(sm.ShortTermState)})(jnp.ones(3))
      Traceback (most recent call last):
      ...
      statemap._errors.BatchAxisError: StatefulMapping: state 'scalar_counter' (ShortTermState, created at ...)
        is selected by state_in_axes on axis 0 but its value f32[] has no axis 0
        expected: a value with a mapped axis 0 whose size is the batch size (one slot per lane)
        found:    shape () (0 dimension(s))
        fix:      give the state an axis 0 of the batch size, e.g. ShortTermState(jnp.zeros(3)) for a 0-d value
        mapped over 3 lanes; or, for a running sum over the inputs, use statemap.transform.map(f, xs), which runs
        the lanes sequentially
      >>> scalar.value
      Array(0., dtype=float32, weak_type=True)
    """

    def __init__(
        self,
        fun: Callable,
        in_axes: Any = 0,
        out_axes: Any = 0,
        state_in_axes: Any = None,
        state_out_axes: Any = None,
        unexpected_out_state_mapping: str = "raise",
        static_argnums: int | Sequence[int] = (),
        static_argnames: str | Sequence[str] = (),
        axis_env: Sequence[tuple[Hashable, int]] | None = None,
        return_only_write: bool = True,
        axis_size: int | None = None,
        axis_name: Hashable | None = None,
        name: str | None = None,
        mapping_fn: Callable = jax.vmap,
        mapping_kwargs: dict[str, Any] | None = None,
    ) -> None:
        who = name or "StatefulMapping"
        if not callable(fun):
            raise TypeError(f"{who}: expected a callable to map, got {type(fun).__name__}")
        if unexpected_out_state_mapping not in POLICIES:
            raise ValueError(
                message(
                    who,
                    f"unexpected_out_state_mapping={unexpected_out_state_mapping!r} is not a policy",
                    f"one of {', '.join(repr(p) for p in POLICIES)}",
                    repr(unexpected_out_state_mapping),
                    "use 'raise' (default), 'warn', 'ignore' or 'auto'",
                )
            )
        check_in_axes_type(in_axes, who)
        if axis_size is not None and (isinstance(axis_size, bool) or not isinstance(axis_size, int) or axis_size < 1):
            raise ValueError(
                message(
                    who,
                    "axis_size must be a positive int",
                    "axis_size >= 1 or None",
                    repr(axis_size),
                    "pass the number of lanes",
                )
            )
        if not callable(mapping_fn):
            raise TypeError(f"{who}: mapping_fn must be callable, got {type(mapping_fn).__name__}")
        self.origin_fun = fun
        self.name = who
        self.in_axes = in_axes
        self.out_axes = out_axes
        self.state_in_axes = normalize_state_axes(state_in_axes, who, "state_in_axes")
        self.state_out_axes = normalize_state_axes(state_out_axes, who, "state_out_axes")
        self.unexpected_out_state_mapping = unexpected_out_state_mapping
        self.static_argnums = normalize_argnums(static_argnums)
        self.static_argnames = normalize_argnames(static_argnames)
        self._param_names = positional_names(fun) if (self.static_argnums or self.static_argnames) else ()
        self.axis_env = list(axis_env) if axis_env else []
        self.return_only_write = bool(return_only_write)
        self.axis_size = axis_size
        self.axis_name = axis_name
        self.mapping_fn = mapping_fn
        self.mapping_kwargs = dict(mapping_kwargs or {})
        self._describe_output: Callable[[Any], str] = lambda p: f"output result{jax.tree_util.keystr(p)}"
        self._none_fix = "set out_axes=0 for it, or reduce it over the axis (jax.lax.psum with axis_name)"
        self._words = ("state_in_axes", "state_out_axes")  # legacy `vmap` says in_states/out_states
        self._donate_argnums: tuple[int, ...] = ()  # pmap2: user argument numbering
        self._plans: dict[Hashable, _Plan] = {}
        self._hits = 0
        self._misses = 0
        self._known: list[weakref.ref] = []  # dispatch path: states whose values it passes (held weakly)
        self._known_index: dict[int, int] = {}
        simple = _is_vmap(mapping_fn) and not (self.static_argnums or self.static_argnames)
        self._dispatcher: Callable | None = jax.jit(self._dispatch) if simple else None
        functools.update_wrapper(self, fun, updated=())

    # -- calling --------------------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        dispatcher = self._dispatcher
        if dispatcher is None or CONTEXT.stack:
            return self._call_traced(args, kwargs)
        misses = self._misses
        while True:
            states: list[Any] = [r() for r in self._known]
            try:
                values = [s._value if s._dead is None else dead(s) for s in states]
                result, written = dispatcher(values, args, kwargs)
            except NewStates as e:  # a new signature touches more states: pass them too, and retry
                self._add_known(e.states)
                continue
            except (AttributeError, DeadState):  # a known state died (None) or holds a dead tracer
                self._add_known([])
                return self._call_traced(args, kwargs)
            except StatemapError as e:
                raise without_jax_note(e) from None
            except TypeError:
                self._key(args, kwargs)  # raises a statemap ArgumentError naming a bad argument
                raise
            break
        if self._misses == misses:
            self._hits += 1
        for p, v in written.items():
            states[p]._value = v
        return result

    def _dispatch(self, values: list[Any], args: tuple, kwargs: dict) -> tuple[Any, dict[int, Any]]:
        """Body of the dispatch `jax.jit`; runs only when JAX traces a new signature.

        Returns the result and ``{position among the known states: new value}`` for the states this signature
        writes (dict keys are part of the output's structure, so they are static per signature).
        """
        key, leaves = self._key(args, kwargs)
        for _attempt in range(2):
            plan = self._plans.get(key)
            states = plan.live_states() if plan is not None else None
            if plan is None or states is None:
                plan, states = self._build(key, args, kwargs)
            index = self._known_index
            missing = [s for s in states if id(s) not in index]
            if missing:
                raise NewStates(missing)
            pos = [index[id(s)] for s in states]
            try:
                result, new_values = plan.run(leaves, [values[p] for p in pos])
            except _StalePlan:
                self._plans.pop(key, None)
                continue
            return result, {pos[i]: v for i, v in zip(plan.write, new_values, strict=True)}
        raise MappingRuntimeError(
            f"{self.name}: a fresh plan does not match the states' current types; this is a bug in statemap, "
            "please report it with the function's code"
        )

    def _add_known(self, states: list[State]) -> None:
        live = [r for r in self._known if r() is not None]
        ids = {id(r()) for r in live}
        live += [weakref.ref(s) for s in states if id(s) not in ids]
        self._known_index = {id(r()): i for i, r in enumerate(live)}
        self._known = live

    def _call_traced(self, args: tuple, kwargs: dict) -> Any:
        # One signature key, one pass over the plan's states, one compiled call, one write-back.
        key, leaves = signature_key(
            args, kwargs, self.static_argnums, self.static_argnames, self.name, self._param_names
        )
        plan = self._plans.get(key)
        states: list[Any] = []
        if plan is not None:
            states = [r() for r in plan.refs]
            try:
                values = [s._value if s._dead is None else s.value for s in states]
            except AttributeError:  # a state died: rebuild the plan
                plan = None
            else:
                self._hits += 1
        if plan is None:
            plan, states = self._build(key, args, kwargs)
            values = [s._value if s._dead is None else s.value for s in states]
        if CONTEXT.stack:
            values = [s.value for s in states]  # record the reads in enclosing traces
        try:
            result, new_values = plan.exe(leaves, values)
        except _StalePlan:
            self._plans.pop(key, None)
            plan, states = self._build(key, args, kwargs)
            values = [s.value for s in states]
            try:
                result, new_values = plan.exe(leaves, values)
            except _StalePlan:
                raise MappingRuntimeError(
                    f"{self.name}: a fresh plan does not match the states' current types; this is a bug in "
                    "statemap, please report it with the function's code"
                ) from None
        if CONTEXT.stack:
            for i, v in zip(plan.write, new_values, strict=True):
                states[i].value = v
        else:
            for i, v in zip(plan.write, new_values, strict=True):
                states[i]._value = v
        return result

    def _key(self, args: tuple, kwargs: dict) -> tuple[Hashable, list[Any]]:
        return signature_key(args, kwargs, self.static_argnums, self.static_argnames, self.name, self._param_names)

    def call_uncached(self, *args: Any, **kwargs: Any) -> Any:
        """Trace and run without storing the plan (for functions that create states on every call)."""
        key, leaves = self._key(args, kwargs)
        plan, states = self._build(key, args, kwargs, store=False)
        values = [s.value for s in states] if CONTEXT.stack else [s._value for s in states]
        result, new_values = plan.exe(leaves, values)
        for i, v in zip(plan.write, new_values, strict=True):
            states[i].value = v
        return result

    def explain(self, *args: Any, **kwargs: Any) -> MappingPlan:
        """Describe, without running or mutating anything, how a call with these arguments treats each state.

        Example:
          >>> w = sm.ParamState(jnp.ones(3), name="w")
          >>> h = sm.ShortTermState(jnp.zeros((4, 3)), name="h")
          >>> f = sm.transform.vmap2(lambda x: h.__setattr__("value", h.value + w.value * x),
          ...                        state_in_axes={0: h}, state_out_axes={0: h})
          >>> plan = f.explain(jnp.ones(4))
          >>> print(plan)  # doctest: +ELLIPSIS
          vmap2: batch size 4, plan cache miss
            state  type            created  shape  read  written  in_axis    out_axis  how
            ...
            'h'    ShortTermState  ...      (4, 3)  True  True     0          0         declared
            'w'    ParamState      ...      (3,)   True  False    broadcast  -         read-only
          >>> h.value.sum()
          Array(0., dtype=float32)
        """
        key, _ = self._key(args, kwargs)
        plan = self._plans.get(key)
        if plan is not None and plan.live_states() is not None:
            return MappingPlan(self.name, plan.size, plan.rows, "hit")
        plan, _ = self._build(key, args, kwargs, store=False)
        return MappingPlan(self.name, plan.size, plan.rows, "miss")

    def clear_cache(self) -> None:
        """Forget every plan (the next call of each signature traces again)."""
        self._plans.clear()
        if self._dispatcher is not None:
            self._dispatcher = jax.jit(self._dispatch)

    @property
    def cache_info(self) -> dict[str, int]:
        """``{'hits': …, 'misses': …, 'size': …}`` of the plan cache."""
        return {"hits": self._hits, "misses": self._misses, "size": len(self._plans)}

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return bind_method(self, obj, self._bound_to)

    def _bound_to(self, obj: Any) -> StatefulMapping:
        """This mapping applied to ``functools.partial(fun, obj)`` (decorated methods: `self` is not mapped)."""
        in_axes = self.in_axes
        if isinstance(in_axes, (tuple, list)):
            in_axes = tuple(in_axes[1:])
        bound = StatefulMapping(
            weak_partial(self.origin_fun, obj),
            in_axes=in_axes,
            out_axes=self.out_axes,
            state_in_axes=self.state_in_axes,
            state_out_axes=self.state_out_axes,
            unexpected_out_state_mapping=self.unexpected_out_state_mapping,
            static_argnums=shift_argnums(self.static_argnums),
            static_argnames=self.static_argnames,
            axis_env=self.axis_env,
            return_only_write=self.return_only_write,
            axis_size=self.axis_size,
            axis_name=self.axis_name,
            name=self.name,
            mapping_fn=self.mapping_fn,
            mapping_kwargs=self.mapping_kwargs,
        )
        bound._words = self._words
        bound._donate_argnums = shift_argnums(self._donate_argnums)
        return bound

    # -- building a plan ------------------------------------------------------------------------------------
    def _build(self, key: Hashable, args: tuple, kwargs: dict, store: bool = True) -> tuple[_Plan, list[State]]:
        self._misses += 1
        who = self.name
        static_pos, static_names = static_split(
            len(args), kwargs, self.static_argnums, self.static_argnames, self._param_names, who
        )
        dyn_args = tuple(a for i, a in enumerate(args) if i not in static_pos)
        dyn_kwargs = {k: v for k, v in kwargs.items() if k not in static_names}
        in_axes = self.in_axes
        if isinstance(in_axes, (tuple, list)) and len(in_axes) == len(args) and static_pos:
            in_axes = tuple(a for i, a in enumerate(in_axes) if i not in static_pos)
        flat = jax.tree_util.tree_flatten_with_path((list(dyn_args), dyn_kwargs))[0]
        paths = [p for p, _ in flat]
        leaves = [x for _, x in flat]
        axes = arg_leaf_axes(in_axes, dyn_args, dyn_kwargs, who)
        sizes: list[tuple[int, str]] = []
        lane_args = []
        for leaf, ax, path in zip(leaves, axes, paths, strict=True):
            where = _describe_leaf(path)
            leaf_signature(leaf, who, where)
            if ax is None:
                lane_args.append(_sds(leaf))
            else:
                sizes.append((leaf_size(leaf, ax, who, where), where))
                lane_args.append(drop_axis(leaf, ax))
        arg_sizes = {s for s, _ in sizes}
        if len(arg_sizes) > 1:
            raise _inconsistent(who, sizes)
        guess = next(iter(arg_sizes)) if arg_sizes else (self.axis_size or 1)

        forced: dict[int, int] = {}
        for _attempt in range(2):
            entry, roles, state_sizes = self._trace(args, kwargs, lane_args, guess, forced)
            size = self._batch_size(sizes + state_sizes)
            plan = self._classify(entry, roles, axes, leaves, size, forced)
            if isinstance(plan, _Plan):
                break
            forced = plan  # 'auto' promotion: trace again with these states mapped on axis 0
        else:  # pragma: no cover - promotion converges after one retrace
            raise StatemapError(f"{who}: could not settle the per-lane states")
        plan.size = size
        plan.refs = [weakref.ref(s) for s in entry.states]
        plan.entry = entry
        counts = [len(jax.tree_util.tree_leaves(a)) for a in dyn_args]
        donate = self._donated_leaves(static_pos, len(args), counts)
        self._make_exe(plan, axes, donate)
        plan.write = plan.out_list + plan.rng
        states = list(entry.states)
        entry.states = ()  # the plan holds states only weakly (plan.refs); dead states rebuild the plan
        if store and entry.cacheable:
            self._plans[key] = plan
        return plan, states

    def _trace(
        self, args: tuple, kwargs: dict, lane_args: list[Any], guess: int, forced: dict[int, int]
    ) -> tuple[Traced, dict[int, Any], list[tuple[int, str]]]:
        who = self.name
        roles: dict[int, Any] = {}
        state_sizes: list[tuple[int, str]] = []

        def role(state: State) -> Any:
            r = roles.get(id(state))
            if r is not None:
                return r
            value = state._value
            if isinstance(state, RandomState) and _is_scalar_key(value):
                r = _RNG
            elif id(state) in forced:
                r = forced[id(state)]
            else:
                ax = match_axis(self.state_in_axes, state)
                r = _BCAST if is_unmatched(ax) or ax is None else ax
            if isinstance(r, int):
                for leaf in jax.tree_util.tree_leaves(value):
                    state_sizes.append((_state_leaf_size(leaf, r, state, who, guess), describe_state(state)))
            roles[id(state)] = r
            return r

        def state_aval(state: State, leaf: Any) -> Any:
            r = role(state)
            if isinstance(r, int):
                return drop_axis(leaf, r)
            return jax.typeof(leaf)

        axis_env = list(self.axis_env)
        if self.axis_name is not None:
            axis_env.append((self.axis_name, guess))
        entry = trace_stateful(
            self.origin_fun,
            args,
            kwargs,
            static_argnums=self.static_argnums,
            static_argnames=self.static_argnames,
            axis_env=axis_env or None,
            return_only_write=self.return_only_write,
            name=self.name,
            state_aval=state_aval,
            abstract_args=tuple(lane_args),
            param_names=self._param_names,
        )
        return entry, {i: roles[id(s)] for i, s in enumerate(entry.states)}, state_sizes

    def _batch_size(self, sizes: list[tuple[int, str]]) -> int:
        who = self.name
        distinct = {s for s, _ in sizes}
        if len(distinct) > 1:
            raise _inconsistent(who, sizes)
        if not distinct:
            if self.axis_size is None:
                raise BatchAxisError(
                    message(
                        who,
                        "cannot determine the size of the mapped axis",
                        "at least one mapped argument or selected state, or axis_size",
                        "no mapped arguments (in_axes all None, or no arguments) and no state selected by "
                        "state_in_axes",
                        "pass axis_size=N, or map an argument",
                    )
                )
            return self.axis_size
        (size,) = distinct
        if self.axis_size is not None and self.axis_size != size:
            raise BatchAxisError(
                message(
                    who,
                    f"axis_size={self.axis_size} conflicts with the mapped size",
                    f"axis_size equal to the size of the mapped axis ({size})",
                    "; ".join(f"{w}: {s}" for s, w in sizes[:4]),
                    "drop axis_size or make it match the mapped arguments",
                )
            )
        return size

    def _discover(self, entry: Traced, roles: dict[int, Any], axes: list[Any], leaves: list[Any], size: int):
        """Batch dim of every jaxpr output under this vmap (None = unbatched), computed abstractly."""
        in_axes: list[Any] = list(axes)
        sds: list[Any] = [_sds(x) for x in leaves]
        for i, state in enumerate(entry.states):
            r = roles[i]
            for leaf in jax.tree_util.tree_leaves(state._value):
                if r == _RNG:
                    in_axes.append(0)
                    sds.append(jax.ShapeDtypeStruct((size,), leaf.dtype))
                else:
                    in_axes.append(r if isinstance(r, int) else None)
                    sds.append(_sds(leaf))
        found: list[Any] = []

        def probe(*flat: Any) -> tuple:
            trace = _compat.current_trace()
            outs = entry.fn(*flat)
            found.extend(_compat.batch_dim_in(o, trace) for o in outs)
            return ()

        jax.make_jaxpr(
            jax.vmap(probe, in_axes=tuple(in_axes), axis_size=size, axis_name=self.axis_name),
            axis_env=self.axis_env or None,
        )(*sds)
        return found

    def _classify(
        self,
        entry: Traced,
        roles: dict[int, Any],
        axes: list[Any],
        leaves: list[Any],
        size: int,
        forced: dict[int, int],
    ) -> _Plan | dict[int, int]:
        who = self.name
        dims = self._discover(entry, roles, axes, leaves, size)
        result_dims = dims[: entry.n_out]
        self._check_out_axes(entry, result_dims)
        pos = entry.n_out
        batched_out: dict[int, bool] = {}
        for i in entry.out_states:
            n = entry.state_nleaves[i]
            batched_out[i] = any(d is not None for d in dims[pos : pos + n])
            pos += n
        plan = _Plan()
        plan.roles = [roles[i] for i in range(len(entry.states))]
        promote: dict[int, int] = {}
        policy = self.unexpected_out_state_mapping
        for i, state in enumerate(entry.states):
            r = roles[i]
            written = entry.written[i]
            value = state._value
            row = {
                "state": state._label(),
                "type": type(state).__name__,
                "created": state.source,
                "shape": _shape_str(value),
                "read": entry.read[i],
                "written": written,
                "in_axis": "split-rng" if r == _RNG else r,
                "out_axis": "-",
                "how": "read-only",
            }
            plan.rows.append(row)
            if r == _RNG:
                plan.rng.append(i)
                row["how"] = "rng"
                continue
            if i not in batched_out:  # read-only, not returned
                continue
            decl = match_axis(self.state_out_axes, state)
            batched = batched_out[i]
            out_axis: Any
            if isinstance(r, int):
                if isinstance(decl, int) and decl != r:
                    raise BatchAxisError(
                        message(
                            who,
                            f"{describe_state(state)} is mapped on input axis {r} but {self._words[1]} maps it "
                            f"to axis {decl}",
                            "the same axis on input and output (a state keeps its layout)",
                            f"state_in_axes axis {r}, state_out_axes axis {decl}",
                            f"declare it on axis {r} in both, or only in {self._words[0]}",
                        )
                    )
                if decl is None and batched and written:
                    raise _declared_none(who, state, size)
                out_axis = r
                row["how"] = "declared" if id(state) not in forced else "policy:auto"
            elif not written:  # return_only_write=False: read-only broadcast state, written back unchanged
                out_axis = None
                row["how"] = "read-only"
            elif decl is None:
                if batched:
                    raise _declared_none(who, state, size)
                out_axis = None
                row["how"] = "declared"
            elif isinstance(decl, int):
                if batched and entry.read[i] and _has_size(value, decl, size):
                    raise BatchAxisError(
                        message(
                            who,
                            f"{describe_state(state)} is read and then written per lane, and state_out_axes "
                            f"maps it to axis {decl}, but state_in_axes does not map it",
                            f"a state read per lane to be declared in state_in_axes on axis {decl} too",
                            f"its value {_shape_str(value)} already has the batch size {size} on axis {decl}; "
                            "broadcasting it into every lane would add another axis on every call",
                            f"add it to state_in_axes={{{decl}: ...}} as well",
                        )
                    )
                out_axis = decl
                row["how"] = "declared"
            elif batched:
                if policy == "raise":
                    raise BatchAxisError(
                        message(
                            who,
                            f"{describe_state(state)} was written with a value batched on the mapped axis, but "
                            f"{self._words[1]} does not select it",
                            f"a {self._words[1]} entry for every state written per lane",
                            f"a per-lane write of {tree_aval(value)} (mapped axis size {size})",
                            _undeclared_fix(self._words),
                        )
                    )
                if policy == "auto" and entry.read[i] and _has_size(value, 0, size):
                    promote[id(state)] = 0
                    continue
                if policy == "warn":
                    warnings.warn(
                        f"{who}: {describe_state(state)} was written per lane but is not declared in "
                        f"state_out_axes; scattering it on a new axis 0 of size {size} (the state's shape "
                        "changes). Declare it to silence this warning.",
                        UserWarning,
                        stacklevel=4,
                    )
                out_axis = 0
                row["how"] = f"policy:{policy}"
            else:
                out_axis = None
                row["how"] = "inferred"
            row["out_axis"] = out_axis
            plan.out_list.append(i)
            plan.out_axes.append(out_axis)
        if promote:
            return {**forced, **promote}
        return plan

    def _check_out_axes(self, entry: Traced, result_dims: list[Any]) -> None:
        who = self.name
        dummy = jax.tree_util.tree_unflatten(entry.out_treedef, list(range(entry.n_out)))
        out_axes = self.out_axes() if callable(self.out_axes) else self.out_axes  # callable: _new_states
        try:
            flat = prefix_leaf_axes(out_axes, dummy)
        except Exception:
            raise BatchAxisError(
                message(
                    who,
                    "out_axes is not a pytree prefix of the function's result",
                    "an int, None, or a prefix of the result's structure",
                    f"out_axes={self.out_axes!r} for a result of structure {entry.out_treedef}",
                    "match the result's structure",
                )
            ) from None
        paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(dummy)[0]]
        for j, (ax, d, path) in enumerate(zip(flat, result_dims, paths, strict=True)):
            nd = entry.jaxpr.out_avals[j].ndim
            if ax is not None and not -(nd + 1) <= ax <= nd:
                raise BatchAxisError(
                    message(
                        who,
                        f"{self._describe_output(path)} has out_axes {ax}, which is out of range",
                        f"an axis in [{-(nd + 1)}, {nd}] (each lane's output has {nd} dimension(s))",
                        f"out_axes={ax} for a per-lane output of {short_aval(entry.jaxpr.out_avals[j])}",
                        "fix out_axes for this output",
                    )
                )
            if ax is None and d is not None:
                raise BatchAxisError(
                    message(
                        who,
                        f"{self._describe_output(path)} depends on the mapped axis but out_axes is None for it",
                        "an int out_axes for every output that varies per lane",
                        f"out_axes None for a per-lane output of {short_aval(entry.jaxpr.out_avals[j])}",
                        self._none_fix,
                    )
                )
        self._result_axes = flat  # used by _make_exe

    # -- the executable -------------------------------------------------------------------------------------
    def _donated_leaves(self, static_pos: tuple[int, ...], nargs: int, counts: list[int]) -> tuple[int, ...]:
        """Positions, among the flat leaves passed to `mapping_fn`, of the donated arguments' leaves."""
        if not self._donate_argnums:
            return ()
        donated = resolve_argnums(self._donate_argnums, nargs, self.name, "donate_argnums")
        bad = [i for i in donated if i in static_pos]
        if bad:
            raise ValueError(
                message(
                    self.name,
                    f"argument {bad[0]} is both static and donated",
                    "donated arguments to be dynamic arrays",
                    f"donate_argnums={self._donate_argnums}, static positions {static_pos}",
                    "drop it from donate_argnums",
                )
            )
        dyn = [i for i in range(nargs) if i not in static_pos]
        out: list[int] = []
        start = 0
        for i, n in zip(dyn, counts, strict=True):
            if i in donated:
                out.extend(range(start, start + n))
            start += n
        return tuple(out)

    def _make_exe(self, plan: _Plan, axes: list[Any], donate: tuple[int, ...] = ()) -> None:
        entry = plan.entry
        size = plan.size
        roles = plan.roles
        result_axes = tuple(self._result_axes)
        nleaves = entry.state_nleaves
        state_in_axes: list[Any] = []
        for i, r in enumerate(roles):
            ax = 0 if r == _RNG else (r if isinstance(r, int) else None)
            state_in_axes.extend([ax] * nleaves[i])
        in_axes = tuple(axes) + tuple(state_in_axes)
        picked: list[int] = []  # output leaf positions (in entry outputs) of written-back states
        out_state_axes: list[Any] = []
        pos = entry.n_out
        offsets = {}
        for i in entry.out_states:
            offsets[i] = pos
            pos += nleaves[i]
        for i, ax in zip(plan.out_list, plan.out_axes, strict=True):
            picked.extend(range(offsets[i], offsets[i] + nleaves[i]))
            out_state_axes.extend([ax] * nleaves[i])
        n_out = entry.n_out
        fn = entry.fn
        needs_dummy = not any(a is not None for a in in_axes) and not _is_vmap(self.mapping_fn)
        if needs_dummy:
            in_axes = in_axes + (0,)

        def lane(*flat: Any) -> tuple[tuple, tuple]:
            if needs_dummy:
                flat = flat[:-1]
            outs = fn(*flat)
            return tuple(outs[:n_out]), tuple(outs[j] for j in picked)

        extra = dict(self.mapping_kwargs)
        if donate:
            extra["donate_argnums"] = donate
        mapped = self.mapping_fn(
            lane,
            in_axes=in_axes,
            out_axes=(result_axes, tuple(out_state_axes)),
            axis_name=self.axis_name,
            axis_size=size,
            **extra,
        )
        state_sigs = entry.state_sigs
        rng = set(plan.rng)
        out_list = plan.out_list
        treedefs = entry.state_treedefs
        out_treedef = entry.out_treedef

        def run(arg_leaves: list[Any], values: list[Any]) -> tuple[Any, list[Any]]:
            sigs = tuple(value_signature(v) for v in values)
            if sigs != state_sigs:
                raise _StalePlan
            flat = list(arg_leaves)
            new_keys = []
            for i, v in enumerate(values):
                if i in rng:
                    keys = jax.random.split(v, size + 1)
                    new_keys.append(keys[0])
                    flat.append(keys[1:])
                else:
                    flat.extend(jax.tree_util.tree_leaves(v))
            if needs_dummy:
                flat.append(jax.numpy.arange(size))
            res_leaves, state_leaves = mapped(*flat)
            result = jax.tree_util.tree_unflatten(out_treedef, list(res_leaves))
            out_values = []
            k = 0
            for i in out_list:
                n = nleaves[i]
                out_values.append(jax.tree_util.tree_unflatten(treedefs[i], list(state_leaves[k : k + n])))
                k += n
            return result, out_values + new_keys

        plan.run = run
        if _is_vmap(self.mapping_fn):
            plan.exe = jax.jit(run)
        else:
            plan.exe = run


# -- helpers --------------------------------------------------------------------------------------------------
def _shape_str(value: Any) -> str:
    leaves = jax.tree_util.tree_leaves(value)
    if len(leaves) == 1:
        return str(tuple(getattr(leaves[0], "shape", ())))
    return tree_aval(value)


def _has_size(value: Any, axis: int, size: int) -> bool:
    leaves = jax.tree_util.tree_leaves(value)
    return bool(leaves) and all(len(getattr(x, "shape", ())) > axis and x.shape[axis] == size for x in leaves)


def _describe_leaf(path: Any) -> str:
    # path is ((args list index), ...) or (kwargs dict key, ...)
    head, *rest = path
    sub = jax.tree_util.keystr(tuple(rest))
    if getattr(head, "idx", None) == 0:
        first = rest[0]
        return f"argument {first.idx}{jax.tree_util.keystr(tuple(rest[1:]))}" if rest else "args"
    return f"keyword argument{sub}"


def _state_leaf_size(leaf: Any, axis: int, state: State, who: str, size: int) -> int:
    shape = tuple(getattr(leaf, "shape", ()))
    nd = len(shape)
    if -nd <= axis < nd:
        return int(shape[axis])
    raise BatchAxisError(
        message(
            who,
            f"{describe_state(state)} is selected by state_in_axes on axis {axis} but its value "
            f"{short_aval(leaf)} has no axis {axis}",
            f"a value with a mapped axis {axis} whose size is the batch size (one slot per lane)",
            f"shape {shape} ({nd} dimension(s))",
            f"give the state an axis {axis} of the batch size, e.g. {type(state).__name__}(jnp.zeros({size})) "
            f"for a 0-d value mapped over {size} lanes; or, "
            "for a running sum over the inputs, use statemap.transform.map(f, xs), which runs the lanes "
            "sequentially",
        )
    )


def _inconsistent(who: str, sizes: list[tuple[int, str]]) -> BatchAxisError:
    return BatchAxisError(
        message(
            who,
            "the mapped inputs disagree on the size of the mapped axis",
            "one size for every mapped argument and selected state",
            "; ".join(f"{w}: {s}" for s, w in sizes[:6]),
            "make the mapped axes the same length, or map the odd one with None",
        )
    )


def _undeclared_fix(words: tuple[str, str]) -> str:
    i, o = words
    if i == "state_in_axes":
        return (
            "declare it, e.g. state_in_axes={0: s} and state_out_axes={0: s} for a per-lane state, or "
            "state_out_axes={0: s} to scatter it; or pass unexpected_out_state_mapping='warn'/'ignore'/'auto'"
        )
    return f"declare it, e.g. {i}={{0: [s]}} for a per-lane state, or {o}={{0: [s]}} to scatter it"


def _declared_none(who: str, state: State, size: int) -> BatchAxisError:
    return BatchAxisError(
        message(
            who,
            f"{describe_state(state)} is declared unbatched (axis None) in state_out_axes but is written with a "
            "value that differs per lane",
            "a value that is the same in every lane (e.g. reduced with jax.lax.psum/pmean over axis_name)",
            f"a per-lane write (mapped axis size {size})",
            "declare it on an axis, e.g. state_out_axes={0: s}, or reduce the value over the mapped axis",
        )
    )
