"""fastText classifiers and SentencePiece tokenizer: training, evaluation, scoring CLIs."""
