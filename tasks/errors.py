"""The one error tree of yoloq.

Every error a user or operator can see derives from :class:`YoloqError` and carries a one-line message that says
what was wrong and what to do; adapters in ``infra/`` translate foreign exceptions (redis, botocore, pynvml) into
this tree so callers never catch a library's exception type::

    YoloqError
    ├── SpecRejected            invalid job spec: unknown tier, bad field, missing data path, no GPU class fits
    │   ├── InvalidName         a team name (quota, demotion, approval) outside the slug rule; nothing stored
    │   ├── UploadRejected      a detect upload that is not an acceptable image (carries its HTTP status)
    │   └── WebhookRejected     a webhook subscription that cannot be stored (URL, events, scope); nothing stored
    ├── ConfigError             invalid settings (unknown YOLOQ_* key, bad value, bad YOLOQ_GPUS)
    ├── BrokerUnavailable       Redis (broker + registry) cannot be reached
    ├── StorageError            the S3 store failed or refused a request
    │   └── CheckpointError     a checkpoint is missing, corrupt or fails verification
    ├── JobFailed               the job's own work failed (its reason is the job process's one-line error)
    ├── DatasetError            a dataset is missing, malformed or unreadable (the job fails with the reason)
    ├── JobNotFound             no job with that id in the registry
    ├── WebhookNotFound         no webhook subscription with that id
    ├── ModelNotFound           no such model, version, alias or deployment in the model registry
    ├── RateLimited             a tenant's detect requests are over its rate (carries Retry-After seconds)
    ├── ServingUnavailable      no replica answered a detect request in time
    ├── InvalidTransition       the job's state does not allow the action (e.g. cancel a finished job)
    │   └── LeaseHeld           another live attempt holds the job's lease (a duplicate delivery)
    ├── NotAllowed              the caller's API key lacks the scope or team for the action, or approves its own job
    ├── KeyRejected             an API key request (create, revoke) is invalid; nothing stored
    │   ├── KeyExists           a key of that name exists already
    │   └── KeyNotFound         no key of that name
    ├── GpuUnavailable          no such device, or the device already has a live worker
    ├── ServiceError            a local service (embedded Redis, SeaweedFS) failed to start
    └── AttemptInterrupted      control flow inside a running attempt, never shown as a failure
        ├── Preempted           the attempt checkpointed and yielded its GPU; the job is requeued
        └── Cancelled           the attempt stopped because the job was cancelled
"""

from __future__ import annotations


def clipped(text: str, limit: int = 200) -> str:
    """Part of a message that may quote what a caller sent: at most ``limit`` characters (then how long it was), with
    control and format characters escaped, so a refusal stays one short line however large or odd the input (an
    oversized ``kind`` was quoted whole, megabytes; a key holding a newline split the line)."""
    head = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return head if len(text) <= limit else f"{head}… ({len(text)} characters)"


class YoloqError(Exception):
    """Base of every yoloq error; ``str(err)`` is the one-line reason shown to users."""


class SpecRejected(YoloqError):
    """A job spec failed validation; nothing was registered or queued."""


class InvalidName(SpecRejected):
    """A team name an operator typed breaks the rule every spec obeys; nothing was stored."""


class ConfigError(YoloqError):
    """Settings are invalid; the process refuses to start rather than guess."""


class BrokerUnavailable(YoloqError):
    """Redis could not be reached; the operation had no effect."""


class StorageError(YoloqError):
    """The S3 object store failed or refused the request."""


class CheckpointError(StorageError):
    """A checkpoint is missing, truncated or fails its checksum."""


class JobFailed(YoloqError):
    """The job process reported a failure (or died without reporting); the job is failed with this reason."""


class DatasetError(YoloqError):
    """A dataset or input folder is missing, malformed or unreadable; the job fails with this reason."""


class JobNotFound(YoloqError):
    """The registry holds no job with this id."""


class UploadRejected(SpecRejected):
    """A detect upload is refused before any decode; ``status`` is the HTTP answer (400, 413, 415 or 422)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


class ModelNotFound(YoloqError):
    """The model registry holds no such model, version, alias or deployment."""


class RateLimited(YoloqError):
    """A tenant is over its detect rate; retry after ``retry_after_s`` seconds."""

    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class ServingUnavailable(YoloqError):
    """No replica of the deployment answered within the request's deadline (none running, or all busy)."""


class InvalidTransition(YoloqError):
    """The job's current state forbids the requested change."""


class LeaseHeld(InvalidTransition):
    """Another live attempt runs this job; the delivery is a duplicate and must not run."""


class NotAllowed(YoloqError):
    """Who asked may not do this (scope, team, four-eyes); nothing changed."""


class WebhookRejected(SpecRejected):
    """A webhook subscription cannot be stored as asked (URL, event filter, team or job); nothing stored."""


class WebhookNotFound(YoloqError):
    """No webhook subscription with that id (``yoloq webhook list`` shows them)."""


class KeyRejected(YoloqError):
    """An API key cannot be created or revoked as asked (bad name or scope, name taken, no such key)."""


class KeyExists(KeyRejected):
    """A key of that name exists: a create does not replace it (revoke it first)."""


class KeyNotFound(KeyRejected):
    """No API key of that name (``yoloq key list`` shows them)."""


class GpuUnavailable(YoloqError):
    """The requested device does not exist or already has a live worker."""


class ServiceError(YoloqError):
    """A local service (embedded Redis, SeaweedFS) could not be started."""


class AttemptInterrupted(YoloqError):
    """Control flow: the running attempt stopped on purpose (not a failure)."""


class Preempted(AttemptInterrupted):
    """The attempt saved its progress and yielded the GPU; the job goes back to its queue."""


class Cancelled(AttemptInterrupted):
    """The attempt stopped because its job was cancelled."""
