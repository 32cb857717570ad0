"""
GRPO: group-relative advantages and the clipped policy loss, with the variants TRL users
know (DeepSeekMath GRPO, BNPO, Dr. GRPO, DAPO) and mixed-policy (off-policy reference) rows.

For each prompt, G completions are sampled and scored; a completion's advantage is its
reward minus the group mean (optionally divided by a std), shared by all its tokens. Per
token, with r = pi_theta / pi_old:

    term = -min(r * A, clip(r, 1 - epsilon, 1 + epsilon_high) * A) + beta * k3
    k3   = exp(ref - logp) - (ref - logp) - 1          (an unbiased, >= 0 estimate of KL;
                                                        ref - logp is clamped to +-20)

An off-policy row (e.g. the ground-truth answer placed into the group) was not sampled
from pi_old; its behaviour probability is taken as 1, so its ratio is pi_theta itself and it
is not clipped: term = -exp(logp) * A + beta * k3.

Nothing here knows the model: a training script samples completions, scores them, and hands
this module rewards, token tensors and a function that computes log-probs. train_asr.py's
speech LLM and train_tts.py's text-to-token LM call the same code.

    advantages = group_advantages(rewards)                      # (B, G)
    batch = keep_groups(tokens, lengths, mask, advantages, off_policy, ~tied_groups(rewards), G)
    metrics = grpo_update(lambda: policy_logprobs(batch), params, optimizer, batch, ref_logprobs, cfg)
"""
from dataclasses import dataclass
from typing import NamedTuple

import torch

from nanospeechrl import distributed

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")
OFF_POLICY = ("none", "reference")


@dataclass
class GRPOConfig:
    num_generations: int = 8  # G: completions per prompt (including an off-policy one, if any)
    temperature: float = 1.0  # rollout sampling temperature (log-probs are taken at it too)
    top_k: int = 0  # sample from the k most likely tokens only (0: off)
    top_p: float = 1.0  # nucleus sampling: the smallest set of tokens holding this much mass (1: off)
    max_new_tokens: int = 96  # completion budget; longer ones are truncated
    epsilon: float = 0.2  # lower clip: ratio >= 1 - epsilon
    epsilon_high: float = 0.2  # upper clip: ratio <= 1 + epsilon_high (DAPO's clip-higher: 0.28)
    beta: float = 0.04  # weight of the k3 KL to the reference model (0: no reference model needed)
    loss_type: str = "grpo"  # grpo | bnpo | dr_grpo | dapo: how token terms are averaged
    scale_rewards: str = "group"  # group | batch | none: what the advantage is divided by
    num_iterations: int = 1  # policy updates per batch of rollouts (mu); ratio != 1 only when > 1
    mask_truncated_completions: bool = False  # drop completions that hit max_new_tokens without EOS
    filter_zero_std: bool = True  # drop groups whose rewards are all equal (no learning signal)
    off_policy: str = "none"  # none | reference: one group member is the reference answer
    max_kl: float = 2.0  # stop the run after 3 steps in a row with a per-token KL to the reference above this
    min_entropy: float = 1e-3  # stop the run after 3 steps in a row with rollout entropy (nats/token) below this

    def __post_init__(self):
        for name, value, allowed in (("loss_type", self.loss_type, LOSS_TYPES),
                                     ("scale_rewards", self.scale_rewards, SCALE_REWARDS),
                                     ("off_policy", self.off_policy, OFF_POLICY)):
            if value not in allowed:
                raise ValueError(f"GRPOConfig.{name}={value!r}; choose from {', '.join(allowed)}")
        min_g = 3 if self.off_policy != "none" else 2
        if self.num_generations < min_g:
            raise ValueError(f"num_generations={self.num_generations}: a group needs at least {min_g} members "
                             f"(off_policy={self.off_policy!r}) to have a relative advantage")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature}: GRPO samples, so it must be > 0")
        if self.num_iterations < 1 or self.max_new_tokens < 1:
            raise ValueError("num_iterations and max_new_tokens must be >= 1")


