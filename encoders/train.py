"""Contrastive training: InfoNCE / multiple-negatives ranking with in-batch and hard negatives,
and distillation from a teacher's scores.

``train`` fine-tunes a ``SentenceEncoder`` (optionally with Matryoshka dimensions) or a
``TokenEncoder`` (late-interaction MaxSim loss; projection head plus optionally the top layers).
Hard negatives come from a ``miner`` callable that the engine supplies (it searches vecdex's own
index), so this package imports no index.

Examples that carry ``candidates`` and teacher ``scores`` add a distillation term for a
TokenEncoder (ColBERTv2 / PyLate style): the KL divergence between softmax(teacher / T_teacher)
and softmax(student MaxSim / T) over the candidates, weighted by ``distill_weight`` against the
contrastive loss. ``encoders.distill`` reads teacher files.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .base import Encoder
from .sentence import SentenceEncoder
from .token import TokenEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One training triple; ``negative`` is optional (in-batch negatives always apply).

    ``candidates`` and ``scores`` (same length, >= 2) are a teacher's scores over documents for
    this query: the distillation target. Empty for plain contrastive examples."""

    query: str
    positive: str
    negative: str | None = None
    candidates: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()


@dataclass
class TrainConfig:
    """Training knobs. ``train_layers``: top transformer layers trained for a TokenEncoder
    (0 = projection only, -1 = all); SentenceEncoders train all layers.

    Distillation (examples with teacher scores): the loss is ``distill_weight`` x KL +
    (1 - ``distill_weight``) x InfoNCE; teacher scores are divided by ``teacher_temperature``,
    student scores (mean MaxSim over query tokens) by ``temperature``. ``distill_losses`` gets the
    KL term of every step that had one (the figure to watch fall).

    ``encode_doc_len`` (TokenEncoder): the document length the saved model and its checkpoints
    encode at (0: the training length); see ``save_trained``."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 2e-5
    head_lr: float = 1e-3
    temperature: float = 0.05
    warmup: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    matryoshka_dims: tuple[int, ...] = ()
    train_layers: int = 2
    refresh_negatives: bool = False
    checkpoint_dir: str | None = None
    encode_doc_len: int = 0
    max_grad_norm: float = 1.0
    distill_weight: float = 1.0
    teacher_temperature: float = 1.0
    losses: list[float] = field(default_factory=list)
    distill_losses: list[float] = field(default_factory=list)


Miner = Callable[[Encoder, list[Example]], list[Example]]


def info_nce(q: torch.Tensor, d: torch.Tensor, temperature: float) -> torch.Tensor:
    """Multiple-negatives ranking loss: query i's positive is document i; every other document
    in ``d`` (the other positives, then any hard negatives) is a negative."""
    logits = (q @ d.T) / temperature
    return F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device))


def maxsim_scores(
    q: torch.Tensor, q_mask: torch.Tensor, d: torch.Tensor, d_mask: torch.Tensor
) -> torch.Tensor:
    """Late-interaction scores (nq, nd): sum over query tokens of the best document token."""
    sim = torch.einsum("qid,njd->qnij", q, d)
    sim = sim.masked_fill(~d_mask[None, :, None, :], float("-inf"))
    best = sim.max(-1).values.masked_fill(~q_mask[:, None, :], 0.0)
    return best.sum(-1)


def _sentence_loss(enc: SentenceEncoder, batch: list[Example], cfg: TrainConfig) -> torch.Tensor:
    q = enc.embed_for_training([e.query for e in batch], True)
    docs = [e.positive for e in batch] + [e.negative for e in batch if e.negative]
    d = enc.embed_for_training(docs, False)
    dims = cfg.matryoshka_dims or (q.shape[1],)
    loss = q.new_zeros(())
    for dim in dims:
        loss = loss + info_nce(
            F.normalize(q[:, :dim], dim=-1), F.normalize(d[:, :dim], dim=-1), cfg.temperature
        )
    return loss / len(dims)


def kl_divergence(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(softmax(teacher) || softmax(student)) over the last axis, averaged over rows; both are
    logits (already divided by their temperatures)."""
    return (
        F.kl_div(
            F.log_softmax(student, -1),
            F.log_softmax(teacher, -1),
            log_target=True,
            reduction="none",
        )
        .sum(-1)
        .mean()
    )


