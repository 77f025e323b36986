"""Networks: the MobileNetV2 classifier and backbone, and the task heads built on it.

Every task network follows the model contract in ``contract.py`` (``TaskNet``).
"""

from .contract import TaskNet
from .deeplabv3 import DeepLabV3, build_deeplabv3
from .features import FeatureInfo
from .mobilenetv2 import TAPS, MobileNetV2, MobileNetV2Backbone, make_divisible
from .multitask import MultiTaskNet, build_multitask
from .pretrained import CheckpointError, LoadReport, load_pretrained
from .ssdlite import SSDLite, build_ssdlite
from .torchvision_ssdlite import (
    TorchvisionDetector, TorchvisionMobileNetV2Detector, build_torchvision_ssdlite, build_torchvision_ssdlite_mnv2,
)

__all__ = [
    "TaskNet",
    "DeepLabV3",
    "build_deeplabv3",
    "FeatureInfo",
    "TAPS",
    "MobileNetV2",
    "MobileNetV2Backbone",
    "make_divisible",
    "MultiTaskNet",
    "build_multitask",
    "CheckpointError",
    "LoadReport",
    "load_pretrained",
    "SSDLite",
    "build_ssdlite",
    "TorchvisionDetector",
    "build_torchvision_ssdlite",
    "build_torchvision_ssdlite_mnv2",
    "TorchvisionMobileNetV2Detector",
]
