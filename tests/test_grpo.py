import math
import statistics

import pytest
import torch

from nanospeechrl import grpo
from nanospeechrl.grpo import LOSS_TYPES, GRPOConfig, group_advantages, policy_loss

N, T, MAX_NEW = 6, 7, 9
LENGTHS = [7, 2, 5, 1, 6, 4]  # ragged; row 3 has a single token
ADV = [1.3, -0.7, 0.4, -1.5, 0.9, -0.2]
OFF_ROW = 4


def make_batch(seed=0):
    """float64 (N, T) logp / old_logp / ref_logp, advantages (N,), ragged mask (N, T)."""
    g = torch.Generator().manual_seed(seed)
    old = -(torch.rand(N, T, generator=g, dtype=torch.float64) * 3 + 0.05)
    logp = old + (torch.rand(N, T, generator=g, dtype=torch.float64) - 0.5) * 1.4  # ratio in [0.50, 2.01]
    ref = logp + (torch.rand(N, T, generator=g, dtype=torch.float64) - 0.5) * 1.6
    mask = (torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None]).double()
    return logp, old, ref, torch.tensor(ADV, dtype=torch.float64), mask


def off_mask(with_off):
    if not with_off:
        return None
    off = torch.zeros(N, dtype=torch.bool)
    off[OFF_ROW] = True
    return off


def naive(logp, old, ref, adv, mask, cfg, off=None):
    """Pure-Python loss, d loss / d logp and metrics, token by token, from the docstrings."""
    logp, old, adv, mask = logp.tolist(), old.tolist(), adv.tolist(), mask.tolist()
    ref = ref.tolist() if ref is not None else None
    off = off.tolist() if off is not None else [False] * len(logp)
    lo, hi = 1 - cfg.epsilon, 1 + cfg.epsilon_high
    n_rows = len(logp)
    total_tokens = sum(sum(row) for row in mask)
    terms = [[0.0] * len(row) for row in logp]
    dterms = [[0.0] * len(row) for row in logp]
    k3s, ratios, lows, highs, n_on = [], [], 0, 0, 0
    for i, row in enumerate(logp):
        A = adv[i]
        for j, lp in enumerate(row):
            if not mask[i][j]:
                continue
            if off[i]:
                p = math.exp(lp)
                term, dterm = -p * A, -p * A
            else:
                r = math.exp(lp - old[i][j])
                c = min(max(r, lo), hi)
                unclipped, clipped = r * A, c * A
                term = -min(unclipped, clipped)
                # the gradient flows only through r, and only when the unclipped branch is the min
                dterm = -r * A if (lo <= r <= hi or unclipped <= clipped) else 0.0
                n_on += 1
                ratios.append(r)
                lows += r < lo and A < 0
                highs += r > hi and A > 0
            if cfg.beta != 0:
                d = ref[i][j] - lp
                k3 = math.exp(d) - d - 1
                k3s.append(k3)
                term += cfg.beta * k3
                dterm += cfg.beta * (1 - math.exp(d))
            terms[i][j], dterms[i][j] = term, dterm

    def weight(i):
        if cfg.loss_type == "grpo":
            return 1 / (max(1, sum(mask[i])) * n_rows)
        if cfg.loss_type in ("bnpo", "dapo"):
            return 1 / total_tokens
        assert cfg.loss_type == "dr_grpo"
        return 1 / (n_rows * cfg.max_new_tokens)

    loss = sum(weight(i) * t for i, row in enumerate(terms) for t in row)
    grad = [[weight(i) * d for d in row] for i, row in enumerate(dterms)]
    metrics = {"kl": sum(k3s) / total_tokens if k3s else 0.0,
               "clip_ratio/low_mean": lows / n_on, "clip_ratio/high_mean": highs / n_on,
               "clip_ratio/region_mean": (lows + highs) / n_on, "ratio": sum(ratios) / n_on}
    return loss, torch.tensor(grad, dtype=torch.float64), metrics


def cfg_for(loss_type, beta, **kw):
    return GRPOConfig(loss_type=loss_type, beta=beta, epsilon=0.2, epsilon_high=0.28,
                      max_new_tokens=MAX_NEW, **kw)


# --- config -----------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [dict(loss_type="ppo"), dict(scale_rewards="std"), dict(off_policy="gt"),
                                dict(num_generations=1), dict(num_generations=2, off_policy="reference"),
                                dict(num_iterations=0), dict(max_new_tokens=0)])
def test_config_rejects_bad_values(kw):
    with pytest.raises(ValueError):
        GRPOConfig(**kw)


