"""Building a mapping plan: plain functions from (function, config, call signature) to a runnable `Program`.

Passes, once per call signature (`build` chains them):

1. **Lane arguments** (`lane_arguments`). Broadcast `in_axes` over the dynamic arguments (kwargs map on axis 0),
   check every mapped leaf and collect the batch sizes they imply; each mapped leaf becomes one lane's abstract
   value.
2. **Trace** (`trace_lane`). Trace the user's function once, abstractly, on one lane. At its first touch each
   state gets its input role: a `RandomState` holding one key is split per lane (``RNG``); a state selected by
   `state_in_axes` at axis ``k`` enters as one lane (its axis ``k`` removed, after checking it exists); any other
   state is broadcast (``BROADCAST``). Then the batch size is settled from arguments and selected states. When
   Python needs a concrete value (``if state.value:``), the trace raises `NeedsConcrete`: that signature runs in
   the Python tier instead (`_mapping_python.py`).
3. **Discovery** (`discover`). Which outputs of the traced jaxpr vary per lane: read off its equations when they
   allow it (`_dependence.py`), else by evaluating the jaxpr (not the Python body) under `jax.vmap` inside
   `jax.make_jaxpr`, which computes nothing, and reading which outputs *this* vmap batched
   (`_compat.batch_dim_in` compares trace identity, so values batched only by an enclosing map are not
   mistaken for inner-batched ones).
4. **Classify** (`classify`). Check `out_axes` against the result and decide each written state's output axis
   from the declarations and the policy; every inconsistency is a `BatchAxisError` naming the state. Under
   ``'auto'`` a read-then-written state that already has the batch size is promoted to a per-lane input, which
   traces once more (`build` loops).
5. **Program** (`make_program`). Build ``mapping_fn(lane, ...)`` once per plan and wrap it in the function the
   dispatcher runs; for `jax.vmap` it is compiled with `jax.jit`. Random states advance exactly once per call:
   their key is split into ``2B + 1`` keys; the state keeps key 0 and lane ``i`` draws first with key ``1 + i``
   and carries key ``B + 1 + i`` (`lane_key_pairs`, `statemap.random._rng.lane_keys`).
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax.extend import core as jex_core

from .. import _compat
from .._errors import BatchAxisError, describe_state, message, short_aval, tree_aval, warn_user
from .._state import State, generation, peek
from ..random._rng import RandomState, lane_keys
from ._arguments import CallSignature, abstract, resolve_argnums, shape_struct
from ._dependence import batched_outputs
from ._dispatch import Program, check_signatures
from ._make_jaxpr import Traced, trace_stateful
from ._mapping_axes import arg_leaf_axes, drop_axis, is_unmatched, leaf_size, match_axis, prefix_leaf_axes
from ._mapping_config import MappingConfig
from ._reductions import Reduction, label, lane_reduce, match_reduction, reduce_stacked

__all__ = ["RNG", "BROADCAST", "LaneTrace", "StatePlan", "build", "trace_lane", "classify", "make_program"]

RNG = "split-rng"  # input role of a RandomState holding one key: split per lane
BROADCAST = "broadcast"  # input role of a state every lane sees whole
Size = tuple[int, str]  # (batch size implied, what implies it)


@dataclasses.dataclass(frozen=True)
class LaneTrace:
    """Passes 1–3: the traced lane, the states' input roles, the batch size and the batch dim of every output."""

    entry: Traced
    states: list[State]
    roles: list[Any]  # per state: an int axis, BROADCAST or RNG
    axes: list[int | None]  # per dynamic argument leaf
    size: int
    dims: list[int | None]  # per jaxpr output: its batch dim under this map


@dataclasses.dataclass
class StatePlan:
    """Pass 4: where each written state goes, and one display row per state (`MappingPlan.rows`)."""

    result_axes: list[Any]
    out_list: list[int] = dataclasses.field(default_factory=list)  # state indices written back, in order
    out_axes: list[int | None] = dataclasses.field(default_factory=list)
    rng: list[int] = dataclasses.field(default_factory=list)
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    promote: dict[int, int] = dataclasses.field(default_factory=dict)  # 'auto': id(state) -> input axis
    reduce: dict[int, Reduction] = dataclasses.field(default_factory=dict)  # state index -> its state_reduce
    carry: list[int] = dataclasses.field(default_factory=list)  # states carried from element to element (map)


# What JAX raises when Python needs the concrete value of an abstract one (TracerBool… is a Concretization…).
CONCRETIZATION_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerArrayConversionError,
)


