"""The built-in prior's weights (builtin.safetensors + .sha256) and its model card, shipped as package data."""
