"""Networks: policy backbones, Compacter adapters, invertible attention, compression, and TorchPolicy.

A new backbone goes in :mod:`parley.agents.nn.backbones` (register it there with ``make_backbone``).
"""
