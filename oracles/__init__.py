"""parley.oracles: expert oracles and targeted data acquisition."""
