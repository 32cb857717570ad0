"""
DiffRO: differentiable reward optimisation of the text-to-token LM (CosyVoice 3, arXiv 2507.05911).

No audio is sampled and no reward is estimated from samples: the reward model reads the LM's
token distributions directly, so its gradient reaches the LM's logits.

    tokens   = a sequence the policy sampled (its rollout), fed back with teacher forcing
    logits   = policy(prompt + tokens)              one distribution per speech-token position
    one_hot  = relax(logits, tokens)                straight-through Gumbel-softmax, tau = 1
    reward   = log P(text | one_hot @ E)            E: Token2Text's token-embedding table
    loss     = (-reward + beta * sum_t KL(pi_t || pi_ref_t)) / n_tokens

relax's forward value is a hard one-hot sample, so Token2Text sees exactly what it was trained
on (one token per position); its backward is the gradient of the soft sample
softmax((logits + g) / tau), which is how the reward's preference for other tokens flows into
the logits. The KL is exact, summed over the whole vocabulary at every position, not the
single-sample k3 estimate GRPO uses. DiffRO cannot teach when to stop (the positions are the
rollout's): GRPO's duration reward and the length cap cover that.

Which hard tokens: the rollout's own. A fresh Gumbel draw at each position would score a
sequence nobody sampled: with GRPO + DiffRO, the rows GRPO scored (and kept for a positive
advantage) would not be the sequences DiffRO scores, and the teacher-forced prefix would not
be the relaxed sequence's own. So the hard value is the rollout's token, and the Gumbel noise
is drawn conditioned on that token being the argmax (`conditional_gumbel`: the top-down
construction of Maddison et al. 2014, as in Paulus et al. 2020's Gumbel-Rao estimator). When
the rollout sampled at temperature 1 from every token, as TTS RL does, the pair (hard, soft) has
exactly the distribution of a fresh draw's, so DiffRO alone loses nothing; at another
temperature or with top-k it is the same estimator conditioned on the token the policy chose.
"""
import torch
import torch.nn.functional as F

from nanospeechrl.grpo import policy_loss
from nanospeechrl.tts.token_lm import completion_logits, token_logprobs


def gumbel(shape, generator=None, device=None):
    """Standard Gumbel noise -log(-log U), U ~ Uniform(0, 1)."""
    u = torch.rand(shape, generator=generator).to(device)
    return -torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-7)))


class _StraightThrough(torch.autograd.Function):
    """Forward: the hard value, exactly. Backward: the gradient goes to the soft value unchanged.
    (hard + soft - soft.detach() would round 1 to 0.99999994 now and then.)"""

    @staticmethod
    def forward(ctx, hard, soft):
        return hard

    @staticmethod
    def backward(ctx, grad):
        return None, grad


def conditional_gumbel(logits, tokens, generator=None):
    """logits + Gumbel noise, conditioned on argmax = tokens: (..., V) logits, (...) token ids ->
    (..., V) perturbed logits z with z.argmax(-1) == tokens, distributed as logits + g given that
    event. The maximum of logits + g is Gumbel(logsumexp(logits)) and independent of where it is;
    every other entry is logits + g' truncated below that maximum. Differentiable in logits."""
    logits = logits.float()
    top = logits.logsumexp(-1, keepdim=True) + gumbel(logits.shape[:-1] + (1,), generator, logits.device)
    below = -torch.logaddexp(-top, -(logits + gumbel(logits.shape, generator, logits.device)))
    return torch.where(F.one_hot(tokens, logits.shape[-1]).bool(), top, below)


def relax(logits, tau=1.0, generator=None, tokens=None):
    """Straight-through Gumbel-softmax: (..., V) logits -> (..., V) one-hot. Forward: exactly
    one_hot(argmax(logits + g)), or one_hot(tokens) when given (g then drawn conditioned on it);
    backward: the gradient of softmax((logits + g) / tau)."""
    z = logits.float() + gumbel(logits.shape, generator, logits.device) if tokens is None else \
        conditional_gumbel(logits, tokens, generator)
    soft = (z / tau).softmax(dim=-1)
    hard = F.one_hot(soft.argmax(dim=-1) if tokens is None else tokens, logits.shape[-1]).to(soft.dtype)
    return _StraightThrough.apply(hard, soft)


