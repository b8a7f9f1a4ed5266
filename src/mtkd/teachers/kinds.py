"""Teacher kinds a config can name with ``kind:`` (a teacher without ``kind`` is a built-in
model, trained or read from an mtkd ``checkpoint``). Each kind has an options schema
(extra keys forbidden) and a loader that returns an :class:`ExternalTeacher`."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from .external import ExternalTeacher


class ExternalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    kind: str
    path: Path = Field(description="the model file (or directory, for hf)")
    classes: list[str] | None = Field(None, description="the teacher's class names in its output order "
                                                        "(default: the model's own, else the data set's)")
    preprocess: bool = Field(False, description="feed it the inputs after data.normalize (default: the raw "
                                                "selected columns, as it was trained)")

    @property
    def arch(self) -> str:  # what reports show in the 'arch' column
        return self.kind


class OnnxOptions(ExternalOptions):
    kind: Literal["onnx"] = "onnx"
    input: str | None = Field(None, description="input name (default: the first)")
    output: str | None = Field(None, description="output name (default: the first)")
    outputs: Literal["logits", "probabilities"] = "logits"


class SklearnOptions(ExternalOptions):
    kind: Literal["sklearn"] = "sklearn"
    allow_pickle: bool = Field(False, description="load the pickled estimator (runs code from the file)")


class TorchScriptOptions(ExternalOptions):
    kind: Literal["torchscript"] = "torchscript"


class StateDictOptions(ExternalOptions):
    kind: Literal["state_dict"] = "state_dict"


class HfOptions(ExternalOptions):
    kind: Literal["hf"] = "hf"


class TeacherKind(NamedTuple):
    Options: type[ExternalOptions]
    load: Callable[..., ExternalTeacher]
    description: str
    needs_arch: bool = False  # the config also names a built-in arch and its size keys


def _onnx(opts: OnnxOptions, name, data, model_cfg=None):
    from .onnx_model import OnnxTeacher

    return OnnxTeacher(opts.path, data.class_names, opts.classes, name, opts.input, opts.output, opts.outputs)


def _sklearn(opts: SklearnOptions, name, data, model_cfg=None):
    from .sklearn_model import SklearnTeacher, load_estimator

    return SklearnTeacher(load_estimator(opts.path, opts.allow_pickle, name), data.class_names, opts.classes, name)


def _torchscript(opts: TorchScriptOptions, name, data, model_cfg=None):
    from .torchscript_model import TorchScriptTeacher

    return TorchScriptTeacher(opts.path, data.class_names, data.input_shape, opts.classes, name)


def _state_dict(opts: StateDictOptions, name, data, model_cfg=None):
    from .state_dict_model import StateDictTeacher

    return StateDictTeacher(opts.path, model_cfg, data.class_names, data.input_shape, opts.classes, name)


def _hf(opts: HfOptions, name, data, model_cfg=None):
    from .hf_model import HfTeacher

    return HfTeacher(opts.path, data.class_names, opts.classes, name)


TEACHER_KINDS: dict[str, TeacherKind] = {
    "onnx": TeacherKind(OnnxOptions, _onnx, "an ONNX file run with onnxruntime (extra: onnx)"),
    "sklearn": TeacherKind(SklearnOptions, _sklearn,
                           "a pickled estimator with predict_proba; needs allow_pickle: true (extra: sklearn)"),
    "torchscript": TeacherKind(TorchScriptOptions, _torchscript, "a TorchScript file (torch.jit.save)"),
    "state_dict": TeacherKind(StateDictOptions, _state_dict,
                              "a plain state dict for a built-in arch named with its size keys", needs_arch=True),
    "hf": TeacherKind(HfOptions, _hf, "a local Hugging Face sequence-classification model directory (extra: hf)"),
}


def load_external(spec, data) -> ExternalTeacher:
    """Build the teacher a config's ``kind:`` entry describes, mapped to ``data``'s classes."""
    teacher = TEACHER_KINDS[spec.external.kind].load(spec.external, spec.name, data, spec.model)
    teacher.set_source(spec.external.path)  # the teacher-output cache keys on the bytes loaded
    prep = getattr(data, "preprocess", None)
    if prep and prep.get("shift") is not None and not spec.external.preprocess:
        from ..data.preprocess import Preprocessing, RawInputs

        # the data set's inputs are normalised; this teacher was trained on the raw columns
        teacher.input_map = RawInputs(Preprocessing.from_dict(prep))
    return teacher


def allow_pickles(cfg) -> None:
    """``--allow-pickle``: let every teacher that reads a pickle in ``cfg`` load it."""
    for spec in cfg.teachers:
        if spec.external is not None and "allow_pickle" in type(spec.external).model_fields:
            spec.external.allow_pickle = True
