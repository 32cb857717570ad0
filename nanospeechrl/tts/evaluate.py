"""
Evaluation of the TTS half by models that never trained, selected or rewarded it: a judge ASR
(its own CTC model, or a train_asr.py checkpoint) for intelligibility and a second speaker
encoder (other seed, width and input normalisation) for similarity.

report_tokenizer: CTC CER through the bottleneck and codebook use, on dev.
report_speaker: voice-ID accuracy on held-out utterances of training voices, mean cosine of
  same- vs different-voice pairs per voice set, and a pitch check (built-in voices only: the
  same voice at two pitches vs two voices at one pitch).
report_tts, per voice set, on the test texts:
    (a) real eSpeak audio            (b) Griffin-Lim of the real log-mel
    (c) flow matching from the tokenizer's tokens of the real audio
    (d) the full TTS: LM tokens (sampled) -> flow matching
  (c) scored on the generated log-mel and on the waveform a person hears (Griffin-Lim, written
  to a wav file, read back like any audio), (d) on the waveform only (its mel rows were within
  0.5 CER points of it). Each row: judge WER/CER, similarity to the
  target voice (cosine to a real clip of it that is neither the item nor the clip the TTS was
  conditioned on), duration ratio to the real utterance, for (d) the share of LM samples that
  hit the length cap, and the WER difference to (a) with a paired-bootstrap 95% interval.
"""
import json
import os
import re
import tempfile

import torch

from nanospeechrl import audio
from nanospeechrl.metrics import bootstrap_wer_diff, error_counts
from nanospeechrl.tts.corpora import SEEN
from nanospeechrl.tts.judge import ctc_model_transcriber, ctc_transcriber, load_judges
from nanospeechrl.tts.samples_page import write_page
from nanospeechrl.tts.speaker import embed_all, label_parts
from nanospeechrl.tts.synthesis import load_model, load_tts, vocode
from nanospeechrl.tts.token2text import transcribe_tokens
from nanospeechrl.tts.tokens import codebook_usage, tokenize_all

def report_tokenizer(model, examples, feats, batch_size, device, log):
    """CTC WER/CER of the tokenizer on dev, through its bottleneck, and how much of the codebook it uses."""
    model.eval()
    hyps = ctc_transcriber(lambda f, n: model(f, n)[:2], batch_size, device)(feats)
    r = error_counts([ex.spoken for ex in examples], hyps)
    row = {"stage": "eval_tokenizer", "wer": r["wer"], "cer": r["cer"], "n": len(examples)}
    line = f"tokenizer on dev: CTC WER {100 * r['wer']:.1f}%  CER {100 * r['cer']:.1f}%"
    if model.fsq is None:
        line += " (no bottleneck)"
    else:
        codes = torch.tensor([c for row in tokenize_all(model, feats, batch_size, device) for c in row])
        row.update(codebook_usage(codes, model.config.n_codes))
        line += (f" through the bottleneck; codes used {100 * row['codes_used']:.1f}% of {model.config.n_codes}, "
                 f"perplexity {row['perplexity']:.0f}")
    log(row)
    print(line)


def pair_cosines(emb, voices):
    """Mean cosine over same-voice pairs and over different-voice pairs of embeddings (N, dim)."""
    cos = emb @ emb.T
    voices = list(voices)
    same = torch.tensor([[a == b for b in voices] for a in voices])
    pairs = (same & ~torch.eye(len(voices), dtype=torch.bool), ~same)
    return tuple(cos[p].mean().item() if p.any() else None for p in pairs)  # None: no such pair


def pitch_check(speaker, voices, batch_size, device, texts=("The red cup is on the table.", "We met Anna in town.")):
    """Built-in voices at pitch 20 and 80: mean cosine of one voice at two pitches vs of two
    voices at one pitch. A pitch detector would rate the second pair higher."""
    from nanospeechrl.builtin.synth import synthesize
    clips = {(v, p, t): audio.log_mel(synthesize(t, v, 170, p)) for v in voices for p in (20, 80) for t in texts}
    keys = list(clips)
    emb = dict(zip(keys, embed_all(speaker, [clips[k] for k in keys], batch_size, device)))
    same = [emb[v, 20, t] @ emb[v, 80, t] for v in voices for t in texts]
    other = [emb[v, p, t] @ emb[w, p, t] for v in voices for w in voices if v < w for p in (20, 80) for t in texts]
    return (sum(same) / len(same)).item(), (sum(other) / len(other)).item()


