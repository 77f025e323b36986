"""Quantization (torchao PT2E, QAT and PTQ) and ONNX / ONNX Runtime deployment of the package's networks.

``quant=qat`` adds ``QATCallback`` to a training run, ``quant=ptq`` adds ``PTQCallback``;
``quant.export`` exports any checkpoint (``tools/export.py``); ``OrtModel`` runs an exported file like the network.
Every step reads the network's model contract (``models/contract.py``), never its type.
"""

from .deploy import DeployModule, export_deploy
from .onnx_export import OPSET, OnnxFileError, check_onnx_file, export_onnx
from .ort_runner import OrtModel, ort_session
from .pt2e import DeployForward, QuantNet, calibrate, capture, convert, prepare
from .quantizer import OrtQuantizer, ort_quantization_config

__all__ = [
    "OPSET", "DeployForward", "DeployModule", "OnnxFileError", "OrtModel", "OrtQuantizer", "QuantNet", "calibrate",
    "capture", "check_onnx_file", "convert", "export_deploy", "export_onnx", "ort_quantization_config", "ort_session",
    "prepare",
]