class NeedsConcrete(Exception):
    """The lane trace needed a concrete value (Python control flow); `states`: broadcast states read by then."""

    def __init__(self, states: list[State], error: Exception) -> None:
        super().__init__(str(error))
        self.states = states
        self.error = error


@dataclasses.dataclass(frozen=True)
class Built:
    """A finished plan: the program the dispatcher runs (holding its states weakly) and what `explain` shows."""

    program: Program
    size: int
    rows: list[dict[str, Any]]
    generation: int = dataclasses.field(default_factory=generation)  # of states, when the plan was built

    def same_plan(self, other: Built) -> bool:
        """True when `other` maps the same State objects in the same way (this plan's program still fits)."""
        mine, theirs = self.program.states(), other.program.states()
        return (
            mine is not None
            and theirs is not None
            and len(mine) == len(theirs)
            and all(a is b for a, b in zip(mine, theirs, strict=True))
            and self.program.writes == other.program.writes
            and (self.size, self.rows) == (other.size, other.rows)
        )


# -- passes 1-3 ------------------------------------------------------------------------------------------------
def _leaf_names(sig: CallSignature) -> list[str]:
    out = []
    for name in sig.leaf_names():
        head, _, rest = name.partition("[")
        if head == "args":
            index, _, sub = rest.partition("]")
            out.append(f"argument {index}{sub}")
        else:
            out.append(f"keyword argument[{rest}")
    return out


def lane_arguments(config: MappingConfig, sig: CallSignature) -> tuple[list[int | None], list[Any], list[Size]]:
    """Pass 1: (mapped axis per dynamic leaf, one lane's abstract leaves, batch sizes the arguments imply)."""
    who = config.name
    in_axes = config.in_axes
    if isinstance(in_axes, (tuple, list)) and len(in_axes) == len(sig.args) and sig.static_pos:
        in_axes = tuple(a for i, a in enumerate(in_axes) if i not in sig.static_pos)
    axes = arg_leaf_axes(in_axes, sig.dyn_args, sig.dyn_kwargs, who)
    sizes: list[Size] = []
    lane: list[Any] = []
    for leaf, ax, where in zip(sig.leaves, axes, _leaf_names(sig), strict=True):
        if ax is None:
            lane.append(abstract(leaf))
        else:
            sizes.append((leaf_size(leaf, ax, who, where), where))
            lane.append(drop_axis(leaf, ax))
    if len({s for s, _ in sizes}) > 1:
        raise inconsistent_sizes(who, sizes)
    return axes, lane, sizes


def trace_lane(fun: Callable[..., Any], config: MappingConfig, sig: CallSignature, forced: dict[int, int]) -> LaneTrace:
    """Passes 1–3 (see the module docstring). `forced` maps ``id(state)`` to an input axis (policy 'auto')."""
    axes, lane, sizes = lane_arguments(config, sig)
    guess = sizes[0][0] if sizes else (config.axis_size or 1)
    roles: dict[int, Any] = {}
    state_sizes: list[Size] = []

    touched: list[State] = []

    def state_aval(state: State, leaf: Any) -> Any:
        r = roles.get(id(state))
        if r is None:
            r = roles[id(state)] = input_role(config, state, forced)
            touched.append(state)
            if isinstance(r, int):
                state_sizes.extend(state_sizes_of(config.name, state, r, guess))
        if r == RNG:  # a pair (draw key, carry key) per lane: see statemap.random._rng.lane_keys
            return jax.typeof(leaf).update(shape=(2,))
        return drop_axis(leaf, r) if isinstance(r, int) else jax.typeof(leaf)

    def state_view(state: State, value: Any) -> Any:
        if roles.get(id(state)) != RNG:
            return value
        carry = value[1]  # one object: the generator recognises it by identity (lane_keys)
        register(carry, value[0])
        return carry

    axis_env = list(config.axis_env)
    if config.axis_name is not None:  # over devices, the axis spans every process's lanes
        axis_env.append((config.axis_name, guess * jax.process_count() if config.over_devices else guess))
    try:
        with lane_keys() as register:
            entry = trace_stateful(
                fun,
                sig,
                axis_env=axis_env or None,
                return_only_write=config.return_only_write,
                name=config.name,
                state_aval=state_aval,
                abstract_leaves=lane,
                state_view=state_view,
            )
    except CONCRETIZATION_ERRORS as e:
        broadcast = [s for s in touched if roles[id(s)] == BROADCAST]
        raise NeedsConcrete(broadcast, e) from e
    states = list(entry.states)
    role_list = [roles.get(id(s), BROADCAST) for s in states]  # a state with no leaves has no role: broadcast
    size = batch_size(config, sizes + state_sizes)
    dims = discover(config, entry, states, role_list, axes, sig.leaves, size)
    return LaneTrace(entry, states, role_list, axes, size, dims)


