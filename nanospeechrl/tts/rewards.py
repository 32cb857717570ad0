"""
Rewards for TTS RL, computed on synthesised speech. Plain functions like rewards.py's:

    reward(hyps: list[str], refs: list[str], **fields) -> list[float]

hyps are the reward ASR's transcripts of the synthesised log-mel, refs the texts spoken;
fields carry what the speech itself says: lengths (speech tokens per sample), group (samples
per text, consecutive), similarity (cosine of each sample's speaker embedding to the target).

    cer         1 - character error rate of the reward ASR's transcript (rewards.cer)
    duration    -|(length - median) / median| over the sample's group: speech must not slow
                down (or rush) to please the ASR (the seed paper's R2)
    similarity  the speaker cosine itself (optional; the papers evaluate it, not reward it)
"""
import statistics

from nanospeechrl.rewards import cer


def duration(hyps, refs, lengths, group, **fields):
    """-|(len - median) / median| within each group of `group` consecutive samples."""
    out = []
    for start in range(0, len(lengths), group):
        chunk = lengths[start:start + group]
        median = max(1e-6, statistics.median(chunk))
        out += [-abs(n - median) / median for n in chunk]
    return out


def similarity(hyps, refs, similarity, **fields):
    return list(similarity)


TTS_REWARDS = {"cer": cer, "duration": duration, "similarity": similarity}  # rewards.parse_rewards / score: known=
