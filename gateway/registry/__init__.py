"""Registries (member assignments, providers, encounter history) in the store."""