def report_speaker(name, speaker, classes, voice_sets, batch_size, device, log, builtin):
    row = {"stage": f"eval_{name}"}
    seen = voice_sets[SEEN]
    known = [it for it in seen if all(p in c for p, c in zip(label_parts(it["speaker"]), classes))]
    if known:
        pred = speaker.predict(embed_all(speaker, [it["feats"] for it in known], batch_size, device).to(device))
        truth = torch.tensor([[c.index(p) for p, c in zip(label_parts(it["speaker"]), classes)] for it in known])
        row["voice_id_accuracy"] = (pred.cpu() == truth).all(dim=1).float().mean().item()
    for set_name, items in voice_sets.items():
        emb = embed_all(speaker, [it["feats"] for it in items], batch_size, device)
        row[f"cos_same/{set_name}"], row[f"cos_diff/{set_name}"] = pair_cosines(emb, [it["speaker"] for it in items])
    if builtin:
        voices = sorted({it["speaker"] for it in seen})[:12]
        row["pitch/same_voice"], row["pitch/same_pitch"] = pitch_check(speaker, voices, batch_size, device)
    log(row)
    print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float)))


def through_wav(mels, folder, tag, generator):
    """Griffin-Lim each log-mel to a 16-bit wav in folder, read it back, and take its log-mel again."""
    out = []
    for i, mel in enumerate(mels):
        path = os.path.join(folder, f"{tag}-{i:04d}.wav")
        audio.save(path, vocode(mel, generator=generator))
        out.append(audio.log_mel(audio.load(path)))
    return out


def synthesize_items(tts, items, voices, batch_size, steps, seed, sampling, device, gen):
    """The full TTS on items' texts (one sample each; sampling: temperature, top_k, top_p) -> (speech-token
    lists, capped list, log-mel list)."""
    texts, tokens, capped = [it["text"] for it in items], [], []
    for start in range(0, len(items), batch_size):
        sampled, cut = tts.tokens(texts[start:start + batch_size], **sampling,
                                  generator=torch.Generator(device).manual_seed(seed + start))
        tokens += sampled
        capped += cut.tolist()
    mels = [m for start in range(0, len(items), batch_size)
            for m in tts.mels(tokens[start:start + batch_size], voices[start:start + batch_size], steps, generator=gen)]
    return tokens, capped, mels


