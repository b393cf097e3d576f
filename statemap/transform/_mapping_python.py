"""The Python tier of a mapping: run the user's Python body under `jax.vmap`, as `jax.vmap` itself would.

A signature whose abstract lane trace needs a concrete value (``if flag.value:``, ``range(n.value)``, a list
indexed by a state) cannot be compiled once and reused: the branch depends on the value. Such a signature runs
here on every call, with exactly the semantics of eager `jax.vmap` over a closed-over value:

- Broadcast states are seen with their concrete values, so Python control flow on them works and is evaluated
  again on every call (flipping a flag switches the branch, and with it the set of written states).
- A state selected by `state_in_axes` is seen one lane at a time (sliced inside the map with the lane index).
- A `RandomState` is split exactly as in the compiled tier (`_mapping_plan.lane_key_pairs`), so both tiers draw
  the same numbers.
- Written states are placed by the same rules as in the compiled tier (`_mapping_plan.out_axis`); whether a write
  varies per lane is whether its value is a tracer of this map. Writes happen together at the end; after an
  exception every state keeps its value.

Nested in another eager map the values stay concrete and this works as nested `jax.vmap` does; under an enclosing
`jit` they are abstract, so the call raises a `ConcreteValueError` naming the states.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .. import _compat
from .._errors import ConcreteValueError, describe_state, message
from .._state import State, mark_dead, write_back
from .._trace import CONTEXT, StateTrace, catch_new_states
from ..random._rng import lane_keys
from ._arguments import CallSignature
from ._mapping_config import MappingConfig
from ._mapping_plan import (
    BROADCAST,
    CONCRETIZATION_ERRORS,
    RNG,
    LaneState,
    NeedsConcrete,
    Promote,
    batch_size,
    input_role,
    lane_arguments,
    lane_key_pairs,
    out_axis,
    state_sizes_of,
)
from ._reductions import lane_reduce, match_reduction

__all__ = ["python_tier"]

_MAX_PROMOTIONS = 2


def python_tier(fun: Callable[..., Any], config: MappingConfig, cause: NeedsConcrete) -> Callable[[CallSignature], Any]:
    """``direct(sig)`` for a `Program`: runs one call of `fun` in the Python tier (see the module docstring)."""

    def direct(sig: CallSignature) -> Any:
        traced = bool(CONTEXT.stack) or any(_compat.is_tracer(x) for x in sig.leaves)
        forced: dict[int, int] = {}
        for _ in range(_MAX_PROMOTIONS):
            run = _Run(fun, config, sig, forced)
            try:
                out = run.call()
            except CONCRETIZATION_ERRORS as e:
                if traced:  # inside jit: the value is abstract; eagerly it is JAX's own error, as in jax.vmap
                    raise _abstract_error(config, cause) from e
                raise
            if not run.promote:
                write_back(run.frame.states, run.updates)
                return out
            forced = {**forced, **run.promote}
        raise ConcreteValueError(f"{config.name}: could not settle the per-lane states")  # pragma: no cover

    return direct


class _Run:
    """One call in the Python tier: the frame it ran in, the write-backs it decided, or states to promote."""

    def __init__(self, fun: Callable[..., Any], config: MappingConfig, sig: CallSignature, forced: dict[int, int]):
        self.fun, self.config, self.sig, self.forced = fun, config, sig, forced
        self.axes, _, sizes = lane_arguments(config, sig)
        self.size = batch_size(config, sizes)
        self.roles: dict[int, Any] = {}
        self.olds: dict[int, Any] = {}  # each state's value outside the map (a reduction's "old")
        self.new_keys: dict[int, Any] = {}
        self.lane: Any = None
        self.trace: Any = None
        self.register: Callable[[Any, Any], None] = _unregistered
        self.frame = StateTrace(self._enter, config.name)
        self.unbatched: dict[int, Any] = {}
        self.batched: list[int] = []
        self.updates: dict[int, Any] = {}
        self.promote: dict[int, int] = {}

    def call(self) -> Any:
        config = self.config
        mapped = config.mapping_fn(
            self._body,
            in_axes=(0, *self.axes),
            out_axes=(config.out_axes, 0),
            axis_name=config.lane_axis_name,
            axis_size=self.size,
            **config.mapping_kwargs,
        )
        with lane_keys() as self.register:
            out, stacked = mapped(jnp.arange(self.size), *self.sig.leaves)
        self._place(dict(zip(self.batched, stacked, strict=True)))
        return out

    def _body(self, lane: Any, *leaves: Any) -> tuple[Any, list[Any]]:
        self.lane, self.trace = lane, _compat.current_trace()
        args, kwargs = self.sig.rebuild(leaves)
        with catch_new_states() as caught, self.frame:
            try:
                out = self.fun(*args, **kwargs)
            finally:
                mark_dead(caught.states, self.config.name)
        frame, stacked = self.frame, []
        for i, written in enumerate(frame.written):
            state = frame.states[i]
            role = self.roles.get(id(state), BROADCAST)
            if not written or role == RNG:
                continue
            value = frame.values[i]
            reduction = match_reduction(self.config.state_reduce, state)
            if reduction is not None and role == BROADCAST:  # a collective: the same value in every lane
                value = lane_reduce(reduction, value, self.olds[id(state)], self.config.lane_axis_name)
            if any(_compat.batch_dim_in(x, self.trace) is not None for x in jax.tree_util.tree_leaves(value)):
                self.batched.append(i)
                stacked.append(value)
            else:  # the same in every lane of this map (an enclosing map may still batch it): returned as it is
                self.unbatched[i] = value
        return out, stacked

    def _enter(self, state: State, value: Any) -> Any:
        """The frame's hook: a state's value as one lane sees it, at its first touch (maybe inside an inner
        transform's trace: the view is computed under this map's own trace)."""
        with _compat.use_trace(self.trace):
            return self._lane_view(state, value)

    def _lane_view(self, state: State, value: Any) -> Any:
        role = self.roles[id(state)] = input_role(self.config, state, self.forced)
        self.olds[id(state)] = value
        if role == RNG:
            self.new_keys[id(state)], pairs = lane_key_pairs(value, self.size)
            pair = pairs[self.lane]
            carry = pair[1]  # one object: the generator recognises it by identity (lane_keys)
            self.register(carry, pair[0])
            return carry
        if isinstance(role, int):
            batch_size(
                self.config,
                [(self.size, "the mapped arguments"), *state_sizes_of(self.config.name, state, role, self.size)],
            )
            return jax.tree_util.tree_map(lambda x: jnp.take(x, self.lane, axis=role), value)
        return value

    def _place(self, stacked: dict[int, Any]) -> None:
        """Decide every written state's new value (or the states 'auto' promotes)."""
        frame = self.frame
        for i, state in enumerate(frame.states):
            role = self.roles.get(id(state), BROADCAST)
            if role == RNG:
                self.updates[i] = self.new_keys[id(state)]
                continue
            if not frame.written[i]:
                continue
            new = stacked[i] if i in stacked else self.unbatched[i]
            ranks = tuple(jnp.ndim(x) - (i in stacked) for x in jax.tree_util.tree_leaves(new))
            lane = LaneState(state, role, frame.read[i], True, ranks)
            decision = out_axis(self.config, lane, self.size, i in stacked, self.forced)
            if isinstance(decision, Promote):
                self.promote[id(state)] = decision.axis
                continue
            self.updates[i] = self._value(i, decision[0], stacked)

    def _value(self, i: int, axis: int | None, stacked: dict[int, Any]) -> Any:
        """The new value of written state `i` with its mapped axis at `axis` (None: unbatched)."""
        if i in stacked:
            assert axis is not None  # out_axis raised for a per-lane write declared unbatched
            return jax.tree_util.tree_map(lambda x: jnp.moveaxis(x, 0, axis), stacked[i])
        if axis is None:
            return self.unbatched[i]
        return jax.tree_util.tree_map(lambda x: _broadcast(x, axis, self.size), self.unbatched[i])


def _unregistered(carry: Any, draw: Any) -> None:  # pragma: no cover - replaced before the body runs
    raise AssertionError("lane keys are registered only while the map runs")


def _broadcast(x: Any, axis: int, size: int) -> Any:
    x = jnp.asarray(x)
    return jnp.moveaxis(jnp.broadcast_to(x, (size, *x.shape)), 0, axis)


def _abstract_error(config: MappingConfig, cause: NeedsConcrete) -> ConcreteValueError:
    states = ", ".join(describe_state(s) for s in reversed(cause.states)) or "none"
    first_line = str(cause.error).strip().splitlines()[0] if str(cause.error).strip() else type(cause.error).__name__
    return ConcreteValueError(
        message(
            config.name,
            "Python control flow used the value of a state, which is abstract here (an enclosing jit or other "
            f"transform traces this call); broadcast states read before that point, latest first: {states}",
            "a concrete value, as in an eager call (or an array-level choice that works on abstract values)",
            first_line,
            "use statemap.transform.cond / jax.lax.cond or jnp.where instead of `if`, make the value a static "
            "argument of the enclosing jit, or call the mapping outside jit",
        )
    )
