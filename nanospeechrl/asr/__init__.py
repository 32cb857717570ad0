"""The speech-to-text half (train_asr.py): the speech-aware LLM (encoder -> projector -> LLM),
which corpora a run uses, GRPO's RL data, and the evaluation of every finished model."""
