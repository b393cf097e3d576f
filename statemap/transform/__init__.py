"""Stateful transforms: jit, grad, control flow and state-aware mapping."""

from ._jit import JittedFunction as JittedFunction
from ._jit import jit as jit
from ._make_jaxpr import StatefulFunction as StatefulFunction
from ._make_jaxpr import make_jaxpr as make_jaxpr
# --- autodiff (issue 3): add re-exports below this line ---
# --- control flow (issue 3): add re-exports below this line ---
# --- mapping (issue 4): add re-exports below this line ---

__all__ = [
    "JittedFunction",
    "StatefulFunction",
    "jit",
    "make_jaxpr",
    # --- autodiff names ---
    # --- control flow names ---
    # --- mapping names ---
]
