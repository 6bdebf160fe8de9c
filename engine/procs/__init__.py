"""Processes: the detached worker, the torchrun launcher and one rank of a distributed run."""
