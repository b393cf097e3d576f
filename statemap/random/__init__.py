"""Random numbers as state: `RandomState`, the global `DEFAULT` generator and numpy-style samplers."""

from ._rng import DEFAULT as DEFAULT
from ._rng import RandomState as RandomState
from ._rng import default_rng as default_rng
from ._rng import get_key as get_key
from ._rng import seed as seed
from ._rng import set_key as set_key
from ._rng import split_key as split_key
from ._rng import split_keys as split_keys
# --- samplers: add re-exports below this line ---

__all__ = [
    "DEFAULT",
    "RandomState",
    "default_rng",
    "get_key",
    "seed",
    "set_key",
    "split_key",
    "split_keys",
    # --- sampler names ---
]
