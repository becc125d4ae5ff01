"""Perceptual fingerprints: compute, compare (one threshold table), the near-duplicate index."""
