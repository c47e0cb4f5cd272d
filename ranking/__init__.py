"""Models, trainer and evaluation (grow here with the models and training issues)."""
