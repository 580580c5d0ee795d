"""`inception-jax bench`: our train and eval steps against PyTorch's GoogLeNet, and the input
pipeline."""
