"""Tests for statemap/transform/_mapping_config.py: the frozen, declared configuration of a mapping."""

import dataclasses
import functools

import jax
import pytest

import statemap as sm
from statemap.transform._mapping_config import MappingConfig, is_vmap, vmap_fn
from statemap.util.filter import OfType


def _config(**kw):
    return MappingConfig.create(lambda self, x, n: x, name="vmap2", **kw)


def test_config_is_frozen():
    config = _config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.in_axes = 1  # type: ignore[misc]


def test_create_normalises_state_axes_and_checks_options():
    config = _config(state_in_axes=sm.ParamState, static_argnums=2, donate_argnums=1)
    assert config.state_in_axes == {0: OfType(sm.ParamState)}
    assert config.args.static_argnums == (2,) and config.donate_argnums == (1,)
    assert config.name == "vmap2" and config.vectorised
    with pytest.raises(ValueError, match="unexpected_out_state_mapping='loud' is not a policy"):
        _config(unexpected_out_state_mapping="loud")
    with pytest.raises(ValueError, match="axis_size must be a positive int"):
        _config(axis_size=0)
    with pytest.raises(TypeError, match="in_axes has an unsupported entry"):
        _config(in_axes="x")


def test_bind_first_drops_the_bound_argument():
    config = _config(in_axes=(None, 0, None), static_argnums=2, donate_argnums=(0, 1))
    bound = config.bind_first()
    assert bound.in_axes == (0, None)
    assert bound.args.static_argnums == (1,) and bound.donate_argnums == (0,)
    assert config.in_axes == (None, 0, None)  # the original is unchanged


def test_vmap_fn_and_is_vmap():
    assert vmap_fn(None) is jax.vmap and is_vmap(jax.vmap)
    spmd = vmap_fn("d")
    assert isinstance(spmd, functools.partial) and is_vmap(spmd)
    assert not is_vmap(jax.pmap)


def test_front_ends_pass_a_complete_config():
    f = sm.transform.pmap2(lambda x: x, axis_name="d", donate_argnums=0)
    assert f.config.donate_argnums == (0,) and f.config.name == "pmap2"
    legacy = sm.transform.vmap(lambda x: x, in_states=[sm.State(0.0)])
    assert legacy.config.option_names == ("in_states", "out_states")
