"""Synthetic mixed-quality data with ground truth, partitioners for sites, experiment runners."""
