"""parley.agents: policy backbones, scripted partners, and RLlib / Stable-Baselines3 training.

``load_policy(path)`` and ``TorchPolicy`` are imported lazily so that using the scripted partners
does not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_policy", "TorchPolicy", "register_policy_loader"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from parley.agents import torch_policy

        return getattr(torch_policy, name)
    raise AttributeError(f"module 'parley.agents' has no attribute {name!r}")
