"""statemap: stateful JAX transforms.

Write models as objects holding `State`s; statemap's transforms (`jit`, `grad`, `scan`, `vmap2`, …) discover
by tracing which states a function reads and writes and thread them through JAX as pure inputs and outputs.
"""

from . import checkpoint as checkpoint
from . import environ as environ
from . import nn as nn
from . import random as random
from . import transform as transform
from . import typing as typing
from . import util as util
from ._errors import ArgumentError as ArgumentError
from ._errors import BatchAxisError as BatchAxisError
from ._errors import CheckpointError as CheckpointError
from ._errors import ConcreteValueError as ConcreteValueError
from ._errors import ControlFlowError as ControlFlowError
from ._errors import MappingRuntimeError as MappingRuntimeError
from ._errors import NaNError as NaNError
from ._errors import SettingError as SettingError
from ._errors import StateArgumentError as StateArgumentError
from ._errors import StatemapError as StatemapError
from ._errors import StateStructureError as StateStructureError
from ._errors import TraceContextError as TraceContextError
from ._state import BatchState as BatchState
from ._state import HiddenState as HiddenState
from ._state import LongTermState as LongTermState
from ._state import NonBatchState as NonBatchState
from ._state import ParamState as ParamState
from ._state import ShortTermState as ShortTermState
from ._state import State as State
from ._trace import StateTrace as StateTrace
from ._trace import StateTrace as StateTraceStack  # brainstate's name for the trace frame
from ._trace import catch_new_states as catch_new_states

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "BatchAxisError",
    "CheckpointError",
    "ConcreteValueError",
    "ControlFlowError",
    "BatchState",
    "HiddenState",
    "LongTermState",
    "MappingRuntimeError",
    "NaNError",
    "NonBatchState",
    "ParamState",
    "SettingError",
    "ShortTermState",
    "State",
    "StateArgumentError",
    "StateStructureError",
    "StateTrace",
    "StateTraceStack",
    "StatemapError",
    "TraceContextError",
    "catch_new_states",
    "checkpoint",
    "environ",
    "nn",
    "random",
    "transform",
    "typing",
    "util",
]
