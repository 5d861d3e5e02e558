"""Ray connection: local clusters for one command, or an existing cluster by address."""

from cluster._session import ClusterError, ray_session

__all__ = ["ClusterError", "ray_session"]
