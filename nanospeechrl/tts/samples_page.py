"""
A static page to listen to the TTS by: <folder>/index.html, plain HTML and inline CSS (no
server, no script), opened straight from disk. Numbers say how often the judge mishears; the
page lets a person hear why, and see the judge's errors against the text.

Input, built by the evaluation:

    sets = {set name: [item, ...]}           e.g. {"training voices": [...], "held-out voices": [...]}
    item = {"text": the reference text,
            "systems": {system name: {"wav": path or (T,) tensor at audio.SAMPLE_RATE,
                                      "mel": path to a PNG, (T, 80) log-mel tensor, or None,
                                      "hyp": the judge's transcript, or None}}}
    systems = [system name, ...]             the rows' order; None: as they first appear

Paths are absolute or relative to `folder`; tensors are written into `folder` by write_sample.
An item without some system simply has no row for it. For example:

    wav, png = write_sample("out/tts/samples", "train-0-real", wav_tensor, mel_tensor)
    write_page("out/tts/samples", "TTS samples",
               {"training voices": [{"text": "The red cat sat.",
                                     "systems": {"real": {"wav": wav, "mel": png, "hyp": "the red cat sat"},
                                                 "SFT": {"wav": sft_wav, "mel": sft_mel, "hyp": "the bed cat"}}}]},
               ["real", "SFT"])

Transcripts are aligned to the reference word by word (Levenshtein, jiwer) on normalised text
(rewards.normalize), the text every WER in this project is computed on, so the marks add up to
the item's WER. missing_files(page) lists what a page references but the disk lacks.
"""
import html
import os
import re
from html.parser import HTMLParser
from urllib.parse import quote, unquote, urlsplit

import jiwer
import soundfile as sf
import torch

