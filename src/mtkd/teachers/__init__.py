from .frozen import FrozenTeacher, run_teachers
from .precomputed import PrecomputedTeacher
from .cached import CachedTeacher, TransferSet
# external kinds: their optional packages are imported only when one is built
from .external import ExternalTeacher
from .hf_model import HfTeacher
from .onnx_model import OnnxTeacher
from .sklearn_model import SklearnTeacher
from .state_dict_model import StateDictTeacher
from .torchscript_model import TorchScriptTeacher

__all__ = ["CachedTeacher", "ExternalTeacher", "FrozenTeacher", "HfTeacher", "OnnxTeacher", "PrecomputedTeacher",
           "SklearnTeacher", "StateDictTeacher", "TorchScriptTeacher", "TransferSet", "run_teachers"]
