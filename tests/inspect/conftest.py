"""A small text run shared by the inspect and text-report tests: the real CC documents of
../shared/data (English, with quality scores) plus the corrupt WET fixtures (rejects)."""
from __future__ import annotations

import pytest

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]


@pytest.fixture(scope="session")
def text_run(shared_data, tmp_path_factory):
    from moshi_data.beam_jobs import text_corpus

    inputs = ",".join([str(shared_data / "wet" / "cc_text_jsonl" / "dolma_CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"),
                       str(shared_data / "wet" / "jeffharwell_CC-MAIN-2016-50_fixtures" / "*.wet*")])
    output = tmp_path_factory.mktemp("text_run")
    result = text_corpus.run(inputs, str(output), overrides=["input.docs_per_chunk=50"], beam_args=IN_PROCESS)
    return output, result["stats"]
