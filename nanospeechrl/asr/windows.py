"""
Audio of any length: cut a long log-mel into windows at pauses, transcribe each, join the text.

A window ends at the quietest point (lowest frame energy, smoothed over 0.2 s) in the last two
thirds of its span, so a cut falls between words where there is a pause, and each window holds
at most max_frames frames: memory stays bounded whatever the length of the input.

    spans = cut_points(feats, max_frames=1200)         # [(start, end), ...] covering every frame
    texts = transcribe_windows(transcribe, feats_list, max_frames)   # one text per input
"""
import torch
import torch.nn.functional as F


def frame_energy(feats, smooth=20):
    """(T, n_mels) log-mel -> (T,) loudness per frame (mean log-mel), averaged over `smooth` frames."""
    energy = feats.float().mean(dim=1)[None, None]  # (1, 1, T)
    return F.avg_pool1d(F.pad(energy, (smooth // 2, smooth - 1 - smooth // 2), mode="replicate"), smooth, 1)[0, 0]


def cut_points(feats, max_frames, search=2 / 3):
    """Windows [(start, end)] covering feats (T, n_mels) in order, each at most max_frames long and,
    where the input is longer, ending at the quietest frame of its last `search` share."""
    T = len(feats)
    if T <= max_frames:
        return [(0, T)]
    energy, spans, start = frame_energy(feats), [], 0
    while T - start > max_frames:
        lo = start + int(max_frames * (1 - search))
        end = lo + int(torch.argmin(energy[lo:start + max_frames]))
        spans.append((start, end))
        start = end
    return spans + [(start, T)]


def transcribe_windows(transcribe, feats, max_frames):
    """transcribe(list of (T, n_mels)) -> texts, run on every window of every input, in one call
    (so batching works across inputs); -> one text per input, its windows' texts joined by spaces."""
    windows, owner = [], []
    for i, f in enumerate(feats):
        for start, end in cut_points(f, max_frames):
            windows.append(f[start:end])
            owner.append(i)
    texts = [[] for _ in feats]
    for i, text in zip(owner, transcribe(windows)):
        if text.strip():
            texts[i].append(text.strip())
    return [" ".join(t) for t in texts]