from nanospeechrl import audio
from nanospeechrl.metrics import word_errors
from nanospeechrl.rewards import normalize

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; padding: 0 16px; max-width: 1180px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { margin-top: 32px; border-bottom: 2px solid #ccc; }
.intro, .legend { color: #555; } .legend > * { margin-left: 10px; }
.item { margin: 18px 0 28px; }
.ref { font-size: 16px; margin: 6px 0; } .ref b { color: #888; font-weight: normal; margin-right: 6px; }
/* fixed column widths: every item's table lines up, so pictures compare down the page */
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
col.name { width: 160px; } col.player { width: 250px; } col.mel { width: 300px; }
td, th { padding: 4px 8px; vertical-align: middle; text-align: left; border-top: 1px solid #e4e4e4; }
th { font-weight: 600; } tr:nth-child(even) { background: #f7f7f7; }
audio { width: 230px; height: 32px; display: block; }
.dur, .score { color: #777; font-size: 12px; } img { display: block; width: 280px; height: 84px; }
.hyp { font-size: 15px; } .none { color: #aaa; font-style: italic; }
.sub { background: #ffe1b3; border-radius: 3px; padding: 0 2px; }
.sub .was { color: #a15c00; font-size: 11px; margin-left: 3px; }
.sub .was::before { content: "\\2190 "; }
ins { background: #cdeccd; text-decoration: none; border-bottom: 2px solid #3a9a3a; padding: 0 2px; }
del { color: #b00; background: #fbe0e0; padding: 0 2px; }
"""

COLUMNS = '<colgroup><col class="name"><col class="player"><col class="mel"><col></colgroup>'
LEGEND = ('<p class="legend">Transcripts are the judge\'s, against the text (normalised): '
          '<span class="sub">heard<span class="was">said</span></span> substitution, '
          '<ins>extra</ins> insertion, <del>missed</del> deletion (a word of the text the judge did not hear).</p>')


def slug(name):
    """A file-name-safe stem: "(d) SFT continued" -> "d-sft-continued"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "x"


def write_mel_png(path, mel):
    """A (T, 80) log-mel as a small picture, on the colour scale write_samples uses, so pictures
    of different systems compare by eye."""
    # matplotlib.figure.Figure, not pyplot: no global figure state and no backend switch in the
    # caller's process; saving a PNG from a bare Figure renders with Agg.
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4, 1.2))
    ax = fig.add_axes((0, 0, 1, 1))  # the whole picture is the mel: no axes, ticks or margins
    ax.imshow(mel.detach().float().cpu().T.numpy(), origin="lower", aspect="auto", vmin=-1, vmax=1.5)
    ax.set_axis_off()
    fig.savefig(path, dpi=70)


def write_sample(folder, stem, wav, mel=None, sample_rate=audio.SAMPLE_RATE):
    """One sample's <stem>.wav and, with a mel, <stem>.png in folder -> (wav name, png name or None),
    names relative to folder, as write_page takes them."""
    os.makedirs(folder, exist_ok=True)
    audio.save(os.path.join(folder, stem + ".wav"), wav, sample_rate)
    if mel is None:
        return stem + ".wav", None
    write_mel_png(os.path.join(folder, stem + ".png"), mel)
    return stem + ".wav", stem + ".png"


def align(ref, hyp):
    """Word alignment of hyp to ref, on normalised text -> [(op, ref word, hyp word)], op one of
    "equal", "sub", "ins" (ref word None), "del" (hyp word None), in reading order."""
    r, h = normalize(ref).split(), normalize(hyp).split()
    if not r:  # jiwer needs a reference; with none, every word heard is an insertion
        return [("ins", None, w) for w in h]
    ops = []
    for c in jiwer.process_words(" ".join(r), " ".join(h)).alignments[0]:
        if c.type in ("equal", "substitute"):
            ops += [("equal" if c.type == "equal" else "sub", r[i], h[j])
                    for i, j in zip(range(c.ref_start_idx, c.ref_end_idx), range(c.hyp_start_idx, c.hyp_end_idx))]
        elif c.type == "insert":
            ops += [("ins", None, h[j]) for j in range(c.hyp_start_idx, c.hyp_end_idx)]
        else:
            ops += [("del", r[i], None) for i in range(c.ref_start_idx, c.ref_end_idx)]
    return ops


def mark_errors(ref, hyp):
    """The transcript as HTML, its errors against ref marked (the styles of LEGEND)."""
    e = html.escape
    words = []
    for op, r, h in align(ref, hyp):
        if op == "equal":
            words.append(e(h))
        elif op == "sub":
            words.append(f'<span class="sub" title="the text says: {e(r)}">{e(h)}'
                         f'<span class="was">{e(r)}</span></span>')
        elif op == "ins":
            words.append(f"<ins>{e(h)}</ins>")
        else:
            words.append(f"<del>{e(r)}</del>")
    return " ".join(words) or '<span class="none">(nothing)</span>'


def score_line(ref, hyp):
    """The item's WER and CER, as metrics.word_errors counts them (what the reported numbers sum)."""
    (we, wn), = word_errors([ref], [hyp])
    (ce, cn), = word_errors([ref], [hyp], unit="char")
    if not wn:  # nothing to say (a silent item): the words heard are the errors
        return f"{we} word(s) where nothing was said"
    return f"WER {100 * we / wn:.0f}% ({we}/{wn}) &middot; CER {100 * ce / cn:.0f}%"


def href(folder, path):
    """A path (absolute, or relative to folder) as a URL relative to the page, quoted (spaces, #)."""
    rel = os.path.relpath(path, folder) if os.path.isabs(path) else path
    return quote(rel.replace(os.sep, "/"))


def system_row(folder, name, entry, stem):
    """One <tr>: system name | player and duration | log-mel picture | marked transcript and scores."""
    e = html.escape
    wav, mel = entry.get("wav"), entry.get("mel")
    if torch.is_tensor(wav):  # tensors given: written next to the page, as write_sample names them
        audio.save(os.path.join(folder, stem + ".wav"), wav)
        wav = stem + ".wav"
    if torch.is_tensor(mel):
        write_mel_png(os.path.join(folder, stem + ".png"), mel)
        mel = stem + ".png"
    cells = [f"<th>{e(name)}</th>"]
    if wav:
        full = wav if os.path.isabs(wav) else os.path.join(folder, wav)
        dur = f'<span class="dur">{sf.info(full).duration:.1f} s</span>' if os.path.exists(full) else ""
        cells.append(f'<td><audio controls preload="metadata" src="{href(folder, wav)}"></audio>{dur}</td>')
    else:
        cells.append('<td class="none">no audio</td>')
    cells.append(f'<td><img src="{href(folder, mel)}" alt="log-mel of {e(name)}"></td>' if mel else "<td></td>")
    hyp = entry.get("hyp")
    cells.append('<td class="none">not transcribed</td>' if hyp is None else
                 f'<td><div class="hyp">{mark_errors(entry["ref"], hyp)}</div>'
                 f'<div class="score">{score_line(entry["ref"], hyp)}</div></td>')
    return "<tr>" + "".join(cells) + "</tr>"


def write_page(folder, title, sets, systems=None, intro=""):
    """<folder>/index.html for sets (the structure in the module docstring), a section per set,
    per item its text, then a row per system in `systems` order. Returns the page's path."""
    e = html.escape
    if systems is None:  # the order in which systems first appear
        systems = list(dict.fromkeys(s for items in sets.values() for it in items for s in it["systems"]))
    os.makedirs(folder, exist_ok=True)
    body = [f"<h1>{e(title)}</h1>"] + ([f'<p class="intro">{e(intro)}</p>'] if intro else []) + [LEGEND]
    for set_name, items in sets.items():
        body.append(f"<h2>{e(set_name)}</h2>")
        for i, item in enumerate(items):
            rows = [system_row(folder, name, {**item["systems"][name], "ref": item["text"]},
                               f"{slug(set_name)}-{i}-{slug(name)}")
                    for name in systems if name in item["systems"]]
            body.append(f'<div class="item"><p class="ref"><b>{i + 1}.</b>{e(item["text"])}</p>'
                        f'<table>{COLUMNS}{"".join(rows)}</table></div>')
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")
    path = os.path.join(folder, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path


class _Links(HTMLParser):
    """Collects every src and href attribute of a page."""

    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def missing_files(page):
    """Every local src/href of the HTML file `page` that does not exist relative to it (URLs with
    a scheme, such as https: or data:, and in-page #anchors are not files and are skipped)."""
    parser = _Links()
    with open(page, encoding="utf-8") as f:
        parser.feed(f.read())
    base, missing = os.path.dirname(os.path.abspath(page)), []
    for link in dict.fromkeys(parser.links):
        url = urlsplit(link)
        if url.scheme or url.netloc or not url.path:
            continue
        if not os.path.exists(os.path.join(base, unquote(url.path))):
            missing.append(link)
    return missing