def test_config_accepts_valid_values():
    for lt in LOSS_TYPES:
        assert GRPOConfig(loss_type=lt).loss_type == lt
    GRPOConfig(num_generations=2)
    GRPOConfig(num_generations=3, off_policy="reference", scale_rewards="batch")


# --- advantages ---------------------------------------------------------------------------

REWARDS = [[0.1, 0.9, 0.5, 0.3], [1.0, 1.0, 1.0, 1.0], [-2.0, 0.0, 3.5, 0.25]]


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_match_naive(scale):
    flat = [r for g in REWARDS for r in g]
    batch_std = statistics.stdev(flat)
    want = []
    for g in REWARDS:
        mean, std = statistics.fmean(g), statistics.stdev(g)
        div = {"group": std + 1e-4, "batch": batch_std + 1e-4, "none": 1.0}[scale]
        want.append([(r - mean) / div for r in g])
    got = group_advantages(REWARDS, scale)
    assert got.shape == (3, 4)
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(got).all()
    assert got[1].abs().max() < 1e-6  # all-equal group: no signal, and no NaN


def test_group_advantages_all_equal_batch_is_finite_zero():
    for scale in ("group", "batch", "none"):
        adv = group_advantages(torch.full((2, 3), 0.7), scale)
        assert torch.isfinite(adv).all() and adv.abs().max() < 1e-5


def test_group_advantages_bad_scale():
    with pytest.raises(ValueError):
        group_advantages(REWARDS, "std")


# --- policy loss --------------------------------------------------------------------------

@pytest.mark.parametrize("with_off", [False, True])
def test_batch_exercises_both_clip_sides(with_off):
    """Guard for the loss tests: on-policy tokens hit every clip case."""
    logp, old, ref, adv, mask = make_batch()
    r = torch.exp(logp - old)
    on = mask.bool()
    if with_off:
        on[OFF_ROW] = False
    A = adv[:, None].expand(N, T)
    for cond in (r < 0.8, r > 1.28):
        for sign in (A < 0, A > 0):
            assert (cond & sign & on).any()
    assert ((r > 0.8) & (r < 1.28) & on).any()


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("with_off", [False, True])
def test_policy_loss_value_and_grad_match_naive(loss_type, beta, with_off):
    logp, old, ref, adv, mask = make_batch()
    cfg, off = cfg_for(loss_type, beta), off_mask(with_off)
    want_loss, want_grad, want_metrics = naive(logp, old, ref, adv, mask, cfg, off)
    logp = logp.clone().requires_grad_(True)
    loss, metrics = policy_loss(logp, old, ref, adv, mask, cfg, off_policy=off)
    assert loss.dim() == 0 and loss.dtype == torch.float64
    assert loss.item() == pytest.approx(want_loss, abs=1e-6)
    loss.backward()
    torch.testing.assert_close(logp.grad, want_grad, atol=1e-6, rtol=0)
    assert (logp.grad[mask == 0] == 0).all()
    for key, value in want_metrics.items():
        if key == "kl" and beta == 0:
            continue  # no reference model: nothing to measure
        assert metrics[key] == pytest.approx(value, abs=1e-6), key


def test_loss_types_differ_only_in_normalisation():
    logp, old, ref, adv, mask = make_batch()
    losses = {lt: policy_loss(logp, old, ref, adv, mask, cfg_for(lt, 0.04))[0].item() for lt in LOSS_TYPES}
    assert losses["bnpo"] == losses["dapo"]
    total = mask.sum().item()
    assert losses["dr_grpo"] == pytest.approx(losses["bnpo"] * total / (N * MAX_NEW), abs=1e-12)
    assert abs(losses["grpo"] - losses["bnpo"]) > 1e-4  # ragged rows: per-row mean != token mean


def test_off_policy_row_uses_pi_theta_unclipped():
    logp, old, ref, adv, mask = make_batch()
    cfg = cfg_for("bnpo", 0.0)
    off = off_mask(True)
    a, _ = policy_loss(logp, old, None, adv, mask, cfg, off_policy=off)
    b, _ = policy_loss(logp, old, None, adv, mask, cfg)
    m = mask[OFF_ROW].bool()
    r = torch.exp(logp[OFF_ROW] - old[OFF_ROW])
    on_term = -torch.min(r * adv[OFF_ROW], r.clamp(0.8, 1.28) * adv[OFF_ROW])
    off_term = -torch.exp(logp[OFF_ROW]) * adv[OFF_ROW]
    assert (a - b).item() == pytest.approx(((off_term - on_term)[m].sum() / mask.sum()).item(), abs=1e-12)
    # all-False off mask is the same as none
    c, _ = policy_loss(logp, old, None, adv, mask, cfg, off_policy=torch.zeros(N, dtype=torch.bool))
    assert c.item() == b.item()