def report_tts(set_name, items, models, speech_tok, judges, speaker_eval, device, batch_size, steps, seed, log,
               sampling=None, page=None, reward_asr=None, token2text=None, baseline=None):
    """Rows a, b, c (of the first model's flow) and d of every model in models [(name, TTS)] for
    one voice set: printed, logged, d compared with (a) and, when `baseline` names one of the
    models, every other model's d with the baseline's (paired bootstrap, WER and CER, by the
    first of judges [(name, feats -> texts)]; the others' WER and CER beside it as
    "<name>/wer"). With reward_asr (feats -> texts) and token2text (token lists -> texts), d rows
    also carry the reward models' own CER on the same speech: its gap to the judge's is reward
    hacking. page: a dict that gets {set_name: the listening page's items} (page_items)."""
    gen = torch.Generator().manual_seed(seed)
    refs, real = [it["text"] for it in items], [it["feats"] for it in items]
    ref_emb = embed_all(speaker_eval, [it["ref"] for it in items], batch_size, device)
    tts = models[0][1]
    voices = tts.voice([it["cond"] for it in items])
    flow_mels = [m for start in range(0, len(items), batch_size) for m in
                 tts.mels(tokenize_all(speech_tok, real[start:start + batch_size], batch_size, device),
                          voices[start:start + batch_size], steps, generator=gen)]
    rows = {"(a) real audio": (real, None, None), "(b) Griffin-Lim of real log-mel": None,
            "(c) flow from tokens, mel": (flow_mels, None, None), "(c) flow from tokens, wav": None}
    for name, model in models:
        tokens, capped, mels = synthesize_items(model, items, voices, batch_size, steps, seed, sampling or {}, device,
                                                torch.Generator().manual_seed(seed + 1))  # its own: rows reproducible
        rows[f"(d) {name}, mel"], rows[f"(d) {name}, wav"] = (mels, tokens, capped), None
    (_, judge), others = judges[0], judges[1:]
    with tempfile.TemporaryDirectory() as tmp:
        tags = {}  # title -> the name its wav files have in tmp
        for k, title in enumerate(list(rows)):  # the waveform a person hears, read back like any audio file
            if rows[title] is None:
                source = rows[title.replace(", wav", ", mel")] if "wav" in title else rows["(a) real audio"]
                wavs = through_wav(source[0], tmp, str(k), torch.Generator().manual_seed(seed + 2))
                rows[title], tags[title] = (wavs,) + source[1:], str(k)
        for title in [t for t in rows if t.startswith("(d)") and t.endswith(", mel")]:
            del rows[title]  # (d) is scored as heard, on the waveform (its mel rows were within 0.5 CER points)
        hyps = {title: judge(row[0]) for title, row in rows.items()}
        if page is not None:
            page[set_name] = page_items(items, rows, hyps, tmp, tags)
    print(f"== TTS, {set_name} ({len(items)} test texts; judge: {judges[0][0]})")
    real_frames = sum(len(f) for f in real)
    for title, (feats, tokens, capped) in rows.items():
        r = error_counts(refs, hyps[title])
        sims = (embed_all(speaker_eval, feats, batch_size, device) * ref_emb).sum(-1)
        result = {"stage": "eval", "model": title, "split": set_name, "judge": judges[0][0], "wer": r["wer"],
                  "cer": r["cer"], "ins": r["ins"], "del": r["del"], "similarity": sims.mean().item(),
                  "duration_ratio": sum(len(f) for f in feats) / real_frames, "n": len(items)}
        for name, other in others:
            r2 = error_counts(refs, other(feats))
            result.update({f"{name}/wer": r2["wer"], f"{name}/cer": r2["cer"]})
        if capped is not None:
            result["capped"] = sum(capped) / len(capped)
            if reward_asr is not None:
                result["reward_asr_cer"] = error_counts(refs, reward_asr(feats))["cer"]
            if token2text is not None:
                result["token2text_cer"] = error_counts(refs, token2text(tokens))["cer"]
        against = [("(a)", "(a) real audio")] if title != "(a) real audio" else []
        if baseline and title.startswith("(d)") and not title.startswith(f"(d) {baseline},"):
            against.append((baseline, f"(d) {baseline}, {title.rsplit(', ', 1)[1]}"))
        notes = []
        for short, base in against:
            for unit in ("word", "char"):
                d, lo, hi = bootstrap_wer_diff(refs, hyps[base], hyps[title], unit=unit)
                key = f"{'wer' if unit == 'word' else 'cer'}_diff/{short}"
                result.update({key: d, f"{key}/low": lo, f"{key}/high": hi})
            key = f"cer_diff/{short}"
            notes.append(f"CER - {short} {100 * result[key]:+.1f} [{100 * result[key + '/low']:+.1f}, "
                         f"{100 * result[key + '/high']:+.1f}]")
        log(result)
        extra = "".join(f"  {k} {100 * result[k]:.1f}%" for k in ("capped", "reward_asr_cer", "token2text_cer",
                                                                   *(f"{n}/cer" for n, _ in others)) if k in result)
        print(f"{title:34s} WER {100 * r['wer']:5.1f}%  CER {100 * r['cer']:5.1f}%  sim {result['similarity']:.3f}  "
              f"dur x{result['duration_ratio']:.2f}{extra}  " + "  ".join(notes))
    return hyps


