"""Flower-free building blocks of fedcurate: data, config, models, scorers, selection, pipeline."""
