"""parley.envs: game rules (pure numpy) and their PettingZoo / Gymnasium adapters."""
