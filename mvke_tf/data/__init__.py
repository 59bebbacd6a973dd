"""Data: the synthetic user-tagging generator and tf.data input pipelines."""
