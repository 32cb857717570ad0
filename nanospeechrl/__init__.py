"""nanospeechrl: a small, readable reference implementation of RL for LLM-based speech systems."""