def group_advantages(rewards, scale_rewards="group"):
    """rewards (B, G) -> advantages (B, G): reward - group mean, divided by the group's std
    ('group'), the whole batch's std ('batch'), or nothing ('none'); + 1e-4 guards std = 0."""
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    adv = rewards - rewards.mean(dim=1, keepdim=True)
    if scale_rewards == "group":
        adv = adv / (rewards.std(dim=1, keepdim=True) + 1e-4)
    elif scale_rewards == "batch":
        adv = adv / (rewards.std() + 1e-4)
    elif scale_rewards != "none":
        raise ValueError(f"scale_rewards={scale_rewards!r}; choose from {', '.join(SCALE_REWARDS)}")
    return adv


def policy_loss(logp, old_logp, ref_logp, advantages, mask, cfg, off_policy=None):
    """Clipped GRPO loss. logp, old_logp, ref_logp, mask: (N, T), mask 1 on completion tokens;
    advantages (N,); off_policy: optional (N,) bool marking rows not sampled from pi_old.
    ref_logp may be None when cfg.beta == 0. Returns (scalar loss, metrics dict of floats)."""
    mask = mask.to(logp.dtype)
    A = advantages.to(logp.dtype)[:, None]  # (N, 1): one advantage per completion
    off = torch.zeros_like(A, dtype=torch.bool) if off_policy is None else off_policy.to(torch.bool)[:, None]
    # Where a log-prob is unused (padding, an off-policy row's pi_old), put logp itself, so no
    # placeholder value there can overflow exp() and send inf * 0 = NaN into the gradient.
    unused = (mask == 0) | off
    old_logp = torch.where(unused, logp.detach(), old_logp)
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - cfg.epsilon, 1 + cfg.epsilon_high)
    term = -torch.min(ratio * A, clipped * A)
    term = torch.where(off, -torch.exp(logp) * A, term)  # off-policy: behaviour prob 1, no clip
    kl = torch.zeros_like(logp)
    if cfg.beta != 0:
        delta = torch.where(mask == 0, 0.0, ref_logp - logp).clamp(-20, 20)  # exp() can't overflow
        kl = torch.exp(delta) - delta - 1
        term = term + cfg.beta * kl
    n_tokens = mask.sum().clamp(min=1)
    if cfg.loss_type == "grpo":
        loss = ((term * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()
    elif cfg.loss_type in ("bnpo", "dapo"):
        loss = (term * mask).sum() / n_tokens
    elif cfg.loss_type == "dr_grpo":
        loss = (term * mask).sum() / (logp.shape[0] * cfg.max_new_tokens)
    else:
        raise ValueError(f"loss_type={cfg.loss_type!r}; choose from {', '.join(LOSS_TYPES)}")

    with torch.no_grad():  # clip statistics over on-policy tokens, as TRL reports them
        on = mask * (~off).to(mask.dtype)
        n_on = on.sum().clamp(min=1)
        low = ((ratio < 1 - cfg.epsilon) & (A < 0)).to(mask.dtype)
        high = ((ratio > 1 + cfg.epsilon_high) & (A > 0)).to(mask.dtype)
        metrics = {"kl": ((kl * mask).sum() / n_tokens).item(),
                   "clip_ratio/low_mean": ((low * on).sum() / n_on).item(),
                   "clip_ratio/high_mean": ((high * on).sum() / n_on).item(),
                   "clip_ratio/region_mean": (((low + high) * on).sum() / n_on).item(),
                   "ratio": ((ratio * on).sum() / n_on).item()}
    return loss, metrics


def with_reference_rows(rollout, targets, num_generations):
    """Mixed-policy groups: when the rollout has G - 1 samples per prompt, append each prompt's
    reference completion (target ids, ending in EOS) as its group's last row.
    -> tokens (B*G, L), lengths (B*G,), off_policy (B*G,) bool."""
    tokens, lengths = rollout.tokens, rollout.lengths
    B, G, L = len(targets), num_generations, tokens.shape[1]
    if tokens.shape[0] == B * G:  # all on-policy
        return tokens, lengths, torch.zeros(B * G, dtype=torch.bool, device=tokens.device)
    ref = torch.zeros(B, 1, L, dtype=tokens.dtype, device=tokens.device)
    for b, t in enumerate(targets):
        t = t[:L]
        ref[b, 0, :len(t)] = torch.tensor(t, dtype=tokens.dtype)
    ref_lens = torch.tensor([min(len(t), L) for t in targets], device=lengths.device)[:, None]
    tokens = torch.cat([tokens.view(B, G - 1, L), ref], dim=1).view(B * G, L)
    lengths = torch.cat([lengths.view(B, G - 1), ref_lens], dim=1).view(B * G)
    off = torch.zeros(B, G, dtype=torch.bool, device=tokens.device)
    off[:, -1] = True
    return tokens, lengths, off.view(B * G)


def completion_mask(tokens, lengths, eos_id, cfg):
    """-> mask (N, L) float, 1 on each completion's tokens (its EOS included), and truncated (N,)
    bool: completions that hit max_new_tokens without an EOS. With
    cfg.mask_truncated_completions those rows are masked out entirely (DAPO's overlong filter)."""
    N, L = tokens.shape
    mask = (torch.arange(L, device=tokens.device)[None] < lengths[:, None]).float()
    last = tokens.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
    truncated = (lengths >= L) & (last != eos_id)
    if cfg.mask_truncated_completions:
        mask = mask * (~truncated)[:, None].float()
    return mask, truncated



def tied_groups(rewards):
    """(B, G) rewards -> (B,) bool: the groups whose rewards are all equal. Their advantages
    are all 0, so they carry no learning signal (DAPO drops them)."""
    return (rewards.max(dim=1).values - rewards.min(dim=1).values) <= 1e-6


class Completions(NamedTuple):
    """What one GRPO update learns from: the completions of the groups kept, group-major."""
    prompts: torch.Tensor  # (B',) index in the step's batch of each kept group's prompt
    tokens: torch.Tensor  # (B' * G, L) completion ids, L = the longest kept completion
    lengths: torch.Tensor  # (B' * G,) tokens per completion, its EOS included
    mask: torch.Tensor  # (B' * G, L) 1 on the tokens the loss counts
    advantages: torch.Tensor  # (B' * G,)
    off_policy: torch.Tensor  # (B' * G,) bool: rows not sampled from the policy


def keep_groups(tokens, lengths, mask, advantages, off_policy, keep, num_generations):
    """The rows of the kept groups (keep (B,) bool), trimmed to the longest kept completion so
    no forward pass runs over padding -> Completions, or None when no token is left to learn from.
    tokens, mask (B*G, L); lengths, off_policy (B*G,); advantages (B, G) or (B*G,)."""
    keep = keep.to(tokens.device)
    rows = keep.repeat_interleave(num_generations)
    if mask[rows].sum() == 0:
        return None
    L = int(lengths[rows].max())
    return Completions(keep.nonzero().squeeze(1), tokens[rows, :L], lengths[rows], mask[rows, :L],
                       advantages.flatten().to(tokens.device)[rows], off_policy[rows])


def safe_step(loss_fn, parameters, optimizer, iterations=1):
    """`iterations` optimizer steps of loss_fn(i) -> (loss, metrics dict): backward, gradient
    clipping at norm 1, step. -> the last metrics with loss and grad_norm, or None as soon as a
    loss or gradient is not finite (that update is skipped)."""
    parameters = list(parameters)
    for it in range(iterations):
        loss, metrics = loss_fn(it)
        if not distributed.all_true(torch.isfinite(loss)):  # under torchrun: skipped on every rank alike
            return None
        if loss.requires_grad:  # (not on a torchrun rank with nothing to learn this step)
            loss.backward()
        distributed.sync_grads(parameters)
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        if torch.isfinite(grad_norm):
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # also: no gradient buffers ride along into the next rollout
        if not torch.isfinite(grad_norm):
            return None
    return {"loss": loss.item(), "grad_norm": grad_norm.item(), **metrics}


def grpo_update(logprobs_fn, parameters, optimizer, batch, ref_logprobs, cfg):
    """cfg.num_iterations clipped policy-gradient steps on one batch of Completions.
    logprobs_fn() -> (N, L) float log-probs of batch.tokens under the current policy,
    differentiable (the model's forward). The first iteration's values are pi_old.
    Returns metrics, or None when a loss or gradient is not finite (that update is skipped).
    Under torchrun each rank's loss is its share of the mean over all ranks' completions, and a
    rank with nothing to learn this step passes batch None and still takes part in the sums."""
    old = []

    def loss_fn(it):
        if batch is None:
            return distributed.share(torch.zeros(()), 0), {}
        logp = logprobs_fn()
        if it == 0:
            old.append(logp.detach())  # pi_old: the policy that sampled, before this batch's updates
        loss, metrics = policy_loss(logp, old[0], ref_logprobs, batch.advantages, batch.mask, cfg, batch.off_policy)
        # the unit of the loss's mean: tokens (bnpo, dapo) or completions (grpo, dr_grpo)
        units = batch.mask.sum().item() if cfg.loss_type in ("bnpo", "dapo") else batch.mask.shape[0]
        return distributed.share(loss, units), metrics

    return safe_step(loss_fn, parameters, optimizer, cfg.num_iterations)


class Watchdog:
    """Stops an RL run that diverges, naming the setting to change: 3 steps in a row with a
    non-finite loss or gradient (their updates were skipped), with the KL to the reference above
    cfg.max_kl, or with the rollouts' entropy below cfg.min_entropy (collapse: every sample alike)."""

    def __init__(self, name, path, cfg, patience=3):
        self.name, self.path, self.cfg, self.patience, self.runs = name, path, cfg, patience, {}

    def check(self, row, step):
        """row: the step's metrics (grpo_update's, rollout_metrics'). Raises SystemExit, or returns."""
        signs = {"nonfinite": "nonfinite_loss" in row, "kl": row.get("kl", 0.0) > self.cfg.max_kl,
                 "entropy": row.get("entropy", float("inf")) < self.cfg.min_entropy}
        self.runs = {k: self.runs.get(k, 0) + 1 if bad else 0 for k, bad in signs.items()}
        why = {"nonfinite": ("non-finite losses or gradients", "; their updates were skipped",
                             "a lower --rl-lr or --beta"),
               "kl": (f"steps with KL to the reference above --max-kl {self.cfg.max_kl}", f" (now {row.get('kl')})",
                      "a lower --rl-lr or a higher --beta"),
               "entropy": (f"steps with rollout entropy below --min-entropy {self.cfg.min_entropy}",
                           f" (now {row.get('entropy')}): the samples have collapsed",
                           "a lower --rl-lr, a higher --beta or --temperature")}
        for kind, n in self.runs.items():
            if n >= self.patience:
                what, detail, fix = why[kind]
                raise SystemExit(f"{self.name}: {n} {what} in a row (step {step}){detail}. Last good checkpoint: "
                                 f"{self.path}. Try {fix}.")


def rollout_metrics(rewards, parts, tied, off_policy, rollout, lengths, truncated):
    """What a GRPO step's metrics row says about its rollouts, in TRL's names. Rewards and
    lengths over the sampled completions (an off-policy reference row is left out; so are the
    rows a reward does not score, None in parts); reward_std over whole groups.
    rewards (B, G); parts {name: per-row list}; tied (B,); off_policy, lengths, truncated (B*G,);
    rollout: the sampler.Rollout of the sampled rows."""
    on = ~off_policy.cpu()

    def mean(values):
        kept = [v for v, o in zip(values, on.tolist()) if o and v is not None]
        return sum(kept) / max(1, len(kept))

    reward_std = rewards.std(dim=1).mean().item() if rewards.shape[1] > 1 else 0.0  # (a group of 1 has none)
    return {"reward": rewards.flatten()[on].mean().item(), "reward_std": reward_std,
            "frac_reward_zero_std": tied.float().mean().item(),
            **{f"rewards/{k}": mean(v) for k, v in parts.items()},
            # -mean log-prob of the sampled tokens: a Monte-Carlo estimate of the per-token entropy
            "entropy": -(rollout.logprobs.sum() / rollout.lengths.sum()).item(),
            "completions/mean_length": lengths.cpu()[on].float().mean().item(),
            "completions/clipped_ratio": truncated.cpu()[on].float().mean().item()}
