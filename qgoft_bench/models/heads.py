"""Heads that no library ships in the form the tasks need: span-pair classification (WSC) as jiant does it.

``SpanClassifier`` follows jiant's ``SpanComparisonHead`` (used for SuperGLUE WSC): each span of tokens is pooled
by self-attention over its own tokens (one learned score per token, softmax within the span), the pooled spans are
concatenated, dropped out and classified by one linear layer.
"""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ClassifierOutput:
    """The output every classification head here returns: ``logits`` (B, num_labels)."""

    logits: torch.Tensor


class SpanClassifier(nn.Module):
    """``forward(spans, **encoder_inputs) -> ClassifierOutput``.

    ``spans`` is (B, S, 2): for each of the S spans the first and last token index (inclusive) into the encoder's
    sequence; every span must hold at least one token. The head is ``span_attention`` (hidden -> 1) and
    ``classifier`` (S * hidden -> num_labels); the encoder's pooler, if it has one, is removed (unused).
    """

    HEAD_MODULES = ("span_attention", "classifier")

    def __init__(self, encoder: nn.Module, num_labels: int, num_spans: int = 2) -> None:
        super().__init__()
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # BERT/RoBERTa skip a None pooler; its weights would count but never train
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        factory = {"device": encoder.device, "dtype": encoder.dtype}
        self.span_attention = nn.Linear(hidden, 1, **factory)
        self.dropout = nn.Dropout(getattr(encoder.config, "hidden_dropout_prob", 0.1))
        self.classifier = nn.Linear(num_spans * hidden, num_labels, **factory)

    def forward(self, spans: torch.Tensor, **inputs: torch.Tensor) -> ClassifierOutput:
        hidden = self.encoder(**inputs).last_hidden_state  # (B, T, H)
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        inside = (positions >= spans[..., :1]) & (positions <= spans[..., 1:])  # (B, S, T)
        scores = self.span_attention(hidden).squeeze(-1).float()  # (B, T)
        weights = scores[:, None, :].masked_fill(~inside, float("-inf")).softmax(-1)  # (B, S, T)
        pooled = torch.einsum("bst,bth->bsh", weights.to(hidden.dtype), hidden)
        return ClassifierOutput(logits=self.classifier(self.dropout(pooled.flatten(1))))
