"""Offline scoring of rollouts: reward functions, a code sandbox, pass@k metrics, difficulty filters."""
