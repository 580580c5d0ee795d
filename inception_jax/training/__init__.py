"""Training: train state and steps, devices, optimizers, checkpoints, reporting, the trainer."""