def page_items(items, rows, hyps, folder, tags, n=4):
    """The listening page's items (tts/samples_page.py) for the first n items of a voice set: per
    system its audio (the real file, else the waveform a person hears, as the judge got it), its
    log-mel and the judge's transcript. folder, tags: the rows' wav files (through_wav's)."""
    systems = {"real": "(a) real audio", "Griffin-Lim": "(b) Griffin-Lim of real log-mel",
               "flow from real tokens": "(c) flow from tokens, wav",
               **{t[4:-5]: t for t in rows if t.startswith("(d)") and t.endswith(", wav")}}
    return [{"text": items[i]["text"], "systems": {
        name: {"wav": audio.load(items[i]["audio"]) if title.startswith("(a)") else
               audio.load(os.path.join(folder, f"{tags[title]}-{i:04d}.wav")),
               "mel": rows[title][0][i], "hyp": hyps[title][i]} for name, title in systems.items()}}
        for i in range(min(n, len(items)))]


RL_RUN = re.compile(r"(lm-control|rl-(?:grpo|diffro|both-nofilter|both))(-(?!seed\d+$)[\w.+-]+?)?(?:-seed(\d+))?")


def finished_lms(out):
    """The finished text-to-token LMs of a run -> (models [(name, dir)], baseline name or None,
    {method: [model names]}): "SFT" (lm) first, then the controls ("SFT continued", +" <tag>"),
    then each RL method (+" <tag>"); replicate k >= 1 of --seeds is "<name>@k". The baseline is
    the first control."""
    found = []
    for d in os.listdir(out):
        m = RL_RUN.fullmatch(d)
        if m and os.path.exists(os.path.join(out, d, "state.json")) and \
                json.load(open(os.path.join(out, d, "state.json"))).get("done"):
            method = ("SFT continued" if m[1] == "lm-control" else m[1][3:]) + (f" {m[2][1:]}" if m[2] else "")
            found.append((m[1] != "lm-control", method, int(m[3] or 0), os.path.join(out, d)))
    models, methods = [("SFT", os.path.join(out, "lm"))], {}
    for _, method, k, path in sorted(found):
        name = method + (f"@{k}" if k else "")
        models.append((name, path))
        methods.setdefault(method, []).append(name)
    controls = [m for m in methods if m.startswith("SFT continued")]
    return models, (controls[0] if controls else None), methods


def seed_means(set_name, refs, hyps, methods, baseline, log):
    """Methods with several replicates (--seeds): each one's mean CER and spread over its seeds, and
    the paired-bootstrap intervals of mean CER - the baseline's mean and - SFT's, by the first judge."""
    if not any(len(names) > 1 for names in methods.values()):
        return
    runs = lambda names: [hyps[f"(d) {n}, wav"] for n in names]  # noqa: E731
    for method, names in methods.items():
        cers = [error_counts(refs, h)["cer"] for h in runs(names)]
        mean, sd = sum(cers) / len(cers), (sum((c - sum(cers) / len(cers)) ** 2 for c in cers) /
                                           max(1, len(cers) - 1)) ** 0.5
        row = {"stage": "seeds", "method": method, "split": set_name, "seeds": len(cers), "cer": mean, "cer_sd": sd}
        line = f"{set_name:16s} {method:24s} CER {100 * mean:5.1f} ± {100 * sd:.1f} ({len(cers)} seeds)"
        for key, base in (("", baseline), ("sft_", "SFT")):
            if base and method != base:
                d, lo, hi = bootstrap_wer_diff(refs, runs(methods.get(base, [base])), runs(names), unit="char")
                row.update({f"{key}base": base, f"{key}diff": d, f"{key}low": lo, f"{key}high": hi})
                line += f"  - {base} {100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
        log(row)
        print(line)


