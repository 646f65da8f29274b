"""Training: devices, datasets as tensors on the device, the models, the training loop and fused
groups of models. Knows torch, torchvision and energy's `Meter`; nothing of MLflow or Optuna."""
