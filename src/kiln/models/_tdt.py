"""Host-side transducer decoding shared by the Parakeet families: NeMo's greedy TDT loop, and the
agreement figures used to compare token streams of two backends."""

from __future__ import annotations

from typing import Callable

import numpy as np

def tdt_greedy(encoder: np.ndarray, encoder_length: int, decoder: Callable, joint_step: Callable,
               *, blank_id: int, state_shape, h_shape, max_symbols: int, record: list | None = None) -> dict:
    """NeMo's ``GreedyTDTInfer._greedy_decode`` on the host.

    ``encoder [d_model, T]``; ``decoder(target, h, c) -> (g [1,H,1], h, c)``; ``joint_step(f [1,D,1],
    g) -> (token_id, token_prob, duration)``. The decoder state advances only when a non-blank token
    is emitted (a blank keeps the last non-blank token's output and state); the start step feeds
    blank (the embedding's zero padding row) with zero state. After a blank with duration 0 the frame
    advances by 1; after ``max_symbols`` symbols at one frame it advances by 1 as well (NeMo's rule).
    """
    h = np.zeros(h_shape, np.float32)
    c = np.zeros(state_shape, np.float32)
    g, h_next, c_next = decoder(blank_id, h, c)
    tokens, durations, frames, probs = [], [], [], []
    t = 0
    while t < encoder_length:
        symbols = 0
        skip = 1
        need_loop = True
        while need_loop and symbols < max_symbols:
            f = encoder[:, t:t + 1][None].astype(np.float32)
            token, prob, skip = joint_step(f, g)
            if record is not None:
                record.append({"frame": t, "decoder_step": g, "encoder_step": f})
            if token != blank_id:
                tokens.append(int(token))
                durations.append(int(skip))
                frames.append(int(t))
                probs.append(float(prob))
                h, c = h_next, c_next
                g, h_next, c_next = decoder(int(token), h, c)
            symbols += 1
            t += skip
            need_loop = skip == 0
        if symbols == max_symbols:
            t += 1
    return {"tokens": tokens, "durations": durations, "frames": frames, "token_probs": probs}


def edit_distance(a: list, b: list) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def agreement(reference: list, candidate: list) -> dict:
    n = max(len(reference), len(candidate))
    same = sum(1 for x, y in zip(reference, candidate) if x == y)
    return {"position_agreement": 1.0 if n == 0 else same / n,
            "exact_match": list(reference) == list(candidate),
            "edit_distance": edit_distance(list(reference), list(candidate))}

