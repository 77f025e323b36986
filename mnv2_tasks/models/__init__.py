"""Networks: the MobileNetV2 classifier and backbone, and the task heads built on it."""

from .deeplabv3 import DeepLabV3, build_deeplabv3
from .features import FeatureInfo
from .mobilenetv2 import TAPS, MobileNetV2, MobileNetV2Backbone, make_divisible
from .pretrained import CheckpointError, LoadReport, load_pretrained
from .ssdlite import SSDLite, build_ssdlite, build_torchvision_ssdlite

__all__ = [
    "DeepLabV3",
    "build_deeplabv3",
    "FeatureInfo",
    "TAPS",
    "MobileNetV2",
    "MobileNetV2Backbone",
    "make_divisible",
    "CheckpointError",
    "LoadReport",
    "load_pretrained",
    "SSDLite",
    "build_ssdlite",
    "build_torchvision_ssdlite",
]
