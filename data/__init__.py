"""Datasets, schema and the moving-window pipeline (grow here with the data issue)."""
