"""rollouts: sample many responses per prompt from vLLM servers, durably and resumably."""

__version__ = "0.1.0"
