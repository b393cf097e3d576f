"""Stateful transforms: jit, grad, control flow and state-aware mapping."""

from ._conditions import cond as cond
from ._conditions import ifelse as ifelse
from ._conditions import switch as switch
from ._eval_shape import eval_shape as eval_shape
from ._grad import GradientTransform as GradientTransform
from ._grad import fwd_grad as fwd_grad
from ._grad import grad as grad
from ._grad import hessian as hessian
from ._grad import jacfwd as jacfwd
from ._grad import jacrev as jacrev
from ._grad import vector_grad as vector_grad
from ._jit import JittedFunction as JittedFunction
from ._jit import jit as jit
from ._loops import bounded_while_loop as bounded_while_loop
from ._loops import checkpointed_scan as checkpointed_scan
from ._loops import for_loop as for_loop
from ._loops import scan as scan
from ._loops import while_loop as while_loop
from ._make_jaxpr import StatefulFunction as StatefulFunction
from ._make_jaxpr import make_jaxpr as make_jaxpr
from ._map import map as map
from ._mapping import MappingPlan as MappingPlan
from ._mapping import StatefulMapping as StatefulMapping
from ._new_state_probe import in_new_state_probe as in_new_state_probe
from ._new_states import pmap2_new_states as pmap2_new_states
from ._new_states import vmap2_new_states as vmap2_new_states
from ._new_states import vmap_new_states as vmap_new_states
from ._progress_bar import ProgressBar as ProgressBar
from ._remat import checkpoint as checkpoint
from ._remat import remat as remat
from ._vjp_jvp import jvp as jvp
from ._vjp_jvp import vjp as vjp
from ._shard_map import StatefulShardMap as StatefulShardMap
from ._shard_map import shard_map as shard_map
from ._vmap import pmap2 as pmap2
from ._vmap import vmap as vmap
from ._vmap import vmap2 as vmap2

__all__ = [
    # compilation and inspection
    "JittedFunction",
    "StatefulFunction",
    "checkpoint",
    "eval_shape",
    "jit",
    "make_jaxpr",
    "remat",
    # autodiff
    "GradientTransform",
    "fwd_grad",
    "grad",
    "hessian",
    "jacfwd",
    "jacrev",
    "jvp",
    "vector_grad",
    "vjp",
    # control flow
    "ProgressBar",
    "bounded_while_loop",
    "checkpointed_scan",
    "cond",
    "for_loop",
    "ifelse",
    "scan",
    "switch",
    "while_loop",
    # mapping
    "MappingPlan",
    "StatefulMapping",
    "in_new_state_probe",
    "map",
    "pmap2",
    "pmap2_new_states",
    "shard_map",
    "StatefulShardMap",
    "vmap",
    "vmap2",
    "vmap2_new_states",
    "vmap_new_states",
]
