"""Quantization (torchao PT2E, QAT and PTQ) and ONNX / ONNX Runtime deployment of the package's networks.

``quant=qat`` adds ``QATCallback`` to a training run, ``quant=ptq`` adds ``PTQCallback``;
``tools/export.py`` exports any checkpoint; ``OrtModel`` runs an exported file like the network.
"""

from .checkpoints import quant_info, quant_info_of, require_float_checkpoint
from .onnx_export import OPSET, OnnxFileError, check_onnx_file, export_onnx
from .ort_runner import OrtModel, ort_session
from .pt2e import QuantNet, calibrate, capture, convert, deploy_view, prepare
from .quantizer import OrtQuantizer, ort_quantization_config

__all__ = [
    "OPSET", "OnnxFileError", "OrtModel", "OrtQuantizer", "QuantNet", "calibrate", "capture", "check_onnx_file",
    "convert", "deploy_view", "export_onnx", "ort_quantization_config", "ort_session", "prepare", "quant_info",
    "quant_info_of", "require_float_checkpoint",
]
