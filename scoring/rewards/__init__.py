"""Reward functions: math, gsm8k, qa, mcq, code and custom files, and dispatch on data_source."""

from scoring.rewards.base import RewardFn, RewardOptions
from scoring.rewards.extract import Extraction
from scoring.rewards.registry import AUTO, BUILTINS, dispatch, dispatch_all, get_reward_fn

__all__ = [
    "AUTO",
    "BUILTINS",
    "Extraction",
    "RewardFn",
    "RewardOptions",
    "dispatch",
    "dispatch_all",
    "get_reward_fn",
]
