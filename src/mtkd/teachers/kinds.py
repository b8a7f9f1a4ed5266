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
    allow_code: bool = Field(False, description="load this file even though loading it runs code from it "
                                                "(pickle, TorchScript, Hugging Face .bin): only for files you trust")
    allow_pickle: bool = Field(False, description="the older name of allow_code")

    @property
    def code_allowed(self) -> bool:
        return self.allow_code or self.allow_pickle

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


class TorchScriptOptions(ExternalOptions):
    kind: Literal["torchscript"] = "torchscript"


class StateDictOptions(ExternalOptions):
    kind: Literal["state_dict"] = "state_dict"


class HfOptions(ExternalOptions):
    kind: Literal["hf"] = "hf"
    trust_remote_code: bool = Field(False, description="run the model code saved in the directory "
                                                       "(transformers' trust_remote_code); off unless set here")


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

    return SklearnTeacher(load_estimator(opts.path, opts.code_allowed, name), data.class_names, opts.classes, name)


def _torchscript(opts: TorchScriptOptions, name, data, model_cfg=None):
    from .torchscript_model import TorchScriptTeacher

    return TorchScriptTeacher(opts.path, data.class_names, data.input_shape, opts.classes, name, opts.code_allowed)


def _state_dict(opts: StateDictOptions, name, data, model_cfg=None):
    from .state_dict_model import StateDictTeacher

    return StateDictTeacher(opts.path, model_cfg, data.class_names, data.input_shape, opts.classes, name)


def _hf(opts: HfOptions, name, data, model_cfg=None):
    from .hf_model import HfTeacher

    return HfTeacher(opts.path, data.class_names, opts.classes, name, allow_code=opts.code_allowed,
                     trust_remote_code=opts.trust_remote_code)


TEACHER_KINDS: dict[str, TeacherKind] = {
    "onnx": TeacherKind(OnnxOptions, _onnx, "an ONNX file run with onnxruntime (extra: onnx)"),
    "sklearn": TeacherKind(SklearnOptions, _sklearn,
                           "a pickled estimator with predict_proba; needs allow_code: true (extra: sklearn)"),
    "torchscript": TeacherKind(TorchScriptOptions, _torchscript, "a TorchScript file (torch.jit.save); a program, so it needs allow_code: true"),
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


def allow_code(cfg) -> None:
    """``--allow-code`` (``--allow-pickle``): let every teacher of ``cfg`` load a file whose loading runs code."""
    for spec in cfg.teachers:
        if spec.external is not None:
            spec.external.allow_code = True


allow_pickles = allow_code  # the older name
