"""parley: negotiation and data-poisoning scenarios as multi-agent environments.

Importing parley registers its Gymnasium ids (``gymnasium.make("parley/Negotiation-v0")``) and,
where the installed PettingZoo has a registry, its PettingZoo ids.
"""

from parley._version import __version__
from parley.registration import register_envs

register_envs()

__all__ = ["__version__", "register_envs"]
