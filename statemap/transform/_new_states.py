"""Ensemble creation: run a state-creating function once per lane so every new state gets an ensemble axis.

The function is traced once (abstractly, one lane); the states it creates are those objects. The traced jaxpr
then runs under `jax.vmap`/`jax.pmap`, random states it draws from are split per lane (so random
initialisations differ), and the stacked values are written into the new states. `NonBatchState`s are
replicated instead (axis None); `state_out_axes` can place other states on other axes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Hashable
from typing import Any, Unpack

import jax

from .._errors import describe_state, message
from .._state import NonBatchState, State
from .._trace import catch_new_states, trace_level
from ._arguments import CallSignature
from ._dispatch import run_program
from ._mapping_axes import is_unmatched, match_axis, normalize_state_axes
from ._mapping_config import MappingConfig
from ._mapping_plan import classify, make_program, trace_lane
from ._vmap import VmapOptions, vmap_settings

__all__ = ["vmap2_new_states", "pmap2_new_states", "vmap_new_states"]


def _axis_resolver(state_out_axes: Any, who: str) -> Callable[[State], int | None]:
    axes = normalize_state_axes(state_out_axes, who, "state_out_axes")

    def resolve(state: State) -> int | None:
        if isinstance(state, NonBatchState):
            return None
        ax = match_axis(axes, state)
        return 0 if is_unmatched(ax) else ax

    return resolve


def _check_size(axis_size: Any, who: str) -> int:
    if isinstance(axis_size, bool) or not isinstance(axis_size, int) or not 1 <= axis_size <= _MAX_SIZE:
        raise ValueError(
            message(
                who,
                "axis_size must be a positive int that fits an array dimension",
                f"the number of ensemble members, e.g. axis_size=8 (at most {_MAX_SIZE})",
                repr(axis_size),
                "pass axis_size=N with N >= 1",
            )
        )
    return axis_size


_MAX_SIZE = 2**63 - 1  # XLA's array dimensions are int64


_REPLICATED_FIX = (
    "give it the same value in every member (not derived from random draws or mapped data), or make it a batched "
    "state (not a NonBatchState, or select it with state_out_axes={0: ...})"
)


def _map_creating(
    fun: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    config: MappingConfig,
    state_tag: str | None,
    state_to_exclude: Any,
    state_out_axes: Any,
) -> tuple[Any, list[State]]:
    """Map `fun(*args)`, which creates states; returns (its mapped result, the new states).

    The plan passes run as for any mapping, except that the output axes of the new states are known only once
    the trace has created them, so they are set between the trace and the classification.
    """
    resolve = _axis_resolver(state_out_axes, config.name)
    base = trace_level()
    caught: list[State] = []

    def lane(*a: Any) -> tuple[Any, list[Any]]:
        with catch_new_states(state_tag, state_to_exclude) as c:
            out = fun(*a)
        caught[:] = c.states
        return out, [s.value for s in c.states]

    def describe(path: Any) -> str:
        keys = [getattr(k, "idx", None) for k in path]
        if len(keys) >= 2 and keys[0] == 1 and keys[1] is not None and keys[1] < len(caught):
            return f"new {describe_state(caught[keys[1]])} (replicated, since it is a NonBatchState or declared None)"
        return f"output result{jax.tree_util.keystr(path)}"

    sig = CallSignature.of(config.args, args, {})
    lt = trace_lane(lane, config, sig, {})
    config = dataclasses.replace(config, out_axes=(config.out_axes, [resolve(s) for s in caught]))
    built = make_program(config, lt, classify(config, lt, {}, describe, _REPLICATED_FIX), sig)
    out, values = run_program(built.program, lt.states, sig.leaves)
    for s, v in zip(caught, values, strict=True):
        s.restore_value(v)
        s.stack_level = base
    return out, list(caught)


def _ensemble(
    who: str,
    module: Any,
    init_kwargs: dict[str, Any] | None,
    state_tag: str | None,
    size: int,
    state_out_axes: Any,
    axis_name: Hashable | None,
    mapping_fn: Callable[..., Any],
) -> dict[int | None, list[State]]:
    """Run ``module.init_all_states(**init_kwargs)`` once per member; the new states grouped by their axis."""
    kwargs = dict(init_kwargs or {})

    def init() -> None:
        module.init_all_states(**kwargs)

    config = MappingConfig.create(
        init, name=who, in_axes=(), out_axes=None, axis_size=size, axis_name=axis_name, mapping_fn=mapping_fn
    )
    _, states = _map_creating(
        init, (), config=config, state_tag=state_tag, state_to_exclude=None, state_out_axes=state_out_axes
    )
    resolve = _axis_resolver(state_out_axes, who)
    out: dict[int | None, list[State]] = {}
    for s in states:
        out.setdefault(resolve(s), []).append(s)
    return out


def vmap2_new_states(
    module: Any,
    init_kwargs: dict[str, Any] | None = None,
    state_tag: str | None = None,
    axis_size: int | None = None,
    state_out_axes: Any = None,
) -> dict[int | None, list[State]]:
    """Create an ensemble: run ``module.init_all_states(**init_kwargs)`` once per member.

    Every state created gets a leading ensemble axis of size `axis_size` (random initialisations differ per
    member); `NonBatchState`s are replicated; `state_out_axes` (``{axis: filter}``) places others elsewhere.
    The initialiser is traced once.

    Args:
      module: Any object with ``init_all_states(**kwargs)`` (e.g. a `statemap.nn.Module`).
      init_kwargs: Keyword arguments for ``init_all_states``.
      state_tag: Tag added to every new state.
      axis_size: Number of ensemble members (required).
      state_out_axes: Where to put the ensemble axis of selected new states.

    Returns:
      ``{axis: [new states]}``.

    Examples:
      >>> class Neuron(sm.nn.Module):
      ...     def init_state(self, n=2):
      ...         self.V = sm.HiddenState(sm.random.normal(size=n))
      ...         self.t = sm.NonBatchState(jnp.array(0.0))
      >>> neuron = Neuron()
      >>> groups = sm.transform.vmap2_new_states(neuron, {"n": 2}, axis_size=5)
      >>> neuron.V.value.shape, neuron.t.value.shape
      ((5, 2), ())
      >>> bool(neuron.V.value[0, 0] != neuron.V.value[1, 0])
      True
    """
    size = _check_size(axis_size, "vmap2_new_states")
    return _ensemble("vmap2_new_states", module, init_kwargs, state_tag, size, state_out_axes, None, jax.vmap)


def pmap2_new_states(
    module: Any,
    init_kwargs: dict[str, Any] | None = None,
    state_tag: str | None = None,
    axis_size: int | None = None,
    state_out_axes: Any = None,
    axis_name: Hashable | None = None,
) -> dict[int | None, list[State]]:
    """Like `vmap2_new_states`, one member per device (`axis_size` defaults to the local device count).

    Examples:
      >>> class Cell(sm.nn.Module):
      ...     def init_state(self):
      ...         self.h = sm.ShortTermState(sm.random.uniform(size=3))
      >>> cell = Cell()
      >>> _ = sm.transform.pmap2_new_states(cell, {})
      >>> cell.h.value.shape == (jax.local_device_count(), 3)
      True
    """
    size = _check_size(jax.local_device_count() if axis_size is None else axis_size, "pmap2_new_states")
    return _ensemble("pmap2_new_states", module, init_kwargs, state_tag, size, state_out_axes, axis_name, jax.pmap)


def vmap_new_states(
    fun: Callable[..., Any] | None = None,
    *,
    state_tag: str | None = None,
    state_to_exclude: Any = None,
    in_states: Any = None,
    out_states: Any = None,
    **options: Unpack[VmapOptions],
) -> Callable[..., Any]:
    """Legacy: map a function that creates states; each new state gets a leading axis (NonBatchState: none).

    The `options` are those of `jax.vmap`, as in `vmap2`. `state_tag` is added to every new state's tags; new
    states matching the filter `state_to_exclude` are not caught (as in `statemap.catch_new_states`).

    Examples:
      >>> made = []
      >>> @sm.transform.vmap_new_states(axis_size=3, in_axes=None)
      ... def make(scale):
      ...     made.append(sm.ShortTermState(scale * sm.random.uniform(size=2)))
      ...     return scale
      >>> make(2.0), made[0].value.shape
      (Array([2., 2., 2.], dtype=float32, weak_type=True), (3, 2))
    """
    if in_states is not None or out_states is not None:
        raise ValueError(
            message(
                "vmap_new_states",
                "in_states/out_states are not accepted",
                "a function that creates new states (existing states are mapped with vmap/vmap2)",
                f"in_states={in_states!r:.40}, out_states={out_states!r:.40}",
                "use statemap.transform.vmap or vmap2 to map existing states",
            )
        )
    settings = vmap_settings("vmap_new_states", options)
    if settings["axis_size"] is not None:
        _check_size(settings["axis_size"], "vmap_new_states")

    def make(f: Callable[..., Any]) -> Callable[..., Any]:
        config = MappingConfig.create(f, name="vmap_new_states", **settings)

        @functools.wraps(f)
        def mapped(*args: Any) -> Any:
            out, _ = _map_creating(
                f, args, config=config, state_tag=state_tag, state_to_exclude=state_to_exclude, state_out_axes=None
            )
            return out

        return mapped

    return make if fun is None else make(fun)
