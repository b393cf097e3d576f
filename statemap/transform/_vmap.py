"""Front-ends of the mapping engine: `vmap2`, `pmap2` and the declaration-based legacy `vmap`.

Each builds one complete `MappingConfig` and returns the `StatefulMapping` of the function or, called without
it, the decorator making it (`_front_end`). The options of `jax.vmap` itself are declared once, in
`VmapOptions`, for `vmap2`, `vmap` and `vmap_new_states`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypedDict, Unpack

import jax

from .._errors import BatchAxisError, message
from .._state import State
from ._decorator import makes
from ._mapping import StatefulMapping
from ._mapping_axes import StateIs
from ._mapping_config import MappingConfig, vmap_fn

__all__ = ["vmap2", "pmap2", "vmap", "VmapOptions", "vmap_settings"]

_Decorator = Callable[[Callable[..., Any]], StatefulMapping]


class VmapOptions(TypedDict, total=False):
    """The options of `jax.vmap` that `vmap2`, `vmap` and `vmap_new_states` take as keywords, with its meaning
    and defaults (a mapping also maps keyword arguments, on axis 0)."""

    in_axes: Any
    out_axes: Any
    axis_name: Hashable | None
    axis_size: int | None
    spmd_axis_name: Hashable | tuple[Hashable, ...] | None


def vmap_settings(who: str, options: VmapOptions) -> dict[str, Any]:
    """`options` as arguments of `MappingConfig.create`, with `jax.vmap`'s defaults for those not given.

    Raises:
      TypeError: an unknown keyword, as Python says it of a plain function.
    """
    for key in options:
        if key not in VmapOptions.__optional_keys__:
            raise TypeError(f"{who}() got an unexpected keyword argument {key!r}")
    return {
        "in_axes": options.get("in_axes", 0),
        "out_axes": options.get("out_axes", 0),
        "axis_name": options.get("axis_name"),
        "axis_size": options.get("axis_size"),
        "mapping_fn": vmap_fn(options.get("spmd_axis_name")),
    }


def _front_end(fn: Callable[..., Any] | None, name: str, **config: Any) -> StatefulMapping | _Decorator:
    """The `StatefulMapping` of `fn` for the `MappingConfig.create` options `config`; with `fn` None, the
    decorator making it."""

    def make(f: Callable[..., Any]) -> StatefulMapping:
        return StatefulMapping.from_config(f, MappingConfig.create(f, name=name, **config))

    return make if fn is None else make(fn)


@makes(StatefulMapping)
def vmap2(
    fn: Callable[..., Any] | None = None,
    *,
    state_in_axes: Any = None,
    state_out_axes: Any = None,
    unexpected_out_state_mapping: str = "raise",
    state_reduce: Any = None,
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
    **options: Unpack[VmapOptions],
) -> StatefulMapping | _Decorator:
    """Vectorise `fn` over a mapped axis, like `jax.vmap`, batching the states it reads and writes.

    States selected by `state_in_axes` enter one lane at a time and are written back on the same axis; other
    states are broadcast; random states are split per lane. See `StatefulMapping` for every rule.

    Args:
      fn: Function to map. It may read and write `State`s it closes over.
      state_in_axes: ``{axis: selector}`` selecting states that enter batched; others are broadcast.
      state_out_axes: ``{axis: selector}`` for where written states' mapped axis goes.
      unexpected_out_state_mapping: ``'raise'`` (default), ``'warn'``, ``'ignore'`` or ``'auto'``.
      state_reduce: ``{reduction: selector}``: a shared state written per lane gets the reduction over lanes of
        its per-lane new values (``'mean'``, ``'sum'``, ``'max'``, ``'min'``, ``'first'``, ``'last'``, ``'add'``
        = old + Σ(newᵢ − old), or a callable ``(stacked_new, old) -> value``).
      static_argnums / static_argnames: Arguments closed over as compile-time constants.
      **options: `in_axes`, `out_axes`, `axis_name`, `axis_size` and `spmd_axis_name`, as in `jax.vmap`
        (`VmapOptions`; keyword arguments map on axis 0). Non-array leaves mapped with None (a string, a
        callable, a Python int…) reach `fn` unchanged.

    Returns:
      A `StatefulMapping` (call it like `fn`); without `fn`, a decorator.

    Raises:
      BatchAxisError: a state is written per lane but `state_out_axes` does not select it, or axes are wrong.

    Examples:
      >>> w = sm.State(jnp.zeros(3), name="w")
      >>> @sm.transform.vmap2(state_in_axes={0: w}, state_out_axes={0: w})
      ... def step(x):
      ...     w.value = w.value + x
      ...     return 2 * w.value
      >>> step(jnp.arange(3.0))
      Array([0., 2., 4.], dtype=float32)
      >>> w.value
      Array([0., 1., 2.], dtype=float32)

      Training an ensemble: each of 4 members has its own parameters (leading axis 4) and draws its own dropout
      mask from the global generator; one compiled step updates all members:

      >>> class MLP(sm.nn.Module):
      ...     def __init__(self, members):
      ...         self.w1 = sm.ParamState(sm.random.normal(size=(members, 2, 8)) * 0.5)
      ...         self.w2 = sm.ParamState(sm.random.normal(size=(members, 8)) * 0.5)
      >>> model = MLP(members=4)
      >>> params = model.states(sm.ParamState)
      >>> def loss_fn(x, y):
      ...     h = jax.nn.relu(x @ model.w1.value)
      ...     keep = sm.random.bernoulli(0.9, size=h.shape)  # differs per member
      ...     return jnp.mean((jnp.where(keep, h / 0.9, 0.0) @ model.w2.value - y) ** 2)
      >>> @sm.transform.jit
      ... @sm.transform.vmap2(in_axes=None, state_in_axes={0: sm.ParamState})
      ... def train_step(x, y):
      ...     grads, loss = sm.transform.grad(loss_fn, grad_states=params, return_value=True)(x, y)
      ...     for path, g in grads.items():
      ...         params[path].value = params[path].value - 0.1 * g
      ...     return loss
      >>> x = sm.random.normal(size=(16, 2)); y = x.sum(axis=1)
      >>> first = train_step(x, y)
      >>> for _ in range(50):
      ...     last = train_step(x, y)
      >>> first.shape, bool((last < first).all())
      ((4,), True)
    """
    return _front_end(
        fn,
        "vmap2",
        state_in_axes=state_in_axes,
        state_out_axes=state_out_axes,
        unexpected_out_state_mapping=unexpected_out_state_mapping,
        state_reduce=state_reduce,
        static_argnums=static_argnums,
        static_argnames=static_argnames,
        **vmap_settings("vmap2", options),
    )


@makes(StatefulMapping)
def pmap2(
    fn: Callable[..., Any] | None = None,
    axis_name: Hashable | None = None,
    *,
    in_axes: Any = 0,
    out_axes: Any = 0,
    static_broadcasted_argnums: int | Sequence[int] = (),
    devices: Sequence[Any] | None = None,
    backend: str | None = None,
    axis_size: int | None = None,
    donate_argnums: int | Sequence[int] = (),
    state_in_axes: Any = None,
    state_out_axes: Any = None,
    unexpected_out_state_mapping: str = "raise",
    state_reduce: Any = None,
    static_argnames: str | Sequence[str] = (),
) -> StatefulMapping | _Decorator:
    """Map `fn` over devices, like `jax.pmap`, with the state semantics of `vmap2`.

    `static_broadcasted_argnums` and `donate_argnums` count the user's own arguments. Each signature compiles
    once (the pmapped function has a stable identity per plan).

    Args:
      fn: Function to map over devices.
      axis_name / in_axes / out_axes / devices / backend / axis_size: As in `jax.pmap`.
      static_broadcasted_argnums: Arguments passed as compile-time constants to every device (hashable).
      donate_argnums: Arguments whose buffers may be reused for outputs.
      state_in_axes / state_out_axes / unexpected_out_state_mapping / state_reduce: As in `vmap2` (a reduction
        is a collective over the devices).
      static_argnames: Keyword arguments passed as constants.

    Returns:
      A `StatefulMapping` using `jax.pmap`; without `fn`, a decorator.

    Examples:
      >>> n = jax.local_device_count()
      >>> total = sm.State(jnp.zeros(n), name="total")
      >>> @sm.transform.pmap2(axis_name="d", state_in_axes={0: total}, state_out_axes={0: total})
      ... def add(x):
      ...     total.value = total.value + jax.lax.psum(x, "d")
      ...     return total.value
      >>> add(jnp.ones(n)).shape == (n,)
      True
    """
    pmap_kwargs: dict[str, Any] = {k: v for k, v in (("devices", devices), ("backend", backend)) if v is not None}
    return _front_end(  # in the order of the signature: pmap's options, then the states'
        fn,
        "pmap2",
        axis_name=axis_name,
        in_axes=in_axes,
        out_axes=out_axes,
        static_argnums=static_broadcasted_argnums,
        mapping_fn=functools.partial(jax.pmap, **pmap_kwargs) if pmap_kwargs else jax.pmap,
        axis_size=axis_size,
        donate_argnums=donate_argnums,
        state_in_axes=state_in_axes,
        state_out_axes=state_out_axes,
        unexpected_out_state_mapping=unexpected_out_state_mapping,
        state_reduce=state_reduce,
        static_argnames=static_argnames,
    )


def _declared_states(spec: Any, who: str, what: str) -> dict[int, list[State]]:
    """Legacy declarations → ``{axis: [states]}``: ``{axis: {name: State} | [States] | State}`` or bare states."""
    if spec is None:
        return {}
    if isinstance(spec, dict) and all(isinstance(k, int) and not isinstance(k, bool) for k in spec):
        out: dict[int, list[State]] = {}
        for axis, group in spec.items():
            out[axis] = _states_of(group, who, what)
        return out
    return {0: _states_of(spec, who, what)}


def _states_of(group: Any, who: str, what: str) -> list[State]:
    leaves = jax.tree_util.tree_leaves(group)
    bad = [x for x in leaves if not isinstance(x, State)]
    if bad:
        raise TypeError(
            message(
                who,
                f"{what} must declare State objects",
                f"{what}={{axis: {{name: State}}}}, {{axis: [States]}}, or States",
                f"{type(bad[0]).__name__} {bad[0]!r:.40}",
                "list the State objects themselves (not their values)",
            )
        )
    return leaves


@makes(StatefulMapping)
def vmap(
    fn: Callable[..., Any] | None = None,
    *,
    in_states: Any = None,
    out_states: Any = None,
    **options: Unpack[VmapOptions],
) -> StatefulMapping | _Decorator:
    """Legacy, declaration-based mapping: states are declared by instance in `in_states` / `out_states`.

    ``in_states={axis: {name: state}}`` (or ``{axis: [states]}``, or just states for axis 0) maps those states
    per lane and writes them back on the same axis; `out_states` scatters written states. Any other state written
    per lane is an error (policy ``'raise'``). The `options` are those of `jax.vmap`, as in `vmap2`.

    Examples:
      >>> h = sm.ShortTermState(jnp.zeros(2), name="h")
      >>> f = sm.transform.vmap(lambda x: h.__setattr__("value", h.value + x), in_states={0: {"h": h}})
      >>> _ = f(jnp.array([1.0, 2.0])); h.value
      Array([1., 2.], dtype=float32)
    """
    ins = _declared_states(in_states, "vmap", "in_states")
    outs = _declared_states(out_states, "vmap", "out_states")
    where: dict[int, tuple[int, State]] = {}
    for axis, group in ins.items():
        for s in group:
            where[id(s)] = (axis, s)
    for axis, group in outs.items():
        for s in group:
            if id(s) in where and where[id(s)][0] != axis:
                raise BatchAxisError(
                    message(
                        "vmap",
                        f"state {s._label()} is declared on axis {where[id(s)][0]} in in_states and on axis "
                        f"{axis} in out_states",
                        "one axis per state",
                        f"in_states axis {where[id(s)][0]}, out_states axis {axis}",
                        "declare it on the same axis in both (or only in in_states)",
                    )
                )
    merged = {axis: list(group) for axis, group in ins.items()}
    for axis, group in outs.items():
        merged.setdefault(axis, []).extend(s for s in group if id(s) not in where)
    return _front_end(
        fn,
        "vmap",
        state_in_axes={a: StateIs(*g) for a, g in ins.items() if g},
        state_out_axes={a: StateIs(*g) for a, g in merged.items() if g},
        option_names=("in_states", "out_states"),
        **vmap_settings("vmap", options),
    )
