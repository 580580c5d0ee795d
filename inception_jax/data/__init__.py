"""Input data: TFDS datasets and the pipeline over them. Nothing here imports the models."""
