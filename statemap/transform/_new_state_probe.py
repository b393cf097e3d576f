"""`in_new_state_probe`: whether code runs inside a probe pass of ensemble creation (never, in statemap)."""

from __future__ import annotations

__all__ = ["in_new_state_probe"]


def in_new_state_probe() -> bool:
    """Whether the calling code runs inside a probe pass of `vmap2_new_states`: always False in statemap.

    Libraries written for brainstate ask this to skip one-shot side effects (logging, registering a state)
    during the extra pass that discovers which states an ensemble creates. statemap traces ensemble creation
    once (`vmap2_new_states`, `pmap2_new_states`, `vmap_new_states` catch the new states in the same trace
    that builds them): there is no probe pass, so such code always takes its normal path.

    Returns:
      False.

    Examples:
      >>> sm.transform.in_new_state_probe()
      False
      >>> seen = []
      >>> class Cell(sm.nn.Module):
      ...     def init_state(self):
      ...         seen.append(sm.transform.in_new_state_probe())
      ...         self.h = sm.HiddenState(jnp.zeros(2))
      >>> cell = Cell()
      >>> _ = sm.transform.vmap2_new_states(cell, axis_size=3)
      >>> seen, cell.h.value.shape
      ([False], (3, 2))
    """
    return False
