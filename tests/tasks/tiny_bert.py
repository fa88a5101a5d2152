"""A tiny randomly initialised Hugging Face BERT classifier on token ids (fast stand-in for MiniLM).

Same module structure as the pretrained all-MiniLM-L6-v2 task (``BertModel`` encoder,
mean pooling over the attention mask, linear head), a hundredth of its size.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel

from slimsearch.pipelines import Task

LENGTH, VOCAB = 8, 120


class TinyBert(nn.Module):
    def __init__(self, layers: int = 2, heads: int = 4, hidden: int = 32):
        super().__init__()
        config = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=2 * hidden, max_position_embeddings=LENGTH, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0)
        self.encoder = BertModel(config, add_pooling_layer=False)
        self.head = nn.Linear(hidden, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).unsqueeze(-1).float()
        tokens = self.encoder(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
        return self.head((tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0))


def make_task(seed: int) -> Task:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (600, LENGTH), generator=generator)
    labels = ((ids >= VOCAB // 2).sum(dim=1) > LENGTH // 2).long()
    return Task(name="tiny-bert", train=(ids[:400], labels[:400]), val=(ids[400:500], labels[400:500]),
                test=(ids[500:], labels[500:]), teacher_architecture=TinyBert,
                student_architecture=lambda width, depth: TinyBert(layers=depth, hidden=max(4, round(32 * width))))


class TinyBertTwoInputs(TinyBert):
    """The same classifier with the Hugging Face calling convention: ids and mask as two inputs."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).float()
        return self.head((tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0))


def make_two_input_task(seed: int) -> Task:
    """``input_ids`` + ``attention_mask`` (last tokens padded), declared as named inputs."""
    base = make_task(seed)

    def named(ids: torch.Tensor) -> dict[str, torch.Tensor]:
        ids = ids.clone()
        ids[:, -2:] = 0  # padding
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}

    return Task(name="tiny-bert-2in", train=(named(base.train[0]), base.train[1]), val=(named(base.val[0]), base.val[1]),
                test=(named(base.test[0]), base.test[1]), teacher_architecture=TinyBertTwoInputs,
                student_architecture=lambda width, depth: TinyBertTwoInputs(layers=depth, hidden=max(4, round(32 * width))),
                input_names=("input_ids", "attention_mask"), fingerprint="v1")


def make_hf_classifier_task(seed: int) -> Task:
    """A Hugging Face ``BertForSequenceClassification`` used as it comes: its forward returns a
    ``SequenceClassifierOutput``, it takes ``input_ids`` + ``attention_mask``, and the task gives
    no student family (students can only be cut from the teacher)."""
    from transformers import BertForSequenceClassification

    two = make_two_input_task(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=LENGTH, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, num_labels=2)
    return Task(name="tiny-bert-hf", train=two.train, val=two.val, test=two.test, input_names=two.input_names,
                teacher_architecture=lambda: BertForSequenceClassification(config))
