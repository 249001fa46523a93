"""Helpers for testing the project's code paths on this machine (a local Slurm cluster)."""
