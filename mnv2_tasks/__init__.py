"""mnv2_tasks: MobileNetV2 as a backbone for classification, SSDLite detection and DeepLabV3-lite segmentation."""

from .version import __version__


def load_model(ckpt_path, map_location="cpu"):
    """The plain inference ``nn.Module`` from a training checkpoint (see ``mnv2_tasks.checkpoint.load_model``)."""
    from .checkpoint import load_model as _load_model

    return _load_model(ckpt_path, map_location)


def __getattr__(name: str):
    if name == "Predictor":  # imported on first use: ``from mnv2_tasks import Predictor``
        from .predict import Predictor

        return Predictor
    raise AttributeError(f"module 'mnv2_tasks' has no attribute {name!r}")


__all__ = ["load_model", "Predictor", "__version__"]
