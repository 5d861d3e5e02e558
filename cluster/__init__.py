"""Ray connection: local clusters for one command, or an existing cluster by address."""

from cluster._jobs import (
    JobSummary,
    job_logs,
    job_status,
    jobs_address,
    list_jobs,
    stop_job,
    submit_study,
)
from cluster._session import ClusterError, ray_session

__all__ = [
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
