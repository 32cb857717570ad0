"""The text-to-speech half (train_tts.py): speech tokens, speaker encoder, flow matching, the
text-to-token LM, synthesis, the RL reward models (reward ASR, Token2Text) and DiffRO, and the
evaluation by models that never trained what they judge."""
