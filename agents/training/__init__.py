"""Training negotiating agents: ``parley train`` and its backends.

* :mod:`.run` -- :class:`TrainConfig` (every setting in one dataclass), the run folder, ``train()``.
* :mod:`.ppo` -- parley's PPO on the batched rules; :mod:`.native` -- the single-process trainer on it.
* :mod:`.rllib`, :mod:`.rllib_envs`, :mod:`.rllib_module`, :mod:`.rllib_setups` -- RLlib (new API stack).
* :mod:`.sb3` -- Stable-Baselines3 (MaskablePPO).
* :mod:`.supervised` -- behaviour cloning on corpus datasets.
* :mod:`.cli` -- the ``parley train`` / ``parley eval`` commands.

A new learner backend goes here, dispatched from :func:`parley.agents.training.run.train`. Only the
RLlib and SB3 modules import Ray / Stable-Baselines3.
"""

from __future__ import annotations

from parley.utils import lazy_exports

_EXPORTS = {name: "parley.agents.training.run" for name in (
    "TrainConfig", "TrainConfigError", "TrainResult", "train", "resolve_train_config", "read_progress",
    "latest_checkpoint", "FRAMEWORKS", "DEFAULT_PARTNERS",
)}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("parley.agents.training", _EXPORTS)