def input_role(config: MappingConfig, state: State, forced: dict[int, int]) -> Any:
    if isinstance(state, RandomState) and _is_scalar_key(peek(state)):
        return RNG
    if id(state) in forced:
        return forced[id(state)]
    ax = match_axis(config.state_in_axes, state)
    return BROADCAST if is_unmatched(ax) or ax is None else ax


def state_sizes_of(who: str, state: State, axis: int, guess: int) -> list[Size]:
    flat = jax.tree_util.tree_flatten_with_path(peek(state))[0]
    where = (lambda p: "") if len(flat) == 1 else jax.tree_util.keystr  # name the leaf of a pytree state
    sizes = [x.shape[axis] for _, x in flat if -len(getattr(x, "shape", ())) <= axis < len(getattr(x, "shape", ()))]
    guess = sizes[0] if sizes else guess  # a fix for a 0-d leaf proposes the size its sibling leaves have
    return [(_state_leaf_size(x, axis, state, who, guess, where(p)), describe_state(state)) for p, x in flat]


def batch_size(config: MappingConfig, sizes: list[Size]) -> int:
    """The one size of the mapped axis implied by `sizes` and `axis_size`; a `BatchAxisError` otherwise."""
    who = config.name
    distinct = {s for s, _ in sizes}
    if len(distinct) > 1:
        raise inconsistent_sizes(who, sizes)
    if not distinct:
        if config.axis_size is None:
            raise BatchAxisError(
                message(
                    who,
                    "cannot determine the size of the mapped axis",
                    "at least one mapped argument or selected state, or axis_size",
                    "no mapped arguments (in_axes all None, or no arguments) and no state selected by state_in_axes",
                    "pass axis_size=N, or map an argument",
                )
            )
        return config.axis_size
    (size,) = distinct
    if config.axis_size is not None and config.axis_size != size:
        raise BatchAxisError(
            message(
                who,
                f"axis_size={config.axis_size} conflicts with the mapped size",
                f"axis_size equal to the size of the mapped axis ({size})",
                "; ".join(f"{w}: {s}" for s, w in sizes[:4]),
                "drop axis_size or make it match the mapped arguments",
            )
        )
    return size


def discover(
    config: MappingConfig,
    entry: Traced,
    states: list[State],
    roles: list[Any],
    axes: list[int | None],
    leaves: list[Any],
    size: int,
) -> list[int | None]:
    """Pass 3: the batch dim of every jaxpr output under this map (None = unbatched), computed abstractly.

    A walk over the jaxpr's equations answers most jaxprs (`_dependence.py`); the others are traced under
    `jax.vmap`, which is exact for every primitive.
    """
    in_axes: list[Any] = list(axes)
    state_leaves = [jax.tree_util.tree_leaves(peek(state)) for state in states]
    for r, sl in zip(roles, state_leaves, strict=True):
        in_axes.extend([0 if r == RNG else (r if isinstance(r, int) else None)] * len(sl))
    walked = batched_outputs(entry.jaxpr, [a is not None for a in in_axes])
    if walked is not None:
        return [0 if b else None for b in walked]
    sds: list[Any] = [abstract(x) for x in leaves]
    for r, sl in zip(roles, state_leaves, strict=True):
        sds.extend(shape_struct((size, 2), x.dtype) if r == RNG else abstract(x) for x in sl)
    return _batch_dims_traced(config, entry, in_axes, sds, size)


def _batch_dims_traced(
    config: MappingConfig, entry: Traced, in_axes: list[Any], sds: list[Any], size: int
) -> list[Any]:
    """Pass 3 by tracing the lane's jaxpr under `jax.vmap` (exact for every primitive)."""
    found: list[int | None] = []

    def probe(*flat: Any) -> tuple[()]:
        trace = _compat.current_trace()
        found.extend(_compat.batch_dim_in(o, trace) for o in entry.fn(*flat))
        return ()

    mapped = jax.vmap(probe, in_axes=tuple(in_axes), axis_size=size, axis_name=config.axis_name)
    jax.make_jaxpr(mapped, axis_env=list(config.axis_env) or None)(*sds)
    return found


