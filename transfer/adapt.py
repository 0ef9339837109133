"""Domain adaptation: a model for images from another camera, hospital or season than its labelled ones.

Given unlabelled images from where the model will be used (the target domain):

  frozen strategies    CORAL (Sun, Feng & Saenko, 2016): the cached source features are re-coloured
                       to the target features' mean and covariance, x -> (x - mu_s) C_s^-1/2 C_t^1/2 + mu_t,
                       and the head trains on the source features both as they are and aligned, so
                       it reads target images without forgetting the source ones. Seconds, on the cache.
  trainable strategies domain-adversarial training (DANN, Ganin & Lempitsky, 2015): a small domain
                       classifier reads the pooled features through a gradient reversal layer, so
                       the backbone learns features that tell the classes apart but not the domains;
                       its weight rises from 0 to 1 over training, lambda = 2 / (1 + exp(-10 p)) - 1.
                       Beside it, the two domains' pooled features are pulled to the same mean and
                       covariance (Deep CORAL, Sun & Saenko, 2016): on our shifted digits the
                       adversary alone mapped every target image to one class, and with the moments
                       tied it did not. Every layer learns at the head's rate (early layers must
                       adapt to a new camera too), every epoch runs, and the kept epoch is the
                       best on source validation images among the second half's (the warmed-up
                       start and the early epochs, barely adapted, would often win on the
                       source alone).

Whether to adapt: the shift between source and target is the project's BatchNorm feature-shift
measure (`transfer.measure`), taken between the two domains' statistics: `ADAPT_SHIFT` or more
turns adaptation on under `adaptation="auto"`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

ADAPT_SHIFT = 0.05  # source->target feature shift from which auto adapts (the same images measure ~0.01)
CORAL_RIDGE = 10.0  # added to both covariances' diagonals: a few hundred images estimate them roughly
DISCRIMINATOR_WIDTH = 256
ADVERSARIAL_WEIGHT = 0.3  # of the domain classifier's loss, beside the class loss
COVARIANCE_WEIGHT = 2500.0  # of ||C_s - C_t||^2 / d^2, the pooled features' covariances
MEAN_WEIGHT = 10.0  # of ||mu_s - mu_t||^2 / d
# measured on digits -> recoloured, blurred, noised digits (fine-tune, 32 px, 10 epochs, seeds 0-2): target
# accuracy 0.16-0.22 without adaptation, 0.35-0.56 with both terms (source 0.92-0.95 -> 0.95-0.99); with
# the adversary alone every target image went to one class


def coral_transform(source: torch.Tensor, target: torch.Tensor, ridge: float = CORAL_RIDGE) -> Callable:
    """x -> x re-coloured from the source features' mean and covariance to the target's."""

    def covariance(features: torch.Tensor) -> torch.Tensor:
        centred = features - features.mean(0)
        return centred.T @ centred / max(1, len(features) - 1) + ridge * torch.eye(features.shape[1], dtype=features.dtype)

    def power(matrix: torch.Tensor, exponent: float) -> torch.Tensor:
        values, vectors = torch.linalg.eigh(matrix)
        return vectors @ torch.diag(values.clamp_min(1e-12) ** exponent) @ vectors.T

    source, target = source.double(), target.double()
    mapping = power(covariance(source), -0.5) @ power(covariance(target), 0.5)
    source_mean, target_mean = source.mean(0), target.mean(0)
    return lambda features: ((features.double() - source_mean) @ mapping + target_mean).float()


def dann_coefficient(progress: float) -> float:
    """The adversarial weight at `progress` (0..1) through training, as in Ganin & Lempitsky (2015)."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(context, features: torch.Tensor, coefficient: float) -> torch.Tensor:
        context.coefficient = coefficient
        return features.view_as(features)

    @staticmethod
    def backward(context, gradient: torch.Tensor):
        return -context.coefficient * gradient, None


class DomainAdversarial(torch.nn.Module):
    """A timm classifier and a domain discriminator on its pooled features, behind gradient reversal.

    `model` stays the classifier the zoo saves (the discriminator is dropped after training)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.discriminator = torch.nn.Sequential(
            torch.nn.Linear(model.num_features, DISCRIMINATOR_WIDTH), torch.nn.ReLU(), torch.nn.Dropout(0.3),
            torch.nn.Linear(DISCRIMINATOR_WIDTH, 1),
        )

    def forward(self, images: torch.Tensor, coefficient: float = 1.0) -> tuple[torch.Tensor, ...]:
        """(class logits, domain logits, pooled features) of `images`."""
        features = self.model.forward_head(self.model.forward_features(images), pre_logits=True)
        logits = self.model.get_classifier()(features)
        return logits, self.discriminator(_ReverseGradient.apply(features, coefficient)).squeeze(1), features


def adaptation_loss(domain_logits: torch.Tensor, features: torch.Tensor, source_count: int) -> torch.Tensor:
    """The domain classifier's loss (source rows first, then target rows) and the moment alignment."""
    sides = torch.zeros_like(domain_logits)
    sides[source_count:] = 1.0
    adversarial = torch.nn.functional.binary_cross_entropy_with_logits(domain_logits, sides)
    source, target = features[:source_count], features[source_count:]
    width = features.shape[1]
    covariance = (torch.cov(source.T) - torch.cov(target.T)).square().sum() / width ** 2
    mean = (source.mean(0) - target.mean(0)).square().sum() / width
    return ADVERSARIAL_WEIGHT * adversarial + COVARIANCE_WEIGHT * covariance + MEAN_WEIGHT * mean
