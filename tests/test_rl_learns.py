"""The whole GRPO loop learns: rollouts from the real sampler, group advantages, group filtering,
the clipped loss with a KL to a frozen reference, AdamW. Each path (train_asr.py's grpo(), the
speech LLM; train_tts.py's tts_rl(), the token LM) takes a tiny random model and a toy reward,
the share of one chosen token among a completion's tokens, from chance to above 0.8. The formulas
are tested in test_grpo.py; this is the test that the loop around them moves a policy."""
import copy

import torch

from nanospeechrl.asr.speechlm import ProjectorConfig, SpeechLM
from nanospeechrl.devices import autocast
from nanospeechrl.encoder import EncoderConfig
from nanospeechrl.grpo import (GRPOConfig, completion_mask, group_advantages, grpo_update, keep_groups, safe_step,
                               tied_groups)
from nanospeechrl.llm import LLM, LLMConfig
from nanospeechrl.tts.diffro import grpo_diffro_loss
from nanospeechrl.tts.token_lm import TokenLM, completion_logits, sample_tokens, speech_tokens

CPU = torch.device("cpu")
B, G, STEPS, LR = 4, 8, 40, 3e-3  # prompts a step, completions a prompt
GCFG = GRPOConfig(num_generations=G, max_new_tokens=8, beta=0.04)
V, EOS, TASK, TARGET = 12, 0, 1, 7  # ASR: a 12-token vocabulary; chance of TARGET is 1/11 per token


def share(rows, token):
    """The toy reward: the fraction of each row's tokens that are `token` (an empty row scores 0)."""
    return [row.count(token) / len(row) if row else 0.0 for row in rows]


def asr_grpo(lr, steps=STEPS):
    """train_asr.py's grpo() on a tiny random SpeechLM and fixed random "log-mel" -> mean reward per step."""
    torch.manual_seed(0)
    enc = EncoderConfig(d_model=32, n_layer=1, n_head=2, conv_kernel=3, conv_channels=8, dropout=0.0)
    llm = LLMConfig(vocab_size=V, n_layer=1, n_head=2, n_kv_head=1, n_embd=32, max_seq_len=64)
    model = SpeechLM(enc, LLM(llm), ProjectorConfig(stack=2))
    feats, feat_lens = torch.randn(B, 40, 80), torch.tensor([40, 36, 32, 28])  # 4 "utterances", fixed
    prompts = [[TASK]] * B
    # From here on, grpo()'s setup and step, in its order (no Phases: on a CPU its moves are no-ops).
    model.encoder.requires_grad_(False)
    reference = copy.deepcopy(model).requires_grad_(False)
    del reference.encoder, reference.ctc_head
    policy = torch.nn.ModuleDict({"projector": model.projector, "llm": model.llm})
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    model.eval()  # as grpo() does: pi_old, pi_theta and pi_ref must each be one fixed function
    reference.eval()
    sampling = dict(temperature=GCFG.temperature, top_k=GCFG.top_k, top_p=GCFG.top_p, generator=gen)
    history = []
    for _ in range(steps):
        with torch.no_grad(), autocast(CPU):
            hidden, hidden_lens = model.encoder(feats, feat_lens)
            rollout = model.generate_from_audio(*model.projector(hidden, hidden_lens), prompts, EOS,
                                                GCFG.max_new_tokens, num_samples=G, **sampling)
        tokens, lengths = rollout.tokens, rollout.lengths
        off_policy = torch.zeros(B * G, dtype=torch.bool)  # off_policy "none": every row was sampled
        # the completion without its EOS, as tokenizer.decode would hand it to the reward
        rows = [[t for t in row[:n] if t != EOS] for row, n in zip(tokens.tolist(), lengths.tolist())]
        rewards = torch.tensor(share(rows, TARGET)).view(B, G)
        history.append(rewards.mean().item())
        advantages = group_advantages(rewards, GCFG.scale_rewards)
        keep = ~tied_groups(rewards)
        mask, _ = completion_mask(tokens, lengths, EOS, GCFG)
        batch = keep_groups(tokens, lengths, mask, advantages, off_policy, keep, G)
        if batch is None:  # every group tied: nothing to learn from this step
            continue
        inputs = (hidden[batch.prompts], hidden_lens[batch.prompts], [prompts[i] for i in batch.prompts.tolist()],
                  batch.tokens, batch.lengths)
        with torch.no_grad():
            ref_logprobs = reference.completion_logprobs(*inputs, GCFG.temperature)
        metrics = grpo_update(lambda: model.completion_logprobs(*inputs, GCFG.temperature),
                              policy.parameters(), opt, batch, ref_logprobs, GCFG)
        assert metrics is not None, "a non-finite loss or gradient: the update was skipped"
    return history


