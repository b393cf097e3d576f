"""`StatefulMapping`: a `jax.vmap`/`jax.pmap` that keeps state semantics.

The class only calls and caches: its configuration is a frozen `MappingConfig` (`_mapping_config.py`), plans are
built by the plain functions of `_mapping_plan.py` (lane trace, discovery, classification, program), and calls
run through the shared `Dispatcher` (`_dispatch.py`), the same one `jit` uses. Plans are cached per call
signature and hold their states weakly: a dead state or one whose shape changed rebuilds the plan.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax

from .._errors import ConcreteValueError
from .._state import State, generation, peek
from ._arguments import CallSignature
from ._dispatch import Dispatched, Dispatcher, Program
from ._mapping_config import MappingConfig
from ._mapping_plan import Built, NeedsConcrete, build
from ._mapping_python import python_tier
from ._method import bind_method, bound_transforms, weak_partial
from ._static_leaves import StaticLeaves, may_hold_static_leaves, split_static_leaves

__all__ = ["StatefulMapping", "MappingPlan"]

# Attribute names of a mapping (as `jax.vmap`/brainstate call them) → fields of its config.
_CONFIG_ATTRIBUTES = {
    "in_axes": "in_axes",
    "out_axes": "out_axes",
    "state_in_axes": "state_in_axes",
    "state_out_axes": "state_out_axes",
    "unexpected_out_state_mapping": "policy",
    "axis_env": "axis_env",
    "return_only_write": "return_only_write",
    "axis_size": "axis_size",
    "axis_name": "axis_name",
    "mapping_fn": "mapping_fn",
    "mapping_kwargs": "mapping_kwargs",
    "donate_argnums": "donate_argnums",
    "state_reduce": "state_reduce",
}


def _no_run(arg_leaves: list[Any], values: list[Any]) -> tuple[list[Any], Any]:  # pragma: no cover
    raise AssertionError("a Python-tier program runs through Program.direct only")


class MappingPlan:
    """How one signature of a mapped function treats each state (returned by `StatefulMapping.explain`).

    Attributes:
      name: Name of the mapping transform.
      batch_size: Size of the mapped axis.
      rows: One dict per touched state: ``state`` (label), ``type``, ``created``, ``shape``, ``read``,
        ``written``, ``in_axis`` (int, ``'broadcast'`` or ``'split-rng'``), ``out_axis`` (int, ``None`` for an
        unbatched write-back, ``'-'`` when not written back), ``how`` (``'declared'``, ``'inferred'``,
        ``'policy:<p>'``, ``'rng'`` or ``'read-only'``).
      cache: ``'hit'`` or ``'miss'`` for the signature explained; ``'python'`` when it runs in the Python tier
        (its Python body under `jax.vmap` on every call, because it uses a state's concrete value; no rows).

    Examples:
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

    def __repr__(self) -> str:  # the table: `f.explain(x)` at a prompt or in a notebook shows it directly
        return str(self)


class StatefulMapping(Dispatched):
    """A `jax.vmap`/`jax.pmap` that keeps state semantics.

    States the function closes over are handled per lane: states selected by `state_in_axes` are sliced along
    the mapped axis and written back there; other states are broadcast; random states (`RandomState` holding one
    key) are split per lane and advance once per call; states written with a per-lane value are scattered as
    `state_out_axes` declares, and undeclared ones as `unexpected_out_state_mapping` says.

    Args:
      fun: Function to map; it may read and write `State`s it closes over.
      in_axes: As in `jax.vmap`: int, None, or a tuple/pytree prefix with one entry per positional argument.
        Leaves mapped with None that are not arrays (strings, callables, Python scalars, containers of them)
        reach the function unchanged and are static: each new value traces once, like a static argument of
        `jax.jit`. Arrays mapped with None stay dynamic.
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
      state_reduce: ``{reduction: selector}`` for shared states written per lane: their new value is the
        reduction over lanes (``'mean'``, ``'sum'``, ``'max'``, ``'min'``, ``'first'``, ``'last'``, ``'add'``,
        or a callable ``(stacked_new, old) -> value``), computed as a collective over the mapped axis.

    Attributes:
      origin_fun: The wrapped function.
      config: The frozen `MappingConfig`. Each option is also readable as an attribute of its own name
        (``in_axes``, ``out_axes``, ``axis_size``, ``axis_name``, ``mapping_fn``, ``mapping_kwargs``,
        ``axis_env``, ``return_only_write``, ``unexpected_out_state_mapping``, ``state_reduce``, and
        ``state_in_axes``/``state_out_axes`` as normalised ``{axis: predicate}`` dicts).
      name: The name used in messages.

    Raises:
      TypeError: `in_axes` has an unsupported type, or a selector cannot be converted.
      ValueError: an invalid policy (at construction); `BatchAxisError` (a `ValueError`) for missing, out of range
        or inconsistent batch axes and undeclared per-lane writes.
      RuntimeError: `MappingRuntimeError` when statemap's own machinery fails. Exceptions raised by `fun` propagate
        with their own type, with a note naming the mapped function.

    Examples:
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
        fun: Callable[..., Any],
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
        mapping_fn: Callable[..., Any] = jax.vmap,
        mapping_kwargs: dict[str, Any] | None = None,
        state_reduce: Any = None,
    ) -> None:
        config = MappingConfig.create(
            fun,
            name=name or "StatefulMapping",
            in_axes=in_axes,
            out_axes=out_axes,
            state_in_axes=state_in_axes,
            state_out_axes=state_out_axes,
            unexpected_out_state_mapping=unexpected_out_state_mapping,
            static_argnums=static_argnums,
            static_argnames=static_argnames,
            axis_env=axis_env,
            return_only_write=return_only_write,
            axis_size=axis_size,
            axis_name=axis_name,
            mapping_fn=mapping_fn,
            mapping_kwargs=mapping_kwargs,
            state_reduce=state_reduce,
        )
        self._setup(fun, config)

    @classmethod
    def from_config(cls, fun: Callable[..., Any], config: MappingConfig) -> StatefulMapping:
        """The mapping of `fun` with a complete, validated config (what the front-ends build).

        Examples:
          >>> from statemap.transform._mapping_config import MappingConfig
          >>> f = lambda x: x * 2
          >>> config = MappingConfig.create(f, name="doubled", in_axes=0)
          >>> m = sm.transform.StatefulMapping.from_config(f, config)
          >>> m(jnp.arange(3.0)), m.name
          (Array([0., 2., 4.], dtype=float32), 'doubled')
        """
        self = cls.__new__(cls)
        self._setup(fun, config)
        return self

    def _setup(self, fun: Callable[..., Any], config: MappingConfig) -> None:
        self.origin_fun = fun
        self.config = config
        self.name = config.name
        self._plans: dict[Hashable, Built] = {}
        self._children: dict[Hashable, StatefulMapping] = {}  # per value of static leaves (_static_leaves.py)
        self._unmapped = not isinstance(config.in_axes, int)  # some argument may be mapped with None
        self._misses = 0
        self._dispatcher = Dispatcher(
            self._resolve,
            config.args,
            config.jitted,
            cold=config.vectorised,
            name=f"{config.name}({getattr(fun, '__qualname__', None) or repr(fun)})",
            around=self._route if self._unmapped else None,
        )
        functools.update_wrapper(self, fun, updated=())

    def _route(self, run: Callable[[tuple[Any, ...], dict[str, Any]], Any], args: Any, kwargs: dict[str, Any]) -> Any:
        """The dispatcher's `around` hook when some argument is mapped with None (see `_target`)."""
        target, args = self._target(args, kwargs)
        return run(args, kwargs) if target is self else target._dispatcher.run(args, kwargs)

    def _target(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[StatefulMapping, tuple[Any, ...]]:
        """(the mapping that handles this call, its arguments): an argument mapped with None may hold static
        leaves, which a child mapping per value takes out of the call (`_static_leaves.py`)."""
        if self._unmapped and may_hold_static_leaves(self.config, args):
            split = split_static_leaves(self.config, args, kwargs)
            if split is not None:
                return self._child(split), split.holed(args)
        return self, args

    def _child(self, split: StaticLeaves) -> StatefulMapping:
        """The mapping of this function with these static leaves bound (non-array leaves mapped with None)."""
        child = self._children.get(split.key)
        if child is None:
            child = self._children[split.key] = StatefulMapping.from_config(split.bind(self.origin_fun), self.config)
        return child

    def _resolve(self, sig: CallSignature, fresh: bool) -> tuple[Program, list[State]]:
        old = None if fresh else self._plans.get(sig.key)
        states = None if old is None else old.program.states()
        if old is not None and states is not None and old.generation == generation():
            return old.program, states
        built = self._build(sig)
        if old is not None and states is not None and old.same_plan(built):  # new generation, same states
            self._plans[sig.key] = dataclasses.replace(old, generation=built.generation)
            return old.program, states
        self._misses += 1
        if built.program.cacheable:
            self._plans[sig.key] = built
        return built.program, built.program.states()  # type: ignore[return-value]  # just built: all alive

    def _build(self, sig: CallSignature) -> Built:
        """The plan of a signature; one that needs concrete values runs in the Python tier (eager vmap only)."""
        try:
            return build(self.origin_fun, self.config, sig)
        except NeedsConcrete as e:
            if not self.config.vectorised:
                raise e.error from None
            direct = python_tier(self.origin_fun, self.config, e)
            return Built(Program((), (), _no_run, _no_run, direct=direct), -1, [])

    def explain(self, *args: Any, **kwargs: Any) -> MappingPlan:
        """Describe, without running or mutating anything, how a call with these arguments treats each state.

        Examples:
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
        target, args = self._target(args, kwargs)
        if target is not self:
            return target.explain(*args, **kwargs)
        sig = CallSignature.of(self.config.args, args, kwargs)
        built = self._plans.get(sig.key)
        if built is not None and built.program.states() is not None and built.generation == generation():
            return MappingPlan(self.name, built.size, built.rows, "python" if built.program.direct else "hit")
        built = self._build(sig)
        return MappingPlan(self.name, built.size, built.rows, "python" if built.program.direct else "miss")

    def lower(self, *args: Any, **kwargs: Any) -> jax.stages.Lowered:
        """The program of this call's signature lowered for XLA (like ``jax.jit(f).lower``): inspect its HLO.

        Nothing runs and no state changes. A signature in the Python tier (see `explain`) has no single program.

        Examples:
          >>> f = sm.transform.vmap2(lambda x: jnp.sin(x) * 2)
          >>> "sine" in f.lower(jnp.ones(3)).as_text()
          True
        """
        target, args = self._target(args, kwargs)
        if target is not self:
            return target.lower(*args, **kwargs)
        sig = CallSignature.of(self.config.args, args, kwargs)
        program, states = self._resolve(sig, False)
        if program.direct is not None:
            raise ConcreteValueError(
                f"{self.name}: this signature runs in the Python tier (it uses a state's concrete value), so it has "
                "no single compiled program to lower"
            )
        return jax.jit(program.run).lower(sig.leaves, [peek(s) for s in states])

    def clear_cache(self) -> None:
        """Forget every plan (the next call of each signature traces again; the instances' too, for a method)."""
        self._plans.clear()
        self._children.clear()
        self._dispatcher.clear()
        for bound in bound_transforms(self):
            bound.clear_cache()

    @property
    def cache_info(self) -> dict[str, int]:
        """``{'hits': …, 'misses': …, 'size': …}`` of the plan cache (hits: calls that built no plan)."""
        infos = [{"hits": self._dispatcher.calls - self._misses, "misses": self._misses, "size": len(self._plans)}]
        infos += [c.cache_info for c in self._children.values()]
        return {k: sum(i[k] for i in infos) for k in ("hits", "misses", "size")}

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return bind_method(self, obj, self._bound_to)

    def _bound_to(self, obj: Any) -> StatefulMapping:
        """This mapping applied to ``functools.partial(fun, obj)`` (decorated methods: `self` is not mapped)."""
        return StatefulMapping.from_config(weak_partial(self.origin_fun, obj), self.config.bind_first())


def _config_property(field: str) -> property:
    return property(lambda self: getattr(self.config, field), doc=f"The config's `{field}` (read-only).")


# The options as attributes (``mapping.in_axes``), read from the frozen config. Properties, not a `__getattr__`:
# a class with `__getattr__` makes every attribute lookup slower, the fast path's included.
for _name, _field in _CONFIG_ATTRIBUTES.items():
    setattr(StatefulMapping, _name, _config_property(_field))
