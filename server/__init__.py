"""vLLM server management: command building, readiness, supervision, info files, `rollouts serve`."""
