# The make targets are the project's interface. Each installs what it needs on first use
# (scripts/install.sh, stamped in .venv) and then calls a Python CLI that has --help.
# Common variables: INPUT=, OUTPUT=, CONFIG=; more per target below.

SHELL := /bin/bash
PY := .venv/bin/python
INSTALL := scripts/install.sh
export PYANNOTE_METRICS_ENABLED := 0
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# Every value reaches the program as ONE argument, unexpanded by the shell: q single-quotes it
# (an embedded ' becomes '\''), so globs, spaces and commas arrive intact. opt adds "--flag 'value'"
# only when the value is set. RUNNER_ARGS and ARGS are split into words (several options).
q = '$(subst ','\'',$(1))'
opt = $(if $(2),$(1) $(call q,$(2)),)
MD := $(PY) -m moshi_data

.PHONY: help install-text install-audio text-corpus classifiers score-text eval-classifiers \
        tokenizer audio-shards moshi-finetune-export eval-audio train test bench bench-scale bench-audio bench-audio-scale bench-stale-listing \
        bench-train inspect show-sample clean

help:
	@echo "Targets (each runs '$(PY) -m moshi_data <command>'; 'moshi-data <command> --help' lists all options):"
	@echo "  make text-corpus [INPUT='glob|list|paths.gz'] [OUTPUT=dir] [CONFIG=yaml] [LIMIT=n] [RUNNER_ARGS='--runner=...']"
	@echo "  make classifiers | eval-classifiers [REPORT_ONLY=1] | score-text INPUT=in.jsonl OUTPUT=out.jsonl"
	@echo "  make tokenizer | audio-shards [INPUT=dir|glob|manifest] [OUTPUT=dir] | moshi-finetune-export INPUT=dir OUTPUT=dir"
	@echo "  make eval-audio [REPORT_ONLY=1] | train [SHARDS=dir] [OUTPUT=dir] [STEPS=n] [PRESET=tiny|100m[,pretrain]] [TEXT=text-corpus-dir TEXT_RATIO=0.5]"
	@echo "  make inspect INPUT=text-or-audio-output [WHERE='quality.wiki>0.5'] [REASON=] [LIMIT=] | show-sample INPUT=shard.tar KEY= OUTPUT=file.png [WAV=]"
	@echo "  make test [PYTEST_ARGS=...] | bench | bench-audio | bench-audio-scale | bench-train | clean"
	@echo "Every target also takes CONFIG=name|file.yaml and ARGS='...' (more options, e.g. ARGS='--set a.b=1 -v')."
	@echo "Values are passed quoted: INPUT='dir/*.jsonl' reaches the program as one glob."

install-text:
	@bash $(INSTALL) text

install-audio:
	@bash $(INSTALL) audio

# ---------------------------------------------------------------- text (Helium recipe)
text-corpus: install-text
	$(MD) text-corpus $(call opt,--input,$(INPUT)) --output $(call q,$(or $(OUTPUT),out/text-corpus)) \
	  $(call opt,--config,$(CONFIG)) $(call opt,--limit,$(LIMIT)) $(RUNNER_ARGS) $(ARGS)

classifiers: install-text
	$(MD) classifiers $(call opt,--config,$(CONFIG)) $(call opt,--output,$(OUTPUT)) $(ARGS)

score-text: install-text
	$(MD) score-text $(call opt,--input,$(INPUT)) $(call opt,--output,$(OUTPUT)) $(call opt,--config,$(CONFIG)) $(ARGS)

eval-classifiers: install-text
	$(MD) eval-classifiers $(call opt,--config,$(CONFIG)) $(call opt,--output,$(OUTPUT)) \
	  $(if $(REPORT_ONLY),--report-only) $(ARGS)

bench: install-text
	$(PY) -m bench.text_bench $(call opt,--config,$(CONFIG)) $(call opt,--output,$(OUTPUT))
	$(PY) -m bench.classifiers_bench $(call opt,--config,$(CONFIG))

bench-scale: install-text
	$(PY) -m bench.scale_bench $(call opt,--sizes,$(SIZES)) $(call opt,--output,$(OUTPUT)) $(call opt,--baseline-repo,$(BASELINE)) $(ARGS)

# ---------------------------------------------------------------- audio (Moshi recipe)
tokenizer: install-text
	$(MD) tokenizer $(call opt,--config,$(CONFIG)) $(call opt,--output,$(OUTPUT)) $(ARGS)

audio-shards: install-audio
	$(MD) audio-shards $(call opt,--input,$(INPUT)) --output $(call q,$(or $(OUTPUT),out/audio-shards)) \
	  $(call opt,--config,$(CONFIG)) $(RUNNER_ARGS) $(ARGS)

moshi-finetune-export: install-audio
	$(MD) moshi-finetune-export --input $(call q,$(or $(INPUT),out/audio-shards)) \
	  --output $(call q,$(or $(OUTPUT),out/moshi-finetune)) $(call opt,--config,$(CONFIG)) $(RUNNER_ARGS) $(ARGS)

eval-audio: install-audio
	$(MD) eval-audio $(call opt,--config,$(CONFIG)) $(call opt,--output,$(OUTPUT)) $(if $(REPORT_ONLY),--report-only) $(ARGS)

bench-audio: install-audio
	$(PY) -m bench.audio_bench $(call opt,--config,$(CONFIG)) $(call opt,--output,$(OUTPUT))

bench-audio-scale: install-audio
	$(PY) -m bench.audio_scale_bench $(call opt,--output,$(OUTPUT)) $(ARGS)

bench-stale-listing: install-text
	$(PY) -m bench.stale_listing_bench $(ARGS)

# ---------------------------------------------------------------- trainer
train: install-audio
	$(MD) train --shards $(call q,$(or $(SHARDS),out/audio-shards/shards)) --output $(call q,$(or $(OUTPUT),out/train)) \
	  $(call opt,--steps,$(STEPS)) $(call opt,--preset,$(PRESET)) $(call opt,--config,$(CONFIG)) \
	  $(call opt,--text,$(TEXT)) $(call opt,--text-ratio,$(TEXT_RATIO)) $(ARGS)

bench-train: install-audio
	$(PY) -m bench.train_bench $(call opt,--preset,$(PRESET)) $(call opt,--output,$(OUTPUT))

# ---------------------------------------------------------------- looking at the data
inspect: install-text
	$(MD) inspect $(call q,$(INPUT)) $(call opt,--where,$(WHERE)) $(call opt,--reason,$(REASON)) $(call opt,--limit,$(LIMIT)) $(ARGS)

show-sample: install-audio
	$(MD) show-sample $(call q,$(INPUT)) --key $(call q,$(KEY)) --output $(call q,$(OUTPUT)) $(call opt,--wav,$(WAV)) $(ARGS)

# ---------------------------------------------------------------- tests
test: install-audio
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf out build .pytest_cache
