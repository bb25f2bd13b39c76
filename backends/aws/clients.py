"""boto3 clients for the AWS backends, and the one place botocore's errors become ours.

Credentials come from boto3's standard chain (environment, shared files, instance
role), or from the named ``aws.profile``. The endpoint is ``aws.endpoint_url``, else
the ``SCRIPTHUT_AWS_ENDPOINT_URL`` setting, else botocore's own choice (which reads
``AWS_ENDPOINT_URL``), so an emulator or LocalStack can stand in for AWS.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
from django.conf import settings

from backends.aws.settings import AwsSettings
from backends.base import BackendError, BackendUnavailable

# Errors that mean "we could not act as anyone here, try again later", not "the request was wrong".
CREDENTIAL_CODES = {
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "AuthFailure",
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
}
THROTTLE_CODES = {"Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded"}

CLIENT_CONFIG = botocore.config.Config(
    retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30
)


def session(aws: AwsSettings) -> boto3.Session:
    """A boto3 session for the block; an unknown profile is BackendUnavailable."""
    with aws_errors("AWS"):
        return boto3.Session(profile_name=aws.profile, region_name=aws.region)


def endpoint_url(aws: AwsSettings) -> str | None:
    return aws.endpoint_url or getattr(settings, "SCRIPTHUT_AWS_ENDPOINT_URL", None) or None


# For calls that must not be sent twice (a submit has no idempotency token): a retry
# after a lost answer could start a second job.
NO_RETRY_CONFIG = CLIENT_CONFIG.merge(botocore.config.Config(retries={"total_max_attempts": 1}))


def client(
    aws: AwsSettings,
    service: str,
    boto_session: boto3.Session | None = None,
    config: botocore.config.Config | None = None,
) -> Any:
    """A client of ``service`` (``"batch"``, ``"ec2"``, ``"logs"``, ``"ssm"``...);
    ``config`` replaces the default retries and timeouts (e.g. NO_RETRY_CONFIG)."""
    boto_session = boto_session or session(aws)
    with aws_errors(service):
        return boto_session.client(service, endpoint_url=endpoint_url(aws), config=config or CLIENT_CONFIG)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def error_message(exc: botocore.exceptions.ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', 'Error')}: {error.get('Message', '')}".rstrip(": ")


@contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """Translate botocore's exceptions: configuration, credentials, network and throttling
    become BackendUnavailable (nothing was done; runs wait and resume); any other error
    the service returned becomes BackendError with AWS's code and message."""
    try:
        yield
    except botocore.exceptions.NoRegionError as exc:
        raise BackendUnavailable(f"{what}: no AWS region: set aws.region ({exc})") from exc
    except botocore.exceptions.ProfileNotFound as exc:
        raise BackendUnavailable(f"{what}: {exc} (aws.profile)") from exc
    except botocore.exceptions.NoCredentialsError as exc:
        raise BackendUnavailable(
            f"{what}: no AWS credentials found (environment, shared credentials file, "
            f"aws.profile or instance role): {exc}"
        ) from exc
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError) as exc:
        raise BackendUnavailable(f"{what}: cannot reach AWS: {exc}") from exc
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        if code in CREDENTIAL_CODES:
            raise BackendUnavailable(f"{what}: AWS refused the credentials: {error_message(exc)}") from exc
        if code in THROTTLE_CODES:
            raise BackendUnavailable(f"{what}: AWS is throttling requests: {error_message(exc)}") from exc
        raise BackendError(f"{what}: {error_message(exc)}") from exc
    except botocore.exceptions.ParamValidationError as exc:
        # The request itself is wrong (checked before sending): trying again will not help.
        raise BackendError(f"{what}: {exc}") from exc
    except botocore.exceptions.BotoCoreError as exc:
        # SSO token missing, invalid region name, read timeouts...: not a wrong request.
        raise BackendUnavailable(f"{what}: {exc}") from exc
