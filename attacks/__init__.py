"""parley.attacks: poisoning attacks, defenses and the attack benchmark."""
