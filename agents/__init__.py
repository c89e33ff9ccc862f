"""parley.agents: policy backbones, scripted partners, and RLlib / Stable-Baselines3 training."""