def _token_loss(enc: TokenEncoder, batch: list[Example], cfg: TrainConfig) -> torch.Tensor:
    qb = enc.tokenize([e.query for e in batch], True)
    q = enc.forward(qb)
    qm = enc.keep_mask(qb, True).to(q.device)
    # Mean rather than sum over query tokens: scores stay in [-1, 1] like a cosine, so one
    # temperature suits both encoders and queries of any length.
    q_len = qm.sum(1, keepdim=True).clamp(min=1)
    taught = [i for i, e in enumerate(batch) if e.candidates]
    weight = cfg.distill_weight if taught else 0.0
    loss = q.new_zeros(())
    if weight < 1.0:
        docs = [e.positive for e in batch] + [e.negative for e in batch if e.negative]
        db = enc.tokenize(docs, False)
        d, dm = enc.forward(db), enc.keep_mask(db, False).to(q.device)
        scores = maxsim_scores(q, qm, d, dm) / q_len / cfg.temperature
        target = torch.arange(len(batch), device=q.device)
        loss = loss + (1.0 - weight) * F.cross_entropy(scores, target)
    if weight > 0.0:
        kl = _token_kl(enc, q, qm, q_len, [batch[i] for i in taught], taught, cfg)
        cfg.distill_losses.append(float(kl.detach()))
        loss = loss + weight * kl
    return loss


def _token_kl(
    enc: TokenEncoder,
    q: torch.Tensor,
    qm: torch.Tensor,
    q_len: torch.Tensor,
    taught: list[Example],
    rows: list[int],
    cfg: TrainConfig,
) -> torch.Tensor:
    """The KL term over each taught query's own candidates (one document forward for all)."""
    db = enc.tokenize([c for e in taught for c in e.candidates], False)
    d, dm = enc.forward(db), enc.keep_mask(db, False).to(q.device)
    total = q.new_zeros(())
    start = 0
    for row, e in zip(rows, taught, strict=True):
        n = len(e.candidates)
        s = maxsim_scores(
            q[row : row + 1], qm[row : row + 1], d[start : start + n], dm[start : start + n]
        )
        student = s[0] / q_len[row] / cfg.temperature
        teacher = torch.tensor(e.scores, dtype=student.dtype, device=q.device)
        total = total + kl_divergence(student[None], teacher[None] / cfg.teacher_temperature)
        start += n
    return total / len(taught)


def _parameters(enc: Encoder, cfg: TrainConfig) -> list[dict]:
    if isinstance(enc, TokenEncoder):
        for p in enc.transformer.parameters():
            p.requires_grad_(cfg.train_layers < 0)
        layers = enc.transformer.encoder.layer
        top = (
            []
            if cfg.train_layers == 0
            else list(layers[-cfg.train_layers :])
            if cfg.train_layers > 0
            else []
        )
        for layer in top:
            for p in layer.parameters():
                p.requires_grad_(True)
        body = [p for p in enc.transformer.parameters() if p.requires_grad]
        groups = [{"params": list(enc.proj.parameters()), "lr": cfg.head_lr}]
        if body:
            groups.append({"params": body, "lr": cfg.lr})
        return groups
    if isinstance(enc, SentenceEncoder):
        return [{"params": [p for p in enc.model.parameters() if p.requires_grad], "lr": cfg.lr}]
    raise TypeError(f"cannot train a {type(enc).__name__}")


