"""Analyses of why a fine-tuned model inherits its pretrained source's non-robustness.

Representation similarity (nonrobust_ext.analysis.similarity re-exports .cka, .cca, .layer_comparison):
    collect_activations      layer outputs of a model on a data set, [N, D] per layer (forward hooks; .activations)
    linear_cka               linear CKA, biased or debiased (.cka)
    MinibatchCKA, CKAMatrix  minibatch (debiased) CKA accumulated over batches, and its layer-by-layer result (.cka)
    cca, CCAResult, svcca, pwcca            canonical correlations and their SVCCA / PWCCA summaries (.cca)
    layer_similarity         per-layer similarity of two models (e.g. pretrained vs fine-tuned; .layer_comparison)
    minibatch_cka            minibatch CKA between all layers of two models (.layer_comparison)
    plot_layer_similarity    their plots (needs matplotlib)

Non-robust features (nonrobust_ext.analysis.features, .robust_datasets, .frequency, .transfer, .confidence):
    feature_usefulness, FeatureUsefulness     per-feature usefulness E[y f(x)] clean vs under attack (Ilyas et al.)
    robust_dataset, non_robust_dataset        D_R (representation matching) and D_NR (targeted attack, relabelled)
    train_and_test, representation_distance   train a fresh model on a constructed set, test on the real one
    frequency_decomposition, accuracy_by_frequency, perturbation_spectrum, adversarial_spectrum,
    band_limited_attack, band_limited_robustness   radial low/high-pass analysis
    transfer_matrix, TransferMatrix           robust accuracy of every target on every source's attacks
    confidence                                true-label softmax probability, clean vs adversarial
    plot_feature_usefulness, plot_accuracy_by_frequency, plot_perturbation_spectra, plot_confidence
                                              plots (need matplotlib; TransferMatrix.plot too)

Every entry point reads its inputs through the private ``_inputs`` module, so bad input is refused the same
way everywhere: a TypeError or ValueError naming the argument, NaN/Inf images or features refused, x and y of
different lengths refused, and no statistic computed over zero samples.
"""

from __future__ import annotations

from .activations import collect_activations
from .confidence import confidence, plot_confidence
from .features import FeatureUsefulness, feature_usefulness, plot_feature_usefulness, usefulness_from_moments
from .frequency import (
    accuracy_by_frequency,
    adversarial_spectrum,
    band_limited_attack,
    band_limited_robustness,
    frequency_decomposition,
    perturbation_spectrum,
    plot_accuracy_by_frequency,
    plot_perturbation_spectra,
    radius_grid,
)
from .robust_datasets import non_robust_dataset, representation_distance, robust_dataset, train_and_test
from .similarity import (
    CCAResult,
    CKAMatrix,
    MinibatchCKA,
    cca,
    layer_similarity,
    linear_cka,
    minibatch_cka,
    plot_layer_similarity,
    pwcca,
    svcca,
)
from .transfer import TransferMatrix, transfer_matrix

__all__ = [
    "CCAResult",
    "CKAMatrix",
    "FeatureUsefulness",
    "MinibatchCKA",
    "TransferMatrix",
    "accuracy_by_frequency",
    "adversarial_spectrum",
    "band_limited_attack",
    "band_limited_robustness",
    "cca",
    "collect_activations",
    "confidence",
    "feature_usefulness",
    "frequency_decomposition",
    "layer_similarity",
    "linear_cka",
    "minibatch_cka",
    "non_robust_dataset",
    "perturbation_spectrum",
    "plot_accuracy_by_frequency",
    "plot_confidence",
    "plot_feature_usefulness",
    "plot_layer_similarity",
    "plot_perturbation_spectra",
    "pwcca",
    "radius_grid",
    "representation_distance",
    "robust_dataset",
    "svcca",
    "train_and_test",
    "transfer_matrix",
    "usefulness_from_moments",
]
