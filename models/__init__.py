"""Offline training: data loading, fine-tuning and the tiny test model."""
