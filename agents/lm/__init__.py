"""parley.agents.lm: a small dialogue model trained on the corpus, playing the text negotiation game.

* :mod:`parley.agents.lm.model` -- the GRU utterance model, its vocabulary, saving and loading;
* :mod:`parley.agents.lm.train` -- ``parley train-lm``: training on the corpus on CPU;
* :mod:`parley.agents.lm.player` -- :class:`LanguageModelPlayer`, the model as a text player;
* :mod:`parley.agents.lm.server` -- ``parley lm serve``: any text player behind an OpenAI-compatible
  chat-completions endpoint.

Names load lazily, so importing the package does not import torch or FastAPI.
"""

from __future__ import annotations

from parley.utils import lazy_exports

_EXPORTS = {
    "DialogueLM": "parley.agents.lm.model",
    "load_language_model": "parley.agents.lm.model",
    "is_language_model_dir": "parley.agents.lm.model",
    "train_language_model": "parley.agents.lm.train",
    "TrainLMConfig": "parley.agents.lm.train",
    "LanguageModelPlayer": "parley.agents.lm.player",
    "create_app": "parley.agents.lm.server",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("parley.agents.lm", _EXPORTS)
