"""Tests of statemap.transform.in_new_state_probe: always False (ensemble creation is traced once)."""

import jax.numpy as jnp

import statemap as sm


def test_always_false_outside_and_inside_ensemble_creation():
    seen = []

    class Cell(sm.nn.Module):
        def init_state(self):
            seen.append(sm.transform.in_new_state_probe())
            self.h = sm.HiddenState(jnp.zeros(2))

    assert sm.transform.in_new_state_probe() is False
    cell = Cell()
    sm.transform.vmap2_new_states(cell, axis_size=4)
    assert seen == [False]  # one trace, no probe pass
    assert cell.h.value.shape == (4, 2)
    sm.transform.jit(lambda: seen.append(sm.transform.in_new_state_probe()))()
    assert seen == [False, False]