def evaluate_run(run, cfg, device, log, tts_models, baseline=None, methods=None):
    """Everything train_tts.py reports, each by a model that did not train what it judges, as far
    as the run has the checkpoints for it. tts_models: [(name, checkpoint dir)] of text-to-token
    LMs, the first the SFT model; baseline: the name the others are compared with; methods: the
    replicates of each method ({method: [names]}, finished_lms), summarised by their means."""
    out, batch = cfg.out, cfg.eval_batch
    have = lambda stage: os.path.exists(os.path.join(out, stage, "state.json"))  # noqa: E731
    model = lambda stage: load_model(os.path.join(out, stage)).to(device)  # noqa: E731
    if not have("tokenizer"):
        return print("evaluation: no tokenizer checkpoint, nothing to report")
    speech_tok = model("tokenizer")
    report_tokenizer(speech_tok, *run.dev, batch, device, log)
    for name in ("speaker", "speaker_eval"):
        if have(name):
            report_speaker(name, model(name), run.voice_classes, run.voice_sets, batch, device, log,
                           cfg.data == "builtin")
    reward_asr = token2text = None
    if have("reward_asr"):
        reward_asr = ctc_model_transcriber(model("reward_asr"), batch, device)
        report_ctc("reward_asr", reward_asr, *run.dev, log)
    if have("token2text") and speech_tok.fsq is not None:
        t2t = model("token2text")
        token2text = lambda tokens: transcribe_tokens(t2t, tokens, batch, device)  # noqa: E731
        report_ctc("token2text", lambda feats: token2text(tokenize_all(speech_tok, feats, batch, device)), *run.dev,
                   log)
    judges = load_judges(cfg, device)
    if not (tts_models and have("speaker_eval") and judges):
        return print("evaluation: the TTS rows need the lm, judge and speaker_eval checkpoints; not scored")
    print(f"judges: {', '.join(n for n, _ in judges)} ({cfg.judge or os.path.join(out, 'judge')} first); "
          f"similarity: {os.path.join(out, 'speaker_eval')}")
    models, page = [(name, load_tts(path).to(device)) for name, path in tts_models], {}
    for set_name, items in run.voice_sets.items():
        if items:
            hyps = report_tts(set_name, items, models, speech_tok, judges, model("speaker_eval"), device, batch,
                              cfg.euler_steps, cfg.seed, log, eval_sampling(cfg), page, reward_asr, token2text,
                              baseline)
            seed_means(set_name, [it["text"] for it in items], hyps, methods or {}, baseline, log)
    if page:
        path = write_page(os.path.join(out, "samples"), "nanospeechrl TTS: listen", page,
                          intro=f"The first test texts of each voice set. Transcripts by the {judges[0][0]} judge, "
                                f"errors marked against the text. Rows (d): the full TTS, one LM each.")
        print(f"listening page: {path}")


def eval_sampling(cfg):
    """The LM's sampling settings in evaluation."""
    return dict(temperature=cfg.eval_temperature, top_k=cfg.eval_top_k, top_p=cfg.eval_top_p)


def report_ctc(name, transcribe, examples, feats, log):
    """A reward model's own CER on real dev speech (Token2Text: on the tokenizer's tokens of it)."""
    r = error_counts([ex.spoken for ex in examples], transcribe(feats))
    log({"stage": f"eval_{name}", "wer": r["wer"], "cer": r["cer"], "n": len(examples)})
    print(f"{name} on dev: WER {100 * r['wer']:.1f}%  CER {100 * r['cer']:.1f}%")


def synthesis_cer(texts, conds, transcribe, cfg, euler_steps):
    """tts -> transcribe's CER of `texts` synthesised in the voices of the clips `conds`, with the
    evaluation's sampling and the same LM and flow noise at every call (a curve, or a stopping signal)."""
    def cer(tts):
        tokens, _ = tts.tokens(texts, **eval_sampling(cfg), generator=torch.Generator(tts.device).manual_seed(cfg.seed))
        mels = tts.mels(tokens, tts.voice(conds), euler_steps, torch.Generator().manual_seed(cfg.seed))
        return error_counts(texts, transcribe(mels))["cer"]
    return cer


def judge_monitor(run, items, cfg, device):
    """For --rl-eval-every: tts -> the judge's CER on 64 dev texts, each in a training voice (a
    curve to watch stability by; nothing is selected or rewarded with it)."""
    judge = load_judges(cfg, device)[0][1]  # the evaluation's first judge
    texts = [ex.text for ex in run.dev[0][:min(64, len(items))]]  # each with an RL item's voice
    return synthesis_cer(texts, [it["cond"] for it in items[:len(texts)]], judge, cfg, cfg.euler_steps)