def test_single_iteration_is_plain_policy_gradient():
    logp, _, _, adv, mask = make_batch(1)
    lengths = torch.tensor(LENGTHS, dtype=torch.float64)
    logp = logp.requires_grad_(True)
    loss, metrics = policy_loss(logp, logp.detach(), None, adv, mask, cfg_for("grpo", 0.0))
    assert loss.item() == pytest.approx(-adv.mean().item(), abs=1e-12)
    loss.backward()
    want = (-adv / (lengths * N))[:, None] * mask  # d/dlogp of -r*A averaged per row, then over rows
    torch.testing.assert_close(logp.grad, want, atol=1e-12, rtol=0)
    assert metrics["ratio"] == 1.0
    assert metrics["clip_ratio/region_mean"] == 0.0

    logp.grad = None
    loss, _ = policy_loss(logp, logp.detach(), None, adv, mask, cfg_for("bnpo", 0.0))
    assert loss.item() == pytest.approx(-(adv * lengths).sum().item() / lengths.sum().item(), abs=1e-12)
    loss.backward()
    torch.testing.assert_close(logp.grad, (-adv / lengths.sum())[:, None] * mask, atol=1e-12, rtol=0)


def test_kl_metric_is_masked_mean_of_k3():
    logp, old, ref, adv, mask = make_batch(2)
    _, metrics = policy_loss(logp, old, ref, adv, mask, cfg_for("grpo", 0.1))
    d = ref - logp
    k3 = torch.exp(d) - d - 1
    assert (k3[mask.bool()] > 0).all()
    assert metrics["kl"] == pytest.approx((k3 * mask).sum().item() / mask.sum().item(), abs=1e-9)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("with_off", [False, True])
def test_masked_tokens_never_matter(loss_type, with_off):
    logp, old, ref, adv, mask = make_batch()
    cfg, off = cfg_for(loss_type, 0.04), off_mask(with_off)
    g = torch.Generator().manual_seed(7)
    pad = mask == 0

    def run(lp, ol, rf):
        lp = lp.clone().requires_grad_(True)
        loss, metrics = policy_loss(lp, ol, rf, adv, mask, cfg, off_policy=off)
        loss.backward()
        return loss.item(), lp.grad, metrics

    base = run(logp, old, ref)
    garbage = [t.clone() for t in (logp, old, ref)]
    for t in garbage:
        t[pad] = (torch.rand(int(pad.sum()), generator=g, dtype=torch.float64) - 0.5) * 8
    other = run(*garbage)
    assert other[0] == pytest.approx(base[0], abs=1e-12)
    torch.testing.assert_close(other[1], base[1], atol=1e-12, rtol=0)
    assert (other[1][pad] == 0).all()
    assert other[2] == pytest.approx(base[2], abs=1e-12)


def test_ref_logp_none_with_beta_zero():
    logp, old, ref, adv, mask = make_batch()
    for lt in LOSS_TYPES:
        cfg = cfg_for(lt, 0.0)
        a, m = policy_loss(logp, old, None, adv, mask, cfg)
        b, _ = policy_loss(logp, old, ref, adv, mask, cfg)
        assert torch.isfinite(a) and a.item() == b.item()
        assert m["kl"] == 0.0


def test_float32_inputs_and_float_mask():
    logp, old, ref, adv, mask = make_batch()
    cfg = cfg_for("grpo", 0.04)
    a, _ = policy_loss(logp, old, ref, adv, mask, cfg)
    b, _ = policy_loss(logp.float(), old.float(), ref.float(), adv.float(), mask.bool(), cfg)
    assert b.dtype == torch.float32
    assert b.item() == pytest.approx(a.item(), abs=1e-5)


