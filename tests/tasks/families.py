"""One tiny task per model family users bring: Hugging Face BERT, RoBERTa, DistilBERT, GPT-2,
LLaMA and ViT classifiers (random-init configs, trained by slimsearch in seconds), a
torchvision-style residual CNN and an LSTM, each used exactly as the family's code calls it.

Text families take ``input_ids`` + ``attention_mask`` as named inputs (the last tokens
padded); the label is whether most tokens are in the upper half of the vocabulary. Images
are scikit-learn's digits (8x8, one channel), offline.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn

from slimsearch.pipelines import Task

LENGTH, VOCAB = 8, 120
TEXT_FAMILIES = ("bert", "roberta", "distilbert", "gpt2", "llama")
TRAINING = {"teacher_epochs": 6, "lr": 3e-3}


def _hf_text_model(family: str) -> nn.Module:
    import transformers as hf

    common = {"vocab_size": VOCAB, "num_labels": 2, "pad_token_id": 0}
    if family == "bert":
        return hf.BertForSequenceClassification(hf.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=LENGTH, **common))
    if family == "roberta":
        return hf.RobertaForSequenceClassification(hf.RobertaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=LENGTH + 2, **common))
    if family == "distilbert":
        return hf.DistilBertForSequenceClassification(hf.DistilBertConfig(
            dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=LENGTH, **common))
    if family == "gpt2":
        return hf.GPT2ForSequenceClassification(hf.GPT2Config(
            n_embd=32, n_layer=2, n_head=4, n_positions=LENGTH, bos_token_id=1, eos_token_id=1, use_cache=False,
            **common))
    if family == "llama":
        return hf.LlamaForSequenceClassification(hf.LlamaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
            max_position_embeddings=LENGTH, use_cache=False, **common))
    raise ValueError(family)


def text_task(family: str, seed: int = 0) -> Task:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (700, LENGTH), generator=generator)
    labels = ((ids >= VOCAB // 2).sum(dim=1) > LENGTH // 2).long()
    ids[:, -2:] = 0  # padding, masked out
    mask = (ids != 0).long()

    def split(rows: slice) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return {"input_ids": ids[rows], "attention_mask": mask[rows]}, labels[rows]

    return Task(name=f"family-{family}", train=split(slice(0, 500)), val=split(slice(500, 600)),
                test=split(slice(600, 700)), teacher_architecture=lambda: _hf_text_model(family),
                input_names=("input_ids", "attention_mask"), training_defaults=TRAINING, fingerprint="v1")


def _digits(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_digits(return_X_y=True)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8)[order] / 16.0
    return x, torch.tensor(labels)[order]


def _image_splits(seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    x, y = _digits(seed)
    return {"train": (x[:1200], y[:1200]), "val": (x[1200:1500], y[1200:1500]), "test": (x[1500:], y[1500:])}


def vit_task(seed: int = 0) -> Task:
    import transformers as hf

    config = hf.ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=64, num_labels=10)
    return Task(name="family-vit", **_image_splits(seed), teacher_architecture=lambda: hf.ViTForImageClassification(config),
                training_defaults=TRAINING, fingerprint="v1")


class BasicBlock(nn.Module):
    """torchvision's ResNet block: two 3x3 convolutions, BatchNorm, a 1x1 shortcut when the shape changes."""

    def __init__(self, inputs: int, outputs: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.downsample = (nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))
                           if stride != 1 or inputs != outputs else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.downsample(x))


class ResNetLike(nn.Module):
    def __init__(self, width: float = 1.0, depth: int = 2):
        super().__init__()
        channels = [max(4, round(c * width)) for c in (16, 32, 64)][:depth]
        self.stem = nn.Sequential(nn.Conv2d(1, channels[0], 3, 1, 1, bias=False), nn.BatchNorm2d(channels[0]), nn.ReLU())
        blocks, previous = [], channels[0]
        for index, count in enumerate(channels):
            blocks.append(BasicBlock(previous, count, 1 if index == 0 else 2))
            previous = count
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(previous, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layers(self.stem(x)).mean(dim=(2, 3)))


def resnet_task(seed: int = 0) -> Task:
    return Task(name="family-resnet", **_image_splits(seed), teacher_architecture=lambda: ResNetLike(1.0, 3),
                student_architecture=lambda width, depth: ResNetLike(width, depth), training_defaults=TRAINING,
                fingerprint="v1")


class LstmClassifier(nn.Module):
    def __init__(self, width: float = 1.0, depth: int = 1):
        super().__init__()
        dim = max(4, round(32 * width))
        self.embed = nn.Embedding(VOCAB, dim)
        self.lstm = nn.LSTM(dim, dim, num_layers=depth, batch_first=True)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 2))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.embed(ids))[0].mean(dim=1))


def lstm_task(seed: int = 0) -> Task:
    text = text_task("bert", seed)
    plain = {name: (getattr(text, name)[0]["input_ids"], getattr(text, name)[1]) for name in ("train", "val", "test")}
    return Task(name="family-lstm", **plain, teacher_architecture=LstmClassifier,
                student_architecture=lambda width, depth: LstmClassifier(width, depth), training_defaults=TRAINING,
                fingerprint="v1")


def bert(seed: int) -> Task:
    return text_task("bert", seed)


def roberta(seed: int) -> Task:
    return text_task("roberta", seed)


def distilbert(seed: int) -> Task:
    return text_task("distilbert", seed)


def gpt2(seed: int) -> Task:
    return text_task("gpt2", seed)


def llama(seed: int) -> Task:
    return text_task("llama", seed)
