"""The MultiLangDaemon's properties file and command line for the replay KCL application.

Property names are those of KCL 3.x multilang (``MultiLangDaemonConfiguration``
setters plus the daemon's own ``executableName``/``processingLanguage``).
``applicationName`` is also the name of the lease table, so every replay
application keeps its own leases and checkpoints.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eventlog.settings import Settings

from .errors import ReplayError

MAIN_CLASS = "software.amazon.kinesis.multilang.MultiLangDaemon"


def default_executable(state_path: str | Path | None = None, side: str = "primary") -> str:
    cmd = f"{sys.executable} -m replay.kcl_processor"
    if state_path is not None:
        cmd += f" --state {Path(state_path).resolve()}"
    if side != "primary":
        cmd += f" --side {side}"
    return cmd


def properties(
    *,
    stream_name: str,
    application_name: str,
    region: str,
    kinesis_endpoint: str | None = None,
    dynamodb_endpoint: str | None = None,
    executable: str | None = None,
    state_path: str | Path | None = None,
    initial_position: str = "TRIM_HORIZON",
    idle_between_reads_ms: int = 250,
    extra: Mapping[str, object] | None = None,
) -> dict[str, str]:
    """The properties as a dict (ordered as written)."""
    exe = executable or default_executable(state_path)
    # the daemon splits executableName on spaces: a path with spaces cannot be quoted
    if any(" " in part for part in shlex.split(exe)):
        raise ReplayError(f"executableName {exe!r} has a path with spaces, which the MultiLangDaemon cannot run; "
                          f"use a path without spaces (or a wrapper script)")
    if initial_position not in ("TRIM_HORIZON", "LATEST"):
        raise ReplayError(f"initial_position must be TRIM_HORIZON or LATEST, not {initial_position!r}")
    props: dict[str, str] = {
        "executableName": exe,
        "streamName": stream_name,
        "applicationName": application_name,
        "processingLanguage": f"python/{sys.version_info.major}.{sys.version_info.minor}",
        "AWSCredentialsProvider": "DefaultCredentialsProvider",
        "initialPositionInStream": initial_position,
        "regionName": region,
        "retrievalMode": "POLLING",
        "metricsLevel": "NONE",
        "idleTimeBetweenReadsInMillis": str(idle_between_reads_ms),
        "parentShardPollIntervalMillis": "1000",
        "shardSyncIntervalMillis": "10000",
        "failoverTimeMillis": "10000",
        "taskBackoffTimeMillis": "500",
        "maxRecords": "10000",
        "validateSequenceNumberBeforeCheckpointing": "true",
        "cleanupLeasesUponShardCompletion": "true",
        "shutdownGraceMillis": "5000",
    }
    if kinesis_endpoint:
        props["kinesisEndpoint"] = kinesis_endpoint
    if dynamodb_endpoint:
        props["dynamoDBEndpoint"] = dynamodb_endpoint
    for key, value in (extra or {}).items():
        props[key] = str(value)
    return props


def write_properties(path: str | Path, **options: Any) -> str:
    """Write the properties file (``options`` as for ``properties``); returns its text."""
    props = properties(**options)
    lines = ["# fsmlog replay: MultiLangDaemon properties (KCL 3.x multilang)"]
    lines += [f"{k} = {_escape(v)}" for k, v in props.items()]
    text = "\n".join(lines) + "\n"
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return text


def write_properties_for(
    settings: Settings,
    path: str | Path,
    *,
    application_name: str = "fsmlog-replay",
    state_path: str | Path | None = None,
    side: str = "primary",
    **options: Any,
) -> str:
    """``write_properties`` for the Kinesis stream that ``PRIMARY_STREAM_SOURCE`` names (``side``
    "secondary": ``SECONDARY_STREAM_SOURCE``; run one daemon per stream, each with its own
    application name, both folding into the same projection file).

    Region and stream come from the ARN; an ``ENDPOINTS`` entry for the stream
    (a local emulator) is used for both Kinesis and the lease table's DynamoDB.
    """
    from eventlog import aws

    if side not in ("primary", "secondary"):
        raise ReplayError(f"side must be primary or secondary, not {side!r}")
    setting = f"{side.upper()}_STREAM_SOURCE"
    target = settings.source("STREAM", side.upper())
    arn = aws.parse_arn(target, setting) if target and target.startswith("arn:") else None
    if arn is None or arn.service != "kinesis" or arn.resource_type != "stream":
        raise ReplayError(
            f"{setting} is {target!r}; the KCL application reads a Kinesis stream, so set it to "
            f"the stream's ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)"
        )
    if side != "primary" and "executable" not in options:
        options["executable"] = default_executable(state_path, side)
    endpoint = aws.endpoint_for(target, settings)
    return write_properties(
        path, stream_name=arn.name, application_name=application_name, region=aws.region_for(target, settings),
        kinesis_endpoint=endpoint, dynamodb_endpoint=endpoint, state_path=state_path, **options,
    )


def _escape(value: str) -> str:
    # java.util.Properties: backslash escapes, and ':'/'=' are fine after the separator
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def jars_dir() -> Path:
    """The directory of the KCL jars amazon-kclpy installed."""
    try:
        import amazon_kclpy
    except ImportError as exc:
        raise ReplayError("amazon-kclpy is not installed: pip install 'fsmlog[kcl]'") from exc
    jars = Path(amazon_kclpy.__file__).parent / "jars"
    if not jars.is_dir() or not any(jars.glob("amazon-kinesis-client-multilang-*.jar")):
        raise ReplayError(f"no KCL jars in {jars}: reinstall amazon-kclpy (its install downloads them)")
    return jars


def launch_command(properties_path: str | Path, *, java: str = "java",
                   jvm_options: tuple[str, ...] = ()) -> list[str]:
    """``java ... MultiLangDaemon --properties-file PATH``, CBOR off (emulators do not speak it)."""
    return [
        java,
        "-Daws.cborEnabled=false",
        *jvm_options,
        "-cp",
        f"{jars_dir()}/*",
        MAIN_CLASS,
        "--properties-file",
        str(Path(properties_path).resolve()),
    ]
