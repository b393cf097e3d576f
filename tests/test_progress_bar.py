"""Tests of the tqdm progress bar of scan / for_loop."""

import sys

import jax
import jax.numpy as jnp
import pytest

import statemap as sm

T = sm.transform


def test_scan_progress_bar_reaches_the_end(capsys):
    s = sm.State(jnp.zeros(()), name="s")

    def f(c, x):
        s.value = s.value + x
        return c, None

    T.scan(f, None, jnp.arange(5.0), progress_bar=True)
    jax.effects_barrier()
    err = capsys.readouterr().err
    assert "scan" in err and "5/5" in err
    assert float(s.value) == 10.0


def test_for_loop_progress_bar_with_print_frequency_under_jit(capsys):
    run = T.jit(lambda xs: T.for_loop(lambda x: x * 2, xs, progress_bar=3))
    run(jnp.arange(7.0))
    jax.effects_barrier()
    err = capsys.readouterr().err
    assert "for_loop" in err and "3/7" in err and "6/7" in err and "7/7" in err
    run(jnp.arange(7.0))  # the compiled loop runs again: a fresh bar
    jax.effects_barrier()
    assert "7/7" in capsys.readouterr().err


def test_bad_progress_bar_spec():
    with pytest.raises(sm.ArgumentError, match="progress_bar is neither a bool nor a positive int"):
        T.scan(lambda c, x: (c, x), None, jnp.zeros(2), progress_bar=0)
    with pytest.raises(ValueError, match="progress_bar"):
        T.scan(lambda c, x: (c, x), None, jnp.zeros(2), progress_bar="yes")


def test_missing_tqdm_gives_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    with pytest.raises(ImportError, match="scan: progress_bar needs the tqdm package"):
        T.scan(lambda c, x: (c, x), None, jnp.zeros(2), progress_bar=True)
    assert T.scan(lambda c, x: (c, x), None, jnp.zeros(2))[1].shape == (2,)  # no bar: no tqdm needed
