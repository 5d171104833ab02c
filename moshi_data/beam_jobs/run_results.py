"""What a job's launcher reads back once its pipeline has run, shared by the text and audio jobs:
compute seconds per stage from the workers' Beam counters, and the first reject lines to show."""
from __future__ import annotations

import json

from apache_beam.metrics.metric import MetricsFilter

from moshi_data.pipeline import storage

STAGE_COUNTER_PREFIX = "ms_"  # a DoFn adds the milliseconds it spent in a stage to counter ms_<stage>


def stage_seconds(result, namespace: str) -> dict[str, float]:
    """Seconds per stage: the ``ms_<stage>`` counters of ``namespace``, summed over steps and workers
    (committed values, else attempted where a runner commits none)."""
    milliseconds: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]:
        name = counter.key.metric.name
        value = counter.committed if counter.committed is not None else counter.attempted
        if name.startswith(STAGE_COUNTER_PREFIX) and value is not None:
            stage = name[len(STAGE_COUNTER_PREFIX):]
            milliseconds[stage] = milliseconds.get(stage, 0) + value
    return {stage: round(ms / 1000, 3) for stage, ms in sorted(milliseconds.items())}


def first_rejects(folder: str, limit: int) -> list[dict]:
    """The first ``limit`` reject lines of the ``*.jsonl`` files in ``folder``, in file-name order,
    reading only the files needed."""
    rows: list[dict] = []
    for path in storage.list_folder(folder):
        if len(rows) >= limit:
            break
        if path.endswith(".jsonl"):
            lines = storage.read_bytes(path).decode("utf-8").splitlines()
            rows += [json.loads(line) for line in lines if line.strip()][:limit - len(rows)]
    return rows
