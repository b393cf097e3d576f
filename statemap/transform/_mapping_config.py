"""`MappingConfig`: everything a mapping transform is told at construction, validated once and frozen.

Each front-end (`StatefulMapping`, `vmap2`, `pmap2`, `map`, the legacy `vmap`, ensemble creation) builds one
complete config and hands it to the engine; binding a decorated method to an instance is `bind_first`
(a `dataclasses.replace`). Nothing changes a config after construction.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax

from .._errors import BatchAxisError, message
from ..util.filter import Predicate
from ._arguments import ArgSpec, parse_argnums, shift_argnums
from ._mapping_axes import POLICIES, check_in_axes_type, normalize_state_axes
from ._reductions import Reduction, normalize_state_reduce

# The axis name of a mapping without `axis_name` whose state reductions need one (never visible to users' code).
_REDUCE_AXIS = "statemap:state_reduce"

__all__ = ["MappingConfig", "is_vmap", "vmap_fn"]


def vmap_fn(spmd_axis_name: Hashable | tuple[Hashable, ...] | None) -> Callable[..., Any]:
    """`jax.vmap`, or a partial of it with `spmd_axis_name` (still recognised by `is_vmap`)."""
    if spmd_axis_name is None:
        return jax.vmap
    return functools.partial(jax.vmap, spmd_axis_name=spmd_axis_name)


def _unwrap(mapping_fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = mapping_fn
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def is_vmap(mapping_fn: Callable[..., Any]) -> bool:
    """Whether `mapping_fn` is `jax.vmap` (possibly partially applied): its lanes run inside one program."""
    return _unwrap(mapping_fn) is jax.vmap


@dataclasses.dataclass(frozen=True)
class MappingConfig:
    """The declared configuration of a mapping transform (see `StatefulMapping` for each option's meaning).

    Attributes:
      args: How arguments are split (static ones) and the transform's name (``args.who``).
      in_axes / out_axes: As in `jax.vmap`.
      state_in_axes / state_out_axes: Normalised ``{axis: predicate}``.
      policy: ``unexpected_out_state_mapping``.
      axis_env: Extra named axes visible while tracing.
      return_only_write: Whether only written states come back.
      axis_size / axis_name: As in `jax.vmap`.
      mapping_fn / mapping_kwargs: The JAX mapping and its extra keyword arguments.
      donate_argnums: Arguments (the user's numbering) whose buffers `pmap` may reuse.
      option_names: How messages name the two state options (the legacy `vmap` says in_states/out_states).
      state_reduce: Normalised ``((reduction, predicate), ...)`` (`_reductions.py`).
      lanes: How `mapping_fn` runs the lanes: ``'parallel'`` (`jax.vmap`/`jax.pmap`: collectives over the axis),
        ``'chunked'`` (`map` with a batch size: reductions apply to the stacked per-lane values) or
        ``'sequential'`` (`map` without one: shared states written by a lane are carried to the next).

    Examples:
      >>> from statemap.transform._mapping_config import MappingConfig
      >>> config = MappingConfig.create(lambda self, x: x, name="vmap2", in_axes=(None, 0), static_argnums=0)
      >>> config.bind_first().in_axes, config.bind_first().args.static_argnums
      ((0,), ())
    """

    args: ArgSpec
    in_axes: Any = 0
    out_axes: Any = 0
    state_in_axes: dict[Hashable, Predicate] = dataclasses.field(default_factory=dict)
    state_out_axes: dict[Hashable, Predicate] = dataclasses.field(default_factory=dict)
    policy: str = "raise"
    axis_env: tuple[tuple[Hashable, int], ...] = ()
    return_only_write: bool = True
    axis_size: int | None = None
    axis_name: Hashable | None = None
    mapping_fn: Callable[..., Any] = jax.vmap
    mapping_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    donate_argnums: tuple[int, ...] = ()
    option_names: tuple[str, str] = ("state_in_axes", "state_out_axes")
    state_reduce: tuple[tuple[Reduction, Predicate], ...] = ()
    lanes: str = "parallel"

    @property
    def name(self) -> str:
        return self.args.who

    @property
    def over_devices(self) -> bool:
        """True for `jax.pmap`: one lane per device, across every process of a `jax.distributed` job."""
        return _unwrap(self.mapping_fn) is jax.pmap

    @property
    def jitted(self) -> bool:
        """Whether the program is compiled with `jax.jit` (and may take the dispatcher's fast path)."""
        return self.vectorised or self.lanes != "parallel"

    @property
    def lane_axis_name(self) -> Hashable | None:
        """The axis name the mapping runs under: `axis_name`, or a private one when reductions need a name."""
        if self.axis_name is None and self.state_reduce and self.lanes == "parallel":
            return _REDUCE_AXIS
        return self.axis_name

    @property
    def vectorised(self) -> bool:
        """True for `jax.vmap`: the mapped program is compiled with `jax.jit` and may take the fast path."""
        return is_vmap(self.mapping_fn)

    @classmethod
    def create(
        cls,
        fun: Callable[..., Any],
        *,
        name: str,
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
        mapping_fn: Callable[..., Any] = jax.vmap,
        mapping_kwargs: dict[str, Any] | None = None,
        donate_argnums: int | Sequence[int] = (),
        option_names: tuple[str, str] = ("state_in_axes", "state_out_axes"),
        state_reduce: Any = None,
        lanes: str = "parallel",
    ) -> MappingConfig:
        """Validate the options of a mapping of `fun` and build its config (errors name `name`)."""
        _check_options(fun, name, unexpected_out_state_mapping, axis_size, mapping_fn)
        check_in_axes_type(in_axes, name)
        check_in_axes_type(out_axes, name, "out_axes")
        return cls(
            args=ArgSpec.create(fun, name, static_argnums, static_argnames),
            in_axes=in_axes,
            out_axes=out_axes,
            state_in_axes=normalize_state_axes(state_in_axes, name, "state_in_axes"),
            state_out_axes=normalize_state_axes(state_out_axes, name, "state_out_axes"),
            policy=unexpected_out_state_mapping,
            axis_env=tuple(axis_env or ()),
            return_only_write=bool(return_only_write),
            axis_size=axis_size,
            axis_name=axis_name,
            mapping_fn=mapping_fn,
            mapping_kwargs=dict(mapping_kwargs or {}),
            donate_argnums=parse_argnums(donate_argnums, "donate_argnums"),
            option_names=option_names,
            state_reduce=normalize_state_reduce(state_reduce, name),
            lanes=lanes,
        )

    def bind_first(self) -> MappingConfig:
        """The config of the same mapping with its first argument bound (a decorated method's ``self``)."""
        in_axes = self.in_axes
        if isinstance(in_axes, (tuple, list)):
            in_axes = tuple(in_axes[1:])
        return dataclasses.replace(
            self, args=self.args.bound(), in_axes=in_axes, donate_argnums=shift_argnums(self.donate_argnums)
        )


def _check_options(fun: Any, who: str, policy: Any, axis_size: Any, mapping_fn: Any) -> None:
    if not callable(fun):
        raise TypeError(f"{who}: expected a callable to map, got {type(fun).__name__}")
    if policy not in POLICIES:
        raise ValueError(
            message(
                who,
                f"unexpected_out_state_mapping={policy!r} is not a policy",
                f"one of {', '.join(repr(p) for p in POLICIES)}",
                repr(policy),
                "use 'raise' (default), 'warn', 'ignore' or 'auto'",
            )
        )
    bad_size = isinstance(axis_size, bool) or not isinstance(axis_size, int) or not 1 <= axis_size < 2**31
    if axis_size is not None and bad_size:
        raise BatchAxisError(
            message(
                who,
                "axis_size must be a positive int that fits an array dimension",
                "1 <= axis_size < 2**31, or None",
                repr(axis_size),
                "pass the number of lanes",
            )
        )
    if not callable(mapping_fn):
        raise TypeError(f"{who}: mapping_fn must be callable, got {type(mapping_fn).__name__}")
