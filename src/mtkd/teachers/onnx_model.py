"""A teacher from an ONNX file, run with onnxruntime on the CPU: a model from any framework
that exports ONNX (PyTorch, TensorFlow/Keras via tf2onnx, scikit-learn via skl2onnx, ...).

Inputs are the data set's tensors, reshaped to the model's input shape when its non-batch
dimensions are fixed and hold the same number of values (an image model fed flat features
or the reverse). ``outputs: logits`` (default) takes the chosen output as logits;
``outputs: probabilities`` takes it as probabilities and returns log-probabilities.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import MtkdError, first_line
from .external import ExternalTeacher, log_probabilities, require, teacher_class_names

_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
           "tensor(int64)": np.int64, "tensor(int32)": np.int32}


class OnnxTeacher(ExternalTeacher):
    kind = "onnx"

    def __init__(self, path: str | Path, data_classes, classes=None, name: str = "onnx",
                 input_name: str | None = None, output_name: str | None = None, outputs: str = "logits"):
        ort = require("onnxruntime", "onnx", f"ONNX teacher '{name}'")
        if not Path(path).is_file():
            raise MtkdError(f"teacher '{name}': ONNX file not found: {path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # share the CPU as torch is told to
        options.inter_op_num_threads = 1
        try:
            self_session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise MtkdError(f"teacher '{name}': {path} is not a loadable ONNX model ({type(exc).__name__}: "
                            f"{first_line(exc, 200)})") from None
        inputs, outs = self_session.get_inputs(), self_session.get_outputs()
        self_input = _pick(inputs, input_name, "input", name)
        self_output = _pick(outs, output_name, "output", name)
        width = self_output.shape[-1] if self_output.shape and isinstance(self_output.shape[-1], int) else None
        super().__init__(teacher_class_names(classes, None, width, data_classes, name), data_classes, name)
        self.session, self.input, self.output, self.outputs = self_session, self_input, self_output, outputs
        self.dtype = _DTYPES.get(self_input.type, np.float32)
        fixed = self_input.shape[1:]
        self.input_shape = tuple(fixed) if all(isinstance(d, int) for d in fixed) else None

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().numpy().astype(self.dtype, copy=False)
        if self.input_shape is not None and tuple(arr.shape[1:]) != self.input_shape \
                and math.prod(arr.shape[1:]) == math.prod(self.input_shape):
            arr = arr.reshape(len(arr), *self.input_shape)
        (out,) = self.session.run([self.output.name], {self.input.name: arr})
        out = torch.as_tensor(np.asarray(out, dtype=np.float64))
        return log_probabilities(out) if self.outputs == "probabilities" else out.float()


def _pick(items, wanted: str | None, what: str, name: str):
    if wanted is None:
        return items[0]
    for item in items:
        if item.name == wanted:
            return item
    raise MtkdError(f"teacher '{name}': the ONNX model has no {what} named {wanted!r}; "
                    f"it has {[i.name for i in items]}")
