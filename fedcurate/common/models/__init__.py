"""Model loading, prompt templates, loss masking, and the tiny offline test model."""
