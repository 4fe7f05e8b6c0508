"""Tollway: shared base layer (the error hierarchy) that every package may import."""
