"""SLURM job scripts and their rendering (array jobs that shard a run across nodes): not built yet."""
