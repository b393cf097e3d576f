"""Random numbers as state: `RandomState`, the global `DEFAULT` generator and numpy-style samplers.

The public names are those of `statemap.random._rng.__all__`: `RandomState`, `DEFAULT`, the key helpers
(`seed`, `set_key`, `split_key`, ...) and the samplers, which are the methods of `DEFAULT`.
"""

from ._rng import *  # noqa: F403
from ._rng import __all__ as __all__