# -- pass 4 ------------------------------------------------------------------------------------------------------
def _describe_result(path: Any) -> str:
    return f"output result{jax.tree_util.keystr(path)}"


_RESULT_NONE_FIX = "set out_axes=0 for it, or reduce it over the axis (jax.lax.psum with axis_name)"


def result_axes(
    config: MappingConfig,
    entry: Traced,
    result_dims: list[int | None],
    describe: Callable[[Any], str] = _describe_result,
    none_fix: str = _RESULT_NONE_FIX,
) -> list[Any]:
    """Per result leaf, its `out_axes` entry, checked against the result's structure, rank and batching."""
    who = config.name
    dummy = jax.tree_util.tree_unflatten(entry.out_treedef, list(range(entry.n_out)))
    try:
        flat = prefix_leaf_axes(config.out_axes, dummy)
    except Exception:
        raise BatchAxisError(
            message(
                who,
                "out_axes is not a pytree prefix of the function's result",
                "an int, None, or a prefix of the result's structure",
                f"out_axes={config.out_axes!r} for a result of structure {entry.out_treedef}",
                "match the result's structure",
            )
        ) from None
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(dummy)[0]]
    for ax, d, path, aval in zip(flat, result_dims, paths, entry.jaxpr.out_avals, strict=False):
        nd = aval.ndim
        if ax is not None and not -(nd + 1) <= ax <= nd:
            raise BatchAxisError(
                message(
                    who,
                    f"{describe(path)} has out_axes {ax}, which is out of range",
                    f"an axis in [{-(nd + 1)}, {nd}] (each lane's output has {nd} dimension(s))",
                    f"out_axes={ax} for a per-lane output of {short_aval(aval)}",
                    "fix out_axes for this output",
                )
            )
        if ax is None and d is not None:
            raise BatchAxisError(
                message(
                    who,
                    f"{describe(path)} depends on the mapped axis but out_axes is None for it",
                    "an int out_axes for every output that varies per lane",
                    f"out_axes None for a per-lane output of {short_aval(aval)}",
                    none_fix,
                )
            )
    return flat


def classify(
    config: MappingConfig,
    lt: LaneTrace,
    forced: dict[int, int],
    describe: Callable[[Any], str] = _describe_result,
    none_fix: str = _RESULT_NONE_FIX,
) -> StatePlan:
    """Pass 4: the output axis of every written state (or the states 'auto' promotes, in ``plan.promote``)."""
    entry = lt.entry
    plan = StatePlan(result_axes(config, entry, lt.dims[: entry.n_out], describe, none_fix))
    batched_out: dict[int, bool] = {}
    ranks: dict[int, tuple[int, ...]] = {}  # per written state, the ranks of one lane's new leaves
    pos = entry.n_out
    for i in entry.out_states:
        n = entry.state_nleaves[i]
        batched_out[i] = any(d is not None for d in lt.dims[pos : pos + n])
        ranks[i] = tuple(a.ndim for a in entry.jaxpr.out_avals[pos : pos + n])
        pos += n
    for i, state in enumerate(lt.states):
        r = lt.roles[i]
        row = state_row(state, r, entry.read[i], entry.written[i])
        plan.rows.append(row)
        if r == RNG:
            plan.rng.append(i)
            row["how"] = "rng"
        elif i in batched_out:  # written, or returned unchanged (return_only_write=False)
            lane = LaneState(state, r, entry.read[i], entry.written[i], ranks[i])
            decision = out_axis(config, lane, lt.size, batched_out[i], forced)
            if isinstance(decision, Promote):
                plan.promote[id(state)] = decision.axis
                continue
            row["out_axis"], row["how"] = decision
            plan.out_list.append(i)
            plan.out_axes.append(decision[0])
            if decision[1].startswith("reduce:"):
                plan.reduce[i] = match_reduction(config.state_reduce, state)  # type: ignore[assignment]
            elif decision[1] == "carried":
                plan.carry.append(i)
    return plan


def state_row(state: State, role: Any, read: bool, written: bool) -> dict[str, Any]:
    """The `explain` row of a state (`MappingPlan.rows`), before its output is decided."""
    return {
        "state": state._label(),
        "type": type(state).__name__,
        "created": state.source,
        "shape": _shape_str(peek(state)),
        "read": read,
        "written": written,
        "in_axis": role,
        "out_axis": "-",
        "how": "read-only",
    }