def train(
    encoder: Encoder,
    examples: Sequence[Example],
    config: TrainConfig | None = None,
    *,
    miner: Miner | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> list[float]:
    """Trains ``encoder`` in place; returns the loss of every step.

    Args:
        encoder: a SentenceEncoder or TokenEncoder.
        examples: (query, positive[, negative]) triples, optionally with a teacher's
            ``candidates`` and ``scores`` (distillation; TokenEncoder only).
        config: hyper-parameters; defaults to ``TrainConfig()``. With ``checkpoint_dir`` set,
            the encoder is saved to ``checkpoint_dir/epoch-N`` after every epoch.
        miner: fills in hard negatives; called before the first epoch, and before each later epoch
            when ``config.refresh_negatives``.
        progress: called after each step with (step, total_steps, loss).

    Raises:
        ValueError: no examples, a batch size below 2 (in-batch negatives need two), a bad
            temperature or distillation weight, or an example whose candidates and teacher
            scores differ in number (or are fewer than 2).
        TypeError: teacher scores given for an encoder other than a TokenEncoder.

    Example:
        >>> enc = TokenEncoder("default", dim=128)
        >>> ex = [Example("q", "pos", candidates=("pos", "other"), scores=(3.0, 1.0))] * 4
        >>> losses = train(enc, ex, TrainConfig(epochs=2, checkpoint_dir="ckpt"))  # doctest: +SKIP
    """
    cfg = config or TrainConfig()
    examples = list(examples)
    if not examples:
        raise ValueError("no training examples")
    if cfg.batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 for in-batch negatives, got {cfg.batch_size}")
    if cfg.temperature <= 0:
        raise ValueError(f"temperature must be positive, got {cfg.temperature}")
    if not 0.0 <= cfg.distill_weight <= 1.0:
        raise ValueError(f"distill_weight must be in [0, 1], got {cfg.distill_weight}")
    if cfg.teacher_temperature <= 0:
        raise ValueError(f"teacher_temperature must be positive, got {cfg.teacher_temperature}")
    if cfg.encode_doc_len:
        if not isinstance(encoder, TokenEncoder):
            raise ValueError(
                f"encode_doc_len is a token encoder's document length, not a "
                f"{type(encoder).__name__}'s"
            )
        encoder.check_length("encode_doc_len", cfg.encode_doc_len)
    for e in examples:
        if e.candidates or e.scores:
            if not isinstance(encoder, TokenEncoder):
                raise TypeError(
                    f"distillation trains a TokenEncoder, not a {type(encoder).__name__}"
                )
            if len(e.candidates) != len(e.scores) or len(e.candidates) < 2:
                raise ValueError(
                    f"example {e.query!r}: {len(e.candidates)} candidates and "
                    f"{len(e.scores)} teacher scores (need the same number, at least 2)"
                )
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    loss_fn = _token_loss if isinstance(encoder, TokenEncoder) else _sentence_loss
    groups = _parameters(encoder, cfg)
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warm = max(1, int(cfg.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    module = encoder.trainable()
    losses: list[float] = []
    cfg.distill_losses = []
    step = 0
    # Negatives the caller gave (e.g. a --pairs file's third column) are kept; the miner fills
    # in the others (and refreshes only those).
    given = [e for e in examples if e.negative]
    to_mine = [replace(e, negative=None) for e in examples if not e.negative]
    for epoch in range(cfg.epochs):
        if miner is not None and to_mine and (epoch == 0 or cfg.refresh_negatives):
            module.eval()
            mined = miner(encoder, to_mine)
            if len(mined) != len(to_mine):
                raise ValueError(f"the miner returned {len(mined)} examples for {len(to_mine)}")
            examples = given + list(mined)
        module.train()
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order), cfg.batch_size):
            batch = [examples[i] for i in order[start : start + cfg.batch_size]]
            if len(batch) < 2:
                continue
            loss = loss_fn(encoder, batch, cfg)  # type: ignore[arg-type]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(
                [p for g in groups for p in g["params"]], cfg.max_grad_norm
            )
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step, total, losses[-1])
        module.eval()
        if cfg.checkpoint_dir:
            ckpt = Path(cfg.checkpoint_dir) / f"epoch-{epoch + 1}"
            save_trained(encoder, ckpt, cfg)
            log.info("saved checkpoint %s", ckpt)
    module.eval()
    cfg.losses = losses
    return losses


def save_trained(encoder: Encoder, directory: str | Path, cfg: TrainConfig) -> None:
    """Saves a trained ``encoder``. With ``cfg.encode_doc_len`` the saved token encoder cuts
    documents at that length from then on, while training read them at its own ``doc_max_len``:
    train short (an epoch's cost grows with the document length), encode long."""
    if not cfg.encode_doc_len or not isinstance(encoder, TokenEncoder):
        encoder.save(directory)
        return
    trained_at = encoder.doc_max_len
    encoder.doc_max_len = cfg.encode_doc_len
    try:
        encoder.save(directory)
    finally:
        encoder.doc_max_len = trained_at