def test_unused_logprob_placeholders_cannot_poison_the_gradient():
    """Extreme old/ref log-probs at masked slots or on off-policy rows are never used: finite loss and gradient."""
    cfg = GRPOConfig(beta=0.04)
    logp = torch.full((2, 3), -1.0, requires_grad=True)
    old = torch.tensor([[-1.0, -1.0, -200.0], [-200.0, -200.0, -200.0]])
    ref = torch.tensor([[-1.0, -1.0, 200.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    loss, m = policy_loss(logp, old, ref, torch.tensor([1.0, -1.0]), mask, cfg, off_policy=torch.tensor([False, True]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all() and m["ratio"] == 1.0
    assert logp.grad[0, 2] == 0  # the masked slot gets no gradient


def test_tied_groups_and_keep_groups_match_a_loop():
    """keep_groups takes the rows of the kept groups, trimmed to their longest completion:
    checked against a per-row loop; None when the kept rows hold no token to learn from."""
    rewards = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.5], [2.0, 2.0, 2.0 + 1e-7], [0.2, 0.1, 0.3]])
    tied = grpo.tied_groups(rewards)
    assert tied.tolist() == [True, False, True, False]  # 1e-7 apart counts as equal
    G, L = 3, 7
    lengths = torch.tensor([7, 2, 3, 5, 1, 4, 7, 7, 7, 2, 6, 3])  # longest kept (groups 1, 3): 6
    tokens = torch.randint(1, 50, (12, L))
    mask = (torch.arange(L)[None] < lengths[:, None]).float()
    advantages = grpo.group_advantages(rewards)
    off = torch.zeros(12, dtype=torch.bool)
    off[5] = True
    batch = grpo.keep_groups(tokens, lengths, mask, advantages, off, ~tied, G)
    rows = [r for r in range(12) if not tied[r // G]]
    assert batch.prompts.tolist() == [1, 3]
    assert batch.tokens.equal(torch.stack([tokens[r, :6] for r in rows]))
    assert batch.mask.equal(torch.stack([mask[r, :6] for r in rows]))
    assert batch.lengths.tolist() == [lengths[r].item() for r in rows]
    assert batch.advantages.tolist() == [advantages[r // G, r % G].item() for r in rows]
    assert batch.off_policy.tolist() == [off[r].item() for r in rows]
    assert grpo.keep_groups(tokens, lengths, mask * 0, advantages, off, ~tied, G) is None
    assert grpo.keep_groups(tokens, lengths, mask, advantages, off, torch.zeros(4, dtype=torch.bool), G) is None


def test_grpo_update_takes_any_logprob_function():
    """grpo_update knows no model: a table of logits as the 'policy' moves toward the positive-advantage
    completion, and a non-finite loss skips the update."""
    torch.manual_seed(0)
    logits = torch.zeros(2, 4, requires_grad=True)  # (L, V): one distribution per position
    opt = torch.optim.SGD([logits], lr=1.0)
    tokens = torch.tensor([[1, 2], [3, 0]])
    batch = grpo.Completions(torch.tensor([0]), tokens, torch.tensor([2, 2]), torch.ones(2, 2),
                             torch.tensor([1.0, -1.0]), torch.zeros(2, dtype=torch.bool))

    def logprobs_fn():
        return logits.log_softmax(-1).expand(2, 2, 4).gather(2, tokens[..., None]).squeeze(-1)

    cfg = grpo.GRPOConfig(beta=0.0)
    before = logprobs_fn().detach()
    metrics = grpo.grpo_update(logprobs_fn, [logits], opt, batch, None, cfg)
    after = logprobs_fn().detach()
    assert metrics["grad_norm"] > 0 and metrics["ratio"] == 1.0
    assert (after[0] > before[0]).all() and (after[1] < before[1]).all()
    snapshot = logits.detach().clone()
    assert grpo.grpo_update(lambda: logprobs_fn() * float("nan"), [logits], opt, batch, None, cfg) is None
    assert logits.detach().equal(snapshot)


def test_watchdog_stops_a_diverging_run_and_names_the_setting():
    from nanospeechrl.grpo import Watchdog
    cfg = GRPOConfig(max_kl=0.5, min_entropy=0.01)
    dog = Watchdog("stage2", "out/asr/stage2", cfg)
    for step, kl in enumerate([0.6, 0.7, 0.1, 0.8, 0.9]):  # a good step in between resets the count
        dog.check({"kl": kl, "entropy": 1.0}, step)
    with pytest.raises(SystemExit, match=r"3 steps with KL to the reference above --max-kl 0.5 .* higher --beta"):
        dog.check({"kl": 3.0, "entropy": 1.0}, 5)
    dog = Watchdog("rl-grpo", "out/tts/rl-grpo", cfg)
    dog.check({"kl": 0.0, "entropy": 0.001}, 0)
    dog.check({"kl": 0.0, "entropy": 0.001}, 1)
    with pytest.raises(SystemExit, match="rollout entropy below --min-entropy 0.01 .*collapsed.*--temperature"):
        dog.check({"kl": 0.0, "entropy": 0.0}, 2)
    dog = Watchdog("rl-grpo", "out/tts/rl-grpo", cfg)
    for step in range(2):
        dog.check({"nonfinite_loss": step + 1, "entropy": 1.0}, step)
    with pytest.raises(SystemExit, match="3 non-finite losses or gradients.*Last good checkpoint: out/tts/rl-grpo"):
        dog.check({"nonfinite_loss": 3, "entropy": 1.0}, 2)