@dataclasses.dataclass(frozen=True)
class Promote:
    """Policy 'auto': map this state on input `axis` too, and plan again."""

    axis: int


@dataclasses.dataclass(frozen=True)
class LaneState:
    """What one lane did with a state: its input role (axis, `BROADCAST` or `RNG`), whether read and written."""

    state: State
    role: Any
    read: bool
    written: bool
    ranks: tuple[int, ...] = ()  # ranks of the lane's new leaves


def out_axis(
    config: MappingConfig, lane: LaneState, size: int, batched: bool, forced: dict[int, int]
) -> tuple[int | None, str] | Promote:
    """(output axis, how it was decided) of a state that comes back from the lane (`batched`: per lane)."""
    who, state, r = config.name, lane.state, lane.role
    decl = match_axis(config.state_out_axes, state)
    reduction = match_reduction(config.state_reduce, state) if lane.written else None
    if reduction is not None:
        _check_reducible(config, state, r, decl)
        return (None if config.lanes == "parallel" else 0), label(reduction)
    if config.lanes == "sequential" and r == BROADCAST and lane.written and (decl is None or is_unmatched(decl)):
        return None, "carried"  # map without a batch size: the next element sees this element's write
    if isinstance(r, int):
        if isinstance(decl, int) and decl != r:
            raise _axis_mismatch(config, state, r, decl)
        if decl is None and batched and lane.written:
            raise _declared_none(who, state, size)
        return r, ("policy:auto" if id(state) in forced else "declared")
    if not lane.written:  # return_only_write=False: a read-only broadcast state, written back unchanged
        return None, "read-only"
    if decl is None:
        if batched:
            raise _declared_none(who, state, size)
        return None, "declared"
    if isinstance(decl, int):
        if batched and lane.read and _has_size(peek(state), decl, size):
            raise _read_not_mapped(who, state, decl, size)
        _check_out_axis_range(config, state, decl, lane.ranks)
        return decl, "declared"
    if not batched:
        return None, "inferred"
    return _undeclared(config, state, lane.read, size)


def _undeclared(config: MappingConfig, state: State, read: bool, size: int) -> tuple[int | None, str] | Promote:
    """An undeclared state written per lane: what the policy says."""
    who, policy = config.name, config.policy
    if policy == "raise":
        raise BatchAxisError(
            message(
                who,
                f"{describe_state(state)} was written with a value batched on the mapped axis, but "
                f"{config.option_names[1]} does not select it",
                f"a {config.option_names[1]} entry for every state written per lane",
                f"a per-lane write of {tree_aval(peek(state))} (mapped axis size {size})",
                _undeclared_fix(config.option_names),
            )
        )
    if policy == "auto" and read and _has_size(peek(state), 0, size):
        return Promote(0)
    if policy in ("warn", "auto"):
        _warn_once(
            state,
            who,
            f"{who}: {describe_state(state)} was written per lane but is not declared in state_out_axes; "
            f"scattering it on a new axis 0 of size {size} (the state's shape changes from "
            f"{_shape_str(peek(state))}). Declare it to silence this warning.",
        )
    return 0, f"policy:{policy}"


# States a policy already warned about, per mapping name: a plan rebuilt (new generation, new shape) or another
# signature does not warn again.
_WARNED: weakref.WeakKeyDictionary[State, set[str]] = weakref.WeakKeyDictionary()


def _warn_once(state: State, who: str, text: str) -> None:
    seen = _WARNED.setdefault(state, set())
    if who not in seen:
        seen.add(who)
        warn_user(text)


def build(fun: Callable[..., Any], config: MappingConfig, sig: CallSignature) -> Built:
    """Passes 1–5 for one call signature (tracing a second time when policy 'auto' promotes a state).

    The plan is stamped with the generation read *before* tracing: states re-bound by another thread while
    the trace runs make the plan checked again at its next use.
    """
    seen = generation()
    forced: dict[int, int] = {}
    for _attempt in range(2):
        lt = trace_lane(fun, config, sig, forced)
        plan = classify(config, lt, forced)
        if not plan.promote:
            return dataclasses.replace(make_program(config, lt, plan, sig), generation=seen)
        forced = {**forced, **plan.promote}
    raise BatchAxisError(f"{config.name}: could not settle the per-lane states")  # pragma: no cover


