"""timm-style description of a backbone's feature taps, declared when the network is built."""

from __future__ import annotations

from typing import Iterator


class FeatureInfo:
    """A list of ``{"num_chs", "reduction", "module", "index"}`` dicts, one per tap, in output order.

    Mirrors ``timm.models._features.FeatureInfo``: ``channels()`` and ``reduction()`` return
    lists (or one value for ``idx``), so that heads can be sized without a dummy forward pass.
    """

    def __init__(self, info: list[dict]) -> None:
        reductions = [i["reduction"] for i in info]
        if any(b < a for a, b in zip(reductions, reductions[1:])):
            raise ValueError(f"feature reductions must never decrease, got {reductions}")
        self.info = [dict(i) for i in info]

    def get(self, key: str, idx: int | None = None):
        if idx is None:
            return [i[key] for i in self.info]
        return self.info[idx][key]

    def channels(self, idx: int | None = None):
        return self.get("num_chs", idx)

    def reduction(self, idx: int | None = None):
        return self.get("reduction", idx)

    def module_name(self, idx: int | None = None):
        return self.get("module", idx)

    def __len__(self) -> int:
        return len(self.info)

    def __getitem__(self, idx: int) -> dict:
        return self.info[idx]

    def __iter__(self) -> Iterator[dict]:
        return iter(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo(channels={self.channels()}, reduction={self.reduction()})"
