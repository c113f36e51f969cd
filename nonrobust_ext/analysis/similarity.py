r"""Representation similarity between layers of two models: one import for every measure.

The study's evidence that a fine-tuned model inherits its pretrained source's features is layer-wise similarity
between the two models on the same inputs. Every measure compares two activation matrices ``X [N, D1]`` and
``Y [N, D2]`` whose rows are the same N inputs (the feature dimensions may differ), e.g. as returned by
:func:`nonrobust_ext.analysis.collect_activations`. They live in one module per method:

- :mod:`.cka` -- **linear CKA** (Kornblith et al. 2019), biased and debiased (unbiased HSIC, Song et al. 2012;
  Nguyen et al. 2021), and its minibatch accumulator :class:`MinibatchCKA`;
- :mod:`.cca` -- **CCA**, **SVCCA** (Raghu et al. 2017) and **PWCCA** (Morcos et al. 2018);
- :mod:`.layer_comparison` -- the same measures between the layers of two *models*: :func:`layer_similarity`,
  :func:`minibatch_cka` (a layer-by-layer matrix) and :func:`plot_layer_similarity`.

This module re-exports them all under their public names.
"""

from __future__ import annotations

from .cca import CCAResult, cca, pwcca, svcca
from .cka import CKAMatrix, MinibatchCKA, linear_cka
from .layer_comparison import layer_similarity, minibatch_cka, plot_layer_similarity

__all__ = [
    "CCAResult",
    "CKAMatrix",
    "MinibatchCKA",
    "cca",
    "layer_similarity",
    "linear_cka",
    "minibatch_cka",
    "plot_layer_similarity",
    "pwcca",
    "svcca",
]