N_CODES = 8  # TTS: 8 speech tokens + EOS; chance of TARGET is 1/8 per speech token
TEXT = [[N_CODES + 1 + i for i in p] for p in ([0, 3, 4, 1], [0, 5, 1], [0, 6, 7, 1], [0, 8, 1])]  # <tts> .. <bos>


def tts_grpo(lr, steps=STEPS):
    """train_tts.py's tts_rl() with --rl grpo on a tiny random TokenLM -> mean reward per step."""
    torch.manual_seed(0)
    lm = TokenLM(LLMConfig(vocab_size=N_CODES + 1 + 10, n_layer=1, n_head=2, n_kv_head=1, n_embd=32,
                           max_seq_len=64), N_CODES).requires_grad_(True)
    reference = copy.deepcopy(lm).requires_grad_(False)
    opt = torch.optim.AdamW(lm.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    lm.eval()  # as tts_rl() does
    reference.eval()
    max_ratio = 1.0  # caps: ceil(1.0 * text tokens) + 8 = 9 or 10 speech tokens
    history = []
    for _ in range(steps):
        with torch.no_grad(), autocast(CPU):
            rollout, capped = sample_tokens(lm, TEXT, max_ratio, G, GCFG.temperature, GCFG.top_k, GCFG.top_p, gen)
        speech = speech_tokens(rollout, lm.eos_id)
        rewards = torch.tensor(share(speech, TARGET)).view(B, G)  # in place of token2mel + the reward ASR
        history.append(rewards.mean().item())
        advantages = group_advantages(rewards, GCFG.scale_rewards)
        keep = ~tied_groups(rewards)
        L = rollout.tokens.shape[1]  # tts_rl's mask: every token up to the length (a capped row has no EOS)
        mask = (torch.arange(L)[None] < rollout.lengths[:, None]).float()
        off = torch.zeros_like(capped)
        batch = keep_groups(rollout.tokens, rollout.lengths, mask, advantages, off, keep, G)
        if batch is None:
            continue
        kept = [TEXT[i] for i in batch.prompts.tolist()]
        with torch.no_grad(), autocast(CPU):
            ref_logits = completion_logits(reference, kept, batch.tokens, batch.lengths).float()
        no_diffro, old = torch.zeros_like(batch.off_policy), []  # --rl grpo: no row gets DiffRO's loss

        def loss_fn(it):  # no Token2Text or labels: DiffRO's part is off
            return grpo_diffro_loss(lm, None, kept, batch, ref_logits, old, None, True, no_diffro, 0.0, GCFG)

        with autocast(CPU):
            metrics = safe_step(loss_fn, lm.parameters(), opt, GCFG.num_iterations)
        assert metrics is not None, "a non-finite loss or gradient: the update was skipped"
    return history


def test_asr_grpo_loop_raises_the_reward_from_chance():
    """The speech LLM's GRPO loop (SpeechLM rollouts, grpo_update with completion_logprobs and a KL
    to the frozen SFT copy) takes the share of one token id from about chance to > 0.8."""
    history = asr_grpo(LR)
    assert history[0] < 0.3, history  # a random model: about 1 token in 11
    assert sum(history[-3:]) / 3 > 0.8, history  # the last 3 steps' rollouts, 96 completions


def test_tts_grpo_loop_raises_the_reward_from_chance():
    """The token LM's GRPO loop (sample_tokens rollouts, grpo_diffro_loss's GRPO part through
    completion_logits + token_logprobs, safe_step) takes the share of one speech token from chance to > 0.8."""
    history = tts_grpo(LR)
    assert history[0] < 0.3, history  # a random model: about 1 speech token in 8
    assert sum(history[-3:]) / 3 > 0.8, history
