"""tfp-vae: benchmark suite for the variance of VAE decoders (TensorFlow Probability)."""

__version__ = "0.1.0"
SCHEMA_VERSION = 4
