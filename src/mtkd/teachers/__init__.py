from .frozen import FrozenTeacher, run_teachers
from .precomputed import PrecomputedTeacher
# external kinds: their optional packages are imported only when one is built
from .external import ExternalTeacher
from .hf_model import HfTeacher
from .onnx_model import OnnxTeacher
from .sklearn_model import SklearnTeacher
from .state_dict_model import StateDictTeacher
from .torchscript_model import TorchScriptTeacher

__all__ = ["ExternalTeacher", "FrozenTeacher", "HfTeacher", "OnnxTeacher", "PrecomputedTeacher", "SklearnTeacher",
           "StateDictTeacher", "TorchScriptTeacher", "run_teachers"]