def full_kl(logits, ref_logits, mask):
    """KL(pi || pi_ref) summed over the vocabulary at each position -> (N, L), 0 where mask is 0."""
    logp, ref = logits.float().log_softmax(-1), ref_logits.float().log_softmax(-1)
    return (logp.exp() * (logp - ref)).sum(-1) * mask


def diffro_loss(logits, ref_logits, mask, text_logprob_fn, beta=0.1, generator=None, n_relaxed=None, tokens=None):
    """The DiffRO loss of N teacher-forced sequences. logits, ref_logits (N, L, V) of the policy
    and the frozen reference at the L speech-token positions; mask (N, L) 1 on real positions;
    text_logprob_fn(one_hot (N, L, n_relaxed), mask) -> (N,) log P(text | tokens) (Token2Text,
    frozen); n_relaxed: relax only the first n_relaxed entries (the speech tokens, not EOS),
    while the KL covers the whole vocabulary; tokens (N, L): the sequences the logits were
    teacher-forced on, the hard values (None: a fresh draw). -> (loss, metrics)."""
    if tokens is not None:  # positions past the speech tokens (EOS, padding) are masked: any id there
        tokens = torch.where(mask.bool(), tokens, 0).clamp(max=logits[..., :n_relaxed].shape[-1] - 1)
    one_hot = relax(logits[..., :n_relaxed], 1.0, generator, tokens)
    reward = text_logprob_fn(one_hot, mask)  # (N,)
    kl = full_kl(logits, ref_logits, mask).sum(1)  # (N,)
    n = mask.sum(1).clamp(min=1)
    loss = ((-reward + beta * kl) / n).mean()
    return loss, {"diffro/reward": reward.mean().item(), "diffro/kl": (kl / n).mean().item()}


def grpo_diffro_loss(lm, token2text, prompts, batch, ref_logits, old, labels, use_grpo, diffro_rows, beta, gcfg,
                     generator=None):
    """The TTS RL update's loss on one batch of grpo.Completions, one teacher-forced forward for
    both: GRPO's clipped policy loss + KL (if use_grpo) plus DiffRO's loss on the rows diffro_rows
    (N,) bool (all: both-nofilter; positive advantage: both). old: [] on the first iteration,
    then pi_old's log-probs; labels: each row's CTC labels of its text; ref_logits (N, L, V)."""
    logits = completion_logits(lm, prompts, batch.tokens, batch.lengths)  # (N, L, n_codes + 1)
    loss, metrics = logits.new_zeros((), dtype=torch.float32), {}
    if use_grpo:
        logp = token_logprobs(logits, batch.tokens, batch.lengths, gcfg.temperature)
        if not old:
            old.append(logp.detach())  # pi_old: the policy that sampled, before this batch's updates
        ref_logp = token_logprobs(ref_logits, batch.tokens, batch.lengths, gcfg.temperature)
        loss, metrics = policy_loss(logp, old[0], ref_logp, batch.advantages, batch.mask, gcfg)
    speech = batch.mask * (batch.tokens != lm.eos_id)  # DiffRO's positions: the speech tokens
    rows = diffro_rows & (speech.sum(1) > 0)
    if rows.any():
        kept = [labels[i] for i in rows.nonzero().squeeze(1).tolist()]
        targets = torch.tensor([c for t in kept for c in t], device=logits.device)
        target_lens = torch.tensor([len(t) for t in kept], device=logits.device)

        def text_logprob(one_hot, mask):  # log P(text | tokens) under the frozen Token2Text
            return token2text.logprob_of_text(one_hot, mask.sum(1).long(), targets, target_lens)

        d_loss, d_metrics = diffro_loss(logits[rows], ref_logits[rows], speech[rows], text_logprob, beta,
                                        generator, lm.n_codes, batch.tokens[rows])  # the rollout's own tokens
        loss, metrics = loss + d_loss, {"kl": d_metrics["diffro/kl"], **metrics, **d_metrics,  # GRPO's kl if any
                                        "diffro/rows": rows.float().mean().item()}
    return loss, metrics
