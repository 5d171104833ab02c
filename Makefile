# The make targets are the project's interface. Each installs what it needs on first use
# (scripts/install.sh, stamped in .venv) and then calls a Python CLI that has --help.
# Common variables: INPUT=, OUTPUT=, CONFIG=; more per target below.

SHELL := /bin/bash
PY := .venv/bin/python
INSTALL := scripts/install.sh
export PYANNOTE_METRICS_ENABLED := 0
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

opt = $(if $(2),$(1) $(2),)

.PHONY: help install-text install-audio text-corpus classifiers score-text eval-classifiers \
        tokenizer audio-shards moshi-finetune-export eval-audio train test bench bench-scale bench-audio \
        bench-train inspect show-sample clean

help:
	@echo "make text-corpus [INPUT=wet|jsonl glob|list|paths.gz] [OUTPUT=dir] [CONFIG=yaml] [LIMIT=n] [RUNNER_ARGS='...']"
	@echo "make classifiers | eval-classifiers | score-text INPUT=in.jsonl OUTPUT=out.jsonl"
	@echo "make tokenizer | audio-shards INPUT=dir|manifest OUTPUT=dir | moshi-finetune-export INPUT=shards OUTPUT=dir"
	@echo "make eval-audio | train SHARDS=dir OUTPUT=dir STEPS=n PRESET=tiny[,pretrain] [TEXT=text-corpus-dir TEXT_RATIO=0.5] | test | bench | bench-audio | bench-train"
	@echo "make inspect INPUT=text-or-audio-output [WHERE='quality.wiki>0.5'] [REASON=] | show-sample INPUT=shard.tar KEY= OUTPUT=file.png [WAV=]"

install-text:
	@bash $(INSTALL) text

install-audio:
	@bash $(INSTALL) audio

# ---------------------------------------------------------------- text (Helium recipe)
text-corpus: install-text
	$(PY) -m moshi_data.beam_jobs.text_corpus $(call opt,--input,$(INPUT)) --output $(or $(OUTPUT),out/text-corpus) \
	  $(call opt,--config,$(CONFIG)) $(call opt,--limit,$(LIMIT)) $(RUNNER_ARGS)

classifiers: install-text
	$(PY) -m moshi_data.classifiers.train $(call opt,--config,$(CONFIG)) $(call opt,--output,$(OUTPUT))

score-text: install-text
	$(PY) -m moshi_data.classifiers.score --input $(INPUT) --output $(OUTPUT) $(call opt,--config,$(CONFIG))

eval-classifiers: install-text
	$(PY) -m moshi_data.classifiers.evaluate $(call opt,--config,$(CONFIG))

bench: install-text
	$(PY) -m bench.text_bench $(call opt,--config,$(CONFIG)) $(call opt,--output,$(OUTPUT))
	$(PY) -m bench.classifiers_bench $(call opt,--config,$(CONFIG))

bench-scale: install-text
	$(PY) -m bench.scale_bench $(call opt,--sizes,$(SIZES)) $(call opt,--output,$(OUTPUT)) $(call opt,--baseline-repo,$(BASELINE))

# ---------------------------------------------------------------- audio (Moshi recipe)
tokenizer: install-text
	$(PY) -m moshi_data.classifiers.tokenizer $(call opt,--config,$(CONFIG)) $(call opt,--output,$(OUTPUT))

audio-shards: install-audio
	$(PY) -m moshi_data.beam_jobs.audio_shards $(call opt,--input,$(INPUT)) --output $(or $(OUTPUT),out/audio-shards) \
	  $(call opt,--config,$(CONFIG)) $(RUNNER_ARGS)

moshi-finetune-export: install-audio
	$(PY) -m moshi_data.beam_jobs.moshi_finetune_export --input $(or $(INPUT),out/audio-shards) \
	  --output $(or $(OUTPUT),out/moshi-finetune) $(call opt,--config,$(CONFIG))

eval-audio: install-audio
	$(PY) -m moshi_data.pipeline.audio.evaluate $(call opt,--config,$(CONFIG)) $(call opt,--output,$(OUTPUT))

bench-audio: install-audio
	$(PY) -m bench.audio_bench $(call opt,--config,$(CONFIG)) $(call opt,--output,$(OUTPUT))

# ---------------------------------------------------------------- trainer
train: install-audio
	$(PY) -m moshi_data.trainer.train --shards $(or $(SHARDS),out/audio-shards/shards) --output $(or $(OUTPUT),out/train) \
	  $(call opt,--steps,$(STEPS)) $(call opt,--preset,$(PRESET)) $(call opt,--config,$(CONFIG)) \
	  $(if $(TEXT),--text '$(TEXT)') $(call opt,--text-ratio,$(TEXT_RATIO))

bench-train: install-audio
	$(PY) -m bench.train_bench $(call opt,--preset,$(PRESET)) $(call opt,--output,$(OUTPUT))

# ---------------------------------------------------------------- looking at the data
inspect: install-text
	$(PY) -m moshi_data inspect "$(INPUT)" $(if $(WHERE),--where '$(WHERE)') $(call opt,--reason,$(REASON)) $(call opt,--limit,$(LIMIT))

show-sample: install-audio
	$(PY) -m moshi_data show-sample "$(INPUT)" --key "$(KEY)" --output "$(OUTPUT)" $(call opt,--wav,$(WAV))

# ---------------------------------------------------------------- tests
test: install-audio
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf out build .pytest_cache