# -- pass 5 --------------------------------------------------------------------------------------------------
def _donated(config: MappingConfig, sig: CallSignature) -> tuple[int, ...]:
    """Positions, among the flat leaves passed to `mapping_fn`, of the donated arguments' leaves."""
    if not config.donate_argnums:
        return ()
    donated = resolve_argnums(config.donate_argnums, len(sig.args), config.name, "donate_argnums")
    both = [i for i in donated if i in sig.static_pos]
    if both:
        raise ValueError(
            message(
                config.name,
                f"argument {both[0]} is both static and donated",
                "donated arguments to be dynamic arrays",
                f"donate_argnums={config.donate_argnums}, static positions {sig.static_pos}",
                "drop it from donate_argnums",
            )
        )
    out: list[int] = []
    start = 0
    for i in (i for i in range(len(sig.args)) if i not in sig.static_pos):
        n = len(jax.tree_util.tree_leaves(sig.args[i]))
        if i in donated:
            out.extend(range(start, start + n))
        start += n
    return tuple(out)


def _mapped_lane(
    config: MappingConfig, lt: LaneTrace, plan: StatePlan, sig: CallSignature
) -> tuple[Callable[..., Any], bool]:
    """``mapping_fn`` applied to one lane of the traced jaxpr: flat leaves in, (result, written states) out.

    The flag says whether the mapped function takes a dummy last input (``arange(size)``): `jax.pmap` needs at
    least one mapped input.
    """
    entry = lt.entry
    nleaves = entry.state_nleaves
    state_axes = [0 if r == RNG else (r if isinstance(r, int) else None) for r in lt.roles]
    in_axes = tuple(lt.axes) + tuple(ax for i, ax in enumerate(state_axes) for _ in range(nleaves[i]))
    offsets, pos = {}, entry.n_out
    for i in entry.out_states:
        offsets[i], pos = pos, pos + nleaves[i]
    picked = [j for i in plan.out_list for j in range(offsets[i], offsets[i] + nleaves[i])]
    out_state_axes = tuple(ax for i, ax in zip(plan.out_list, plan.out_axes, strict=True) for _ in range(nleaves[i]))
    needs_dummy = not any(a is not None for a in in_axes) and not config.vectorised
    reduce = _lane_reductions(config, lt, plan, offsets) if config.lanes == "parallel" else []
    # Over devices the jaxpr's constants are inputs (JAX's pmap cache keeps the mapped function; it must not
    # keep a dead function's constants): `lane` then closes over the open jaxpr only.
    n_consts = len(entry.jaxpr.consts) if config.over_devices else 0
    n_out, fn, open_jaxpr = entry.n_out, (None if n_consts else entry.fn), entry.jaxpr.jaxpr

    def lane(*flat: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        run_fn: Any = fn
        if n_consts:
            consts, flat = flat[:n_consts], flat[n_consts:]
            run_fn = jex_core.jaxpr_as_fun(jex_core.ClosedJaxpr(open_jaxpr, list(consts)))
        outs = list(run_fn(*(flat[:-1] if needs_dummy else flat)))
        for reduction, tree, out_pos, in_pos in reduce:  # shared states in state_reduce: a collective
            new = jax.tree_util.tree_unflatten(tree, [outs[j] for j in out_pos])
            old = jax.tree_util.tree_unflatten(tree, [flat[j] for j in in_pos])
            reduced = jax.tree_util.tree_leaves(lane_reduce(reduction, new, old, config.lane_axis_name))
            for j, v in zip(out_pos, reduced, strict=True):
                outs[j] = v
        return tuple(outs[:n_out]), tuple(outs[j] for j in picked)

    extra = dict(config.mapping_kwargs)
    if plan.carry:
        extra["carry"] = _carried(lt, plan, picked)
    donate = _donated(config, sig)
    if donate:
        extra["donate_argnums"] = tuple(n_consts + d for d in donate)
    mapped = config.mapping_fn(
        lane,
        in_axes=(None,) * n_consts + in_axes + ((0,) if needs_dummy else ()),
        out_axes=(tuple(plan.result_axes), out_state_axes),
        axis_name=config.lane_axis_name,
        # `jax.pmap` takes the size from the rows each process passes (its local devices); a local size
        # would break collectives across processes.
        axis_size=None if config.over_devices else lt.size,
        **extra,
    )
    return mapped, needs_dummy


def _carried(lt: LaneTrace, plan: StatePlan, picked: list[int]) -> list[tuple[list[int], list[int]]]:
    """Per carried state: (positions of its leaves among the lane inputs, among the lane's state outputs)."""
    nleaves = lt.entry.state_nleaves
    starts = [len(lt.axes) + sum(nleaves[:i]) for i in range(len(nleaves))]
    out, k = {}, 0
    for i in plan.out_list:
        out[i] = list(range(k, k + nleaves[i]))
        k += nleaves[i]
    return [(list(range(starts[i], starts[i] + nleaves[i])), out[i]) for i in plan.carry]


def _lane_reductions(
    config: MappingConfig, lt: LaneTrace, plan: StatePlan, out_offsets: dict[int, int]
) -> list[tuple[Reduction, Any, list[int], list[int]]]:
    """Per reduced state: (reduction, its pytree structure, positions of its new leaves among the lane outputs,
    of its old leaves among the lane inputs)."""
    nleaves = lt.entry.state_nleaves
    in_offsets, pos = [], len(lt.axes)
    for n in nleaves:
        in_offsets.append(pos)
        pos += n
    out = []
    for i, reduction in plan.reduce.items():
        new_pos = list(range(out_offsets[i], out_offsets[i] + nleaves[i]))
        old_pos = list(range(in_offsets[i], in_offsets[i] + nleaves[i]))
        out.append((reduction, lt.entry.state_treedefs[i], new_pos, old_pos))
    return out


def make_program(config: MappingConfig, lt: LaneTrace, plan: StatePlan, sig: CallSignature) -> Built:
    """Pass 5: the program the dispatcher runs (compiled with `jax.jit` for `jax.vmap`)."""
    entry, size = lt.entry, lt.size
    mapped, needs_dummy = _mapped_lane(config, lt, plan, sig)
    rng = set(plan.rng)
    treedefs, nleaves, out_list = entry.state_treedefs, entry.state_nleaves, plan.out_list
    stacked_reduce = plan.reduce if config.lanes != "parallel" else {}
    consts = list(entry.jaxpr.consts) if config.over_devices else []  # see `_mapped_lane`

    def run(arg_leaves: list[Any], values: list[Any]) -> tuple[list[Any], Any]:
        check_signatures(values, entry.state_sigs)
        flat, new_keys = list(arg_leaves), []
        for i, v in enumerate(values):
            if i in rng:
                new_key, pairs = _local_key_pairs(config, v, size)
                new_keys.append(new_key)
                flat.append(pairs)
            else:
                flat.extend(jax.tree_util.tree_leaves(v))
        if needs_dummy:
            flat.append(jax.numpy.arange(size))
        res_leaves, state_leaves = mapped(*consts, *flat)
        out_values, k = [], 0
        for i in out_list:
            value = jax.tree_util.tree_unflatten(treedefs[i], list(state_leaves[k : k + nleaves[i]]))
            if i in stacked_reduce:  # `map` runs lanes in chunks: reduce the stacked per-lane values here
                value = reduce_stacked(stacked_reduce[i], value, values[i])
            out_values.append(value)
            k += nleaves[i]
        return out_values + new_keys, jax.tree_util.tree_unflatten(entry.out_treedef, list(res_leaves))

    exe = jax.jit(run) if config.jitted else run
    program = Program(lt.states, plan.out_list + plan.rng, run, exe, entry.cacheable)
    return Built(program, size, plan.rows)


def _local_key_pairs(config: MappingConfig, key: Any, size: int) -> tuple[Any, Any]:
    """`lane_key_pairs` of this process's lanes: over devices (`pmap`), the lanes of every process are split
    from one key, so each global device gets its own stream, the same as on one process with all devices."""
    if not config.over_devices or jax.process_count() == 1:
        return lane_key_pairs(key, size)
    new_key, pairs = lane_key_pairs(key, size * jax.process_count())
    start = jax.process_index() * size
    return new_key, pairs[start : start + size]


def lane_key_pairs(key: Any, size: int) -> tuple[Any, Any]:
    """(the generator's next key, per lane a (draw, carry) key pair of shape ``(size, 2)``) from one split."""
    keys = jax.random.split(key, 2 * size + 1)
    return keys[0], jax.numpy.stack([keys[1 : size + 1], keys[size + 1 :]], axis=1)


# -- helpers and messages ------------------------------------------------------------------------------------
def _is_scalar_key(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return (
        dtype is not None and jax.numpy.issubdtype(dtype, jax.dtypes.prng_key) and getattr(value, "shape", None) == ()
    )


def _shape_str(value: Any) -> str:
    leaves = jax.tree_util.tree_leaves(value)
    if len(leaves) == 1:
        return str(tuple(getattr(leaves[0], "shape", ())))
    return tree_aval(value)


def _has_size(value: Any, axis: int, size: int) -> bool:
    leaves = jax.tree_util.tree_leaves(value)
    return bool(leaves) and all(len(getattr(x, "shape", ())) > axis and x.shape[axis] == size for x in leaves)


def _state_leaf_size(leaf: Any, axis: int, state: State, who: str, size: int, path: str = "") -> int:
    shape = tuple(getattr(leaf, "shape", ()))
    nd = len(shape)
    if -nd <= axis < nd:
        return int(shape[axis])
    what = f"its leaf {path}" if path else "its value"
    fix = (
        f"give the state an axis {axis} of the batch size, e.g. {type(state).__name__}(jnp.zeros({size})) for a "
        f"0-d value mapped over {size} lanes"
        if not path
        else f"give every leaf an axis {axis} of the batch size, e.g. jnp.broadcast_to(leaf, ({size},) + "
        "leaf.shape) for a 0-d leaf such as an optimizer's step count"
    )
    raise BatchAxisError(
        message(
            who,
            f"{describe_state(state)} is selected by state_in_axes on axis {axis} but {what} "
            f"{short_aval(leaf)} has no axis {axis}",
            f"a value with a mapped axis {axis} whose size is the batch size (one slot per lane)",
            f"shape {shape} ({nd} dimension(s))",
            f"{fix}; or, for a running sum over the inputs, use statemap.transform.map(f, xs), which runs the "
            "lanes sequentially",
        )
    )


def inconsistent_sizes(
    who: str, sizes: Sequence[Size], fix: str = "make the mapped axes the same length, or map the odd one with None"
) -> BatchAxisError:
    """The error for mapped inputs (``(size, where)`` pairs, the first six shown) whose mapped axes differ."""
    return BatchAxisError(
        message(
            who,
            "the mapped inputs disagree on the size of the mapped axis",
            "one size for every mapped argument and selected state",
            "; ".join(f"{w}: {s}" for s, w in sizes[:6]),
            fix,
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


def _check_out_axis_range(config: MappingConfig, state: State, axis: int, ranks: tuple[int, ...]) -> None:
    """The new mapped axis of a scattered state must exist in the stacked value (one more dimension)."""
    for nd in ranks:
        if not -(nd + 1) <= axis <= nd:
            raise BatchAxisError(
                message(
                    config.name,
                    f"{describe_state(state)} is scattered by {config.option_names[1]} on axis {axis}, which is out "
                    "of range",
                    f"an axis in [{-(nd + 1)}, {nd}] (each lane writes a value of rank {nd})",
                    f"{config.option_names[1]} axis {axis}",
                    f"use an axis in range, e.g. {config.option_names[1]}={{0: s}}",
                )
            )


def _check_reducible(config: MappingConfig, state: State, role: Any, decl: Any) -> None:
    """A state in `state_reduce` must be shared (not mapped on input) and not also in `state_out_axes`."""
    problem = None
    if isinstance(role, int):
        problem = f"is mapped on input axis {role} by {config.option_names[0]} and also selected by state_reduce"
    elif not is_unmatched(decl):
        problem = f"is selected both by state_reduce and by {config.option_names[1]} (axis {decl})"
    if problem is not None:
        raise BatchAxisError(
            message(
                config.name,
                f"{describe_state(state)} {problem}",
                "state_reduce for a shared state written per lane; axes for a per-lane state, not both",
                problem,
                "keep it in one of the two options",
            )
        )


def _axis_mismatch(config: MappingConfig, state: State, r: int, decl: int) -> BatchAxisError:
    words = config.option_names
    return BatchAxisError(
        message(
            config.name,
            f"{describe_state(state)} is mapped on input axis {r} but {words[1]} maps it to axis {decl}",
            "the same axis on input and output (a state keeps its layout)",
            f"state_in_axes axis {r}, state_out_axes axis {decl}",
            f"declare it on axis {r} in both, or only in {words[0]}",
        )
    )


def _read_not_mapped(who: str, state: State, decl: int, size: int) -> BatchAxisError:
    return BatchAxisError(
        message(
            who,
            f"{describe_state(state)} is read and then written per lane, and state_out_axes maps it to axis {decl}, "
            "but state_in_axes does not map it",
            f"a state read per lane to be declared in state_in_axes on axis {decl} too",
            f"its value {_shape_str(peek(state))} already has the batch size {size} on axis {decl}; "
            "broadcasting it into every lane would add another axis on every call",
            f"add it to state_in_axes={{{decl}: ...}} as well",
        )
    )


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
