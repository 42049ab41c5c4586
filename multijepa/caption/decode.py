"""Decoding captions: batched beam search (beam 1 is greedy) and sampling (for self-critical
training), one code path for `caption eval`, `caption predict` and training.

Beam search keeps `beam` hypotheses per input. A hypothesis that emits eos is finished: it keeps
its score and only ever extends with padding. Hypotheses rank by their summed log-probability
while searching, and finished ones by log-probability / length ** length_penalty at the end
(length counts the tokens after bos, eos included). `no_repeat_ngram` = n forbids a token that
would repeat an n-gram already in the hypothesis. The decoder runs on the whole prefix at every
step (no cache): captions are tens of tokens. Sampling for self-critical training keeps no graph;
the sampled captions are scored in one teacher-forced pass (`sequence_logprob`).
"""

from __future__ import annotations

import torch


def _banned(seqs: torch.Tensor, n: int) -> list[set[int]]:
    """Per row of seqs (R, t): the tokens that would complete an n-gram the row already holds."""
    out: list[set[int]] = []
    for row in seqs.tolist():
        prefix = tuple(row[len(row) - n + 1:]) if n > 1 else ()
        out.append({row[i + n - 1] for i in range(len(row) - n + 1) if tuple(row[i:i + n - 1]) == prefix})
    return out


@torch.no_grad()
def beam_search(model, x: torch.Tensor, beam: int = 3, max_len: int = 24, length_penalty: float = 1.0,
                no_repeat_ngram: int = 0) -> torch.Tensor:
    """Inputs (B, ...) -> token ids (B, <= max_len) after bos, each row ending in eos then padding
    (or cut at max_len)."""
    memories, valid = model.encode(x)
    B, K = x.shape[0], beam
    memories = [m.repeat_interleave(K, 0) for m in memories]  # (B*K, N, W)
    valid = None if valid is None else valid.repeat_interleave(K, 0)
    device = memories[0].device
    seqs = torch.full((B * K, 1), model.bos_id, dtype=torch.long, device=device)  # (B*K, t)
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live hypothesis per input at the start
    done = torch.zeros(B * K, dtype=torch.bool, device=device)
    lengths = torch.zeros(B * K, device=device)
    for _ in range(max_len):
        logp = model.decoder(seqs, memories, valid)[:, -1].float().log_softmax(-1)  # (B*K, V)
        if no_repeat_ngram > 0 and seqs.shape[1] >= no_repeat_ngram:
            for r, banned in enumerate(_banned(seqs, no_repeat_ngram)):
                if banned:
                    logp[r, list(banned)] = float("-inf")
        logp[done] = float("-inf")
        logp[done, model.pad_id] = 0.0  # a finished hypothesis only extends with padding, score unchanged
        V = logp.shape[-1]
        cand = (scores.view(B * K, 1) + logp).view(B, K * V)
        scores, flat = cand.topk(K, dim=1)  # (B, K)
        origin = (flat // V + torch.arange(B, device=device)[:, None] * K).view(-1)  # (B*K,) source rows
        token = (flat % V).view(-1, 1)
        seqs = torch.cat([seqs[origin], token], 1)
        lengths = lengths[origin] + (~done[origin]).float()
        done = done[origin] | (token.view(-1) == model.eos_id)
        if bool(done.all()):
            break
    final = scores.view(-1) / lengths.clamp_min(1) ** length_penalty if length_penalty else scores.view(-1)
    best = final.view(B, K).argmax(1) + torch.arange(B, device=device) * K  # (B,)
    return seqs[best, 1:]


@torch.no_grad()
def sample(model, x: torch.Tensor, n: int, max_len: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n captions sampled per input -> ids (B*n, T) after bos: eos, then padding (self-critical
    training). `generator` (on the model's device) makes the draws repeatable, e.g. seeded by the
    step for an exact resume. Drawn without a graph; `sequence_logprob` scores them with one."""
    memories, valid = model.encode(x)
    memories = [m.repeat_interleave(n, 0) for m in memories]
    valid = None if valid is None else valid.repeat_interleave(n, 0)
    R = memories[0].shape[0]
    seqs = torch.full((R, 1), model.bos_id, dtype=torch.long, device=memories[0].device)
    done = torch.zeros(R, dtype=torch.bool, device=seqs.device)
    for _ in range(max_len):
        logp = model.decoder(seqs, memories, valid)[:, -1].float().log_softmax(-1)  # (R, V)
        token = torch.multinomial(logp.exp(), 1, generator=generator).view(-1)
        token = torch.where(done, torch.full_like(token, model.pad_id), token)
        seqs = torch.cat([seqs, token[:, None]], 1)
        done = done | (token == model.eos_id)
        if bool(done.all()):
            break
    return seqs[:, 1:]


def sequence_logprob(model, x: torch.Tensor, ids: torch.Tensor, n: int = 1) -> torch.Tensor:
    """The summed log-probability (R,) of each caption ids (R = B*n, T; after bos, up to and with
    its eos) given its input (each input's n captions in a row), in one teacher-forced pass that
    keeps the graph: with no dropout anywhere it equals the sum of the per-step log-probabilities
    of the decoding loop, at 1/T of the backward's cost."""
    memories, valid = model.encode(x)
    memories = [m.repeat_interleave(n, 0) for m in memories]
    valid = None if valid is None else valid.repeat_interleave(n, 0)
    bos = torch.full_like(ids[:, :1], model.bos_id)
    logp = model.decoder(torch.cat([bos, ids[:, :-1]], 1), memories, valid).float().log_softmax(-1)  # (R, T, V)
    picked = logp.gather(2, ids[:, :, None]).squeeze(2)  # (R, T)
    eos = (ids == model.eos_id).long()
    live = (eos.cumsum(1) - eos) == 0  # up to and with the first eos
    return (picked * live).sum(1)
