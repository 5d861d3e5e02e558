"""Ray connection (a local Ray for one command, or a cluster by address) and studies
submitted to a cluster as Ray jobs."""

from cluster._client import TOKEN_OVER_HTTP_ENV, jobs_address
from cluster._jobs import (
    JobSummary,
    job_logs,
    job_status,
    list_jobs,
    stop_job,
    submit_study,
)
from cluster._session import ClusterError, ray_session

__all__ = [
    "TOKEN_OVER_HTTP_ENV",
    "ClusterError",
    "JobSummary",
    "job_logs",
    "job_status",
    "jobs_address",
    "list_jobs",
    "ray_session",
    "stop_job",
    "submit_study",
]
