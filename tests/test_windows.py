import torch

from nanospeechrl.asr.windows import cut_points, transcribe_windows


def speech_with_pauses(segments, pause=40, dim=4):
    """Log-mel-like features: segment k is `length` loud frames whose first channel holds k, then a
    quiet pause. -> (features, [(start, end) of each segment])."""
    rows, spans, t = [], [], 0
    for k, length in enumerate(segments):
        loud = torch.full((length, dim), 2.0)
        loud[:, 0] = 10.0 + k
        rows += [loud, torch.full((pause, dim), -8.0)]
        spans.append((t, t + length))
        t += length + pause
    return torch.cat(rows), spans


def test_cuts_fall_in_pauses_and_cover_everything():
    feats, spans = speech_with_pauses([130, 90, 150, 80, 120, 100, 140])
    windows = cut_points(feats, max_frames=300)
    assert windows[0][0] == 0 and windows[-1][1] == len(feats)
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))  # contiguous, in order
    assert all(0 < end - start <= 300 for start, end in windows)
    for _, end in windows[:-1]:  # every cut is in a pause, never inside a segment
        assert not any(s < end < e for s, e in spans)


def test_short_input_is_one_window():
    feats = torch.randn(250, 4)
    assert cut_points(feats, 300) == [(0, 250)]


def test_transcribe_windows_joins_each_inputs_windows_in_order():
    def transcribe(windows):  # "hears" the segment ids in a window; one call for all windows of all inputs
        calls.append(len(windows))
        return [" ".join(str(int(v) - 10) for v in torch.unique_consecutive(w[:, 0]) if v >= 10) for w in windows]

    calls = []
    long_input, _ = speech_with_pauses([130, 90, 150, 80, 120, 100, 140])
    short_input, _ = speech_with_pauses([60])
    texts = transcribe_windows(transcribe, [long_input, short_input], max_frames=300)
    assert texts == ["0 1 2 3 4 5 6", "0"] and len(calls) == 1 and calls[0] > 2


def test_a_window_of_silence_adds_no_space():
    assert transcribe_windows(lambda ws: ["a", "", "b"], [torch.zeros(700, 2)], 300) == ["a b"]
