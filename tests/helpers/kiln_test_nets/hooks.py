"""What a user writes when the stock feeds and metrics do not fit (family ``plain``'s ``function``
feed and ``metrics``): utterances as log-mel-like frames, several per speaker, and whether the
candidate's embeddings still name each utterance's speaker."""

import numpy as np


def utterances(shape, dtype, speakers=4, per_speaker=3, seed=0):
    """Frames [1, bands, frames] per step: each speaker a fixed spectral profile, each utterance
    that profile plus its own noise."""
    rng = np.random.default_rng(seed)
    profiles = rng.normal(0.0, 2.0, size=(speakers, shape[-2], 1))
    return [(profiles[s] + rng.normal(0.0, 1.0, size=shape[-2:]))[None].astype(dtype)
            for s in range(speakers) for _ in range(per_speaker)]


def speaker_agreement(reference_steps, candidate_steps, facts):
    """Fraction of utterances whose nearest other utterance (cosine of ``embedding``) is the same
    one in the candidate as in the reference."""
    def nearest(steps):
        e = np.stack([np.ravel(s["embedding"]) for s in steps])
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        similarity = e @ e.T
        np.fill_diagonal(similarity, -np.inf)
        return similarity.argmax(axis=1)

    agree = nearest(reference_steps) == nearest(candidate_steps)
    return {"speaker_agreement": float(agree.mean()), "utterances": int(agree.size)}
