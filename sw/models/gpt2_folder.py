"""A GPT-2 model folder in the Hugging Face layout (``config.json``, ``model.safetensors``,
``tokenizer.json``), read into a :class:`~.chain.Gpt2Model` and its tokenizer.

``config.json`` gives ``n_embd``, ``n_head``, ``n_layer``, ``n_positions``, ``vocab_size``
and ``layer_norm_epsilon``. The tensors are named as ``GPT2Model`` saves them (``wte``,
``wpe``, ``h.{i}.ln_1``, ``h.{i}.attn.c_attn``, ``h.{i}.attn.c_proj``, ``h.{i}.ln_2``,
``h.{i}.mlp.c_fc``, ``h.{i}.mlp.c_proj``, ``ln_f``), with or without ``GPT2LMHeadModel``'s
``transformer.`` prefix; GPT-2's Conv1D weights are already ``(in, out)``. The LM head is
tied to ``wte``. Every problem is a :class:`~.minilm.ModelError` naming the file and what
is wrong, before any work.
"""

from __future__ import annotations

import json

import numpy as np

from .chain import Gpt2Model
from .minilm import (
    ModelError,
    _folder_path,
    _import_dependencies,
    _model_file,
    _safetensors_header,
    read_tensor,
)
from .reference import check_weights

__all__ = ["load_gpt2_folder", "read_gpt2_config"]

_CONFIG_KEYS = {"n_embd": int, "n_head": int, "n_layer": int, "n_positions": int,
                "vocab_size": int, "layer_norm_epsilon": float}
_BLOCK = {"ln1_g": "ln_1.weight", "ln1_b": "ln_1.bias", "wo": "attn.c_proj.weight",
          "bo": "attn.c_proj.bias", "ln2_g": "ln_2.weight", "ln2_b": "ln_2.bias",
          "w1": "mlp.c_fc.weight", "b1": "mlp.c_fc.bias", "w2": "mlp.c_proj.weight",
          "b2": "mlp.c_proj.bias"}


def read_gpt2_config(folder) -> dict:
    """The folder's ``config.json``, checked: the keys the loader reads, of their kinds,
    ``n_embd`` a multiple of ``n_head``."""
    path = _model_file(_folder_path(folder), "config.json", 1 << 20, "GPT-2")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path} is not a JSON file: {e}") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path} must hold a JSON object")
    for key, kind in _CONFIG_KEYS.items():
        value = config.get(key)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        if kind is int:
            ok = ok and isinstance(value, int)
        if not ok:
            raise ModelError(f"{path}: {key} must be a positive {kind.__name__}, not "
                             f"{value!r} (a GPT-2 config.json has n_embd, n_head, n_layer, "
                             f"n_positions, vocab_size, layer_norm_epsilon)")
    if config["n_embd"] % config["n_head"]:
        raise ModelError(f"{path}: n_embd {config['n_embd']} is not a multiple of n_head "
                         f"{config['n_head']}")
    return config


def load_gpt2_folder(folder) -> tuple[Gpt2Model, object, dict]:
    """The model, its tokenizer (``tokenizers.Tokenizer``) and its ``config.json``.

    Raises
    ------
    ModelError
        A missing, unreadable or corrupt file; a tensor missing, of the wrong shape, or
        not finite; a tokenizer with more tokens than ``vocab_size``.
    """
    folder = _folder_path(folder)
    config = read_gpt2_config(folder)
    weights = _model_file(folder, "model.safetensors", kind="GPT-2")
    tok_path = _model_file(folder, "tokenizer.json", 64 << 20, "GPT-2")
    table = _safetensors_header(weights)
    prefix = "transformer." if "transformer.wte.weight" in table else ""
    H, V, P = config["n_embd"], config["vocab_size"], config["n_positions"]
    F = 4 * H
    if f"{prefix}h.0.mlp.c_fc.weight" in table:
        F = int(table[f"{prefix}h.0.mlp.c_fc.weight"]["shape"][1])
    want = {"wte.weight": (V, H), "wpe.weight": (P, H), "ln_f.weight": (H,),
            "ln_f.bias": (H,)}
    for i in range(config["n_layer"]):
        want.update({f"h.{i}.attn.c_attn.weight": (H, 3 * H),
                     f"h.{i}.attn.c_attn.bias": (3 * H,),
                     **{f"h.{i}.{n}": s for n, s in (
                         ("ln_1.weight", (H,)), ("ln_1.bias", (H,)),
                         ("attn.c_proj.weight", (H, H)), ("attn.c_proj.bias", (H,)),
                         ("ln_2.weight", (H,)), ("ln_2.bias", (H,)),
                         ("mlp.c_fc.weight", (H, F)), ("mlp.c_fc.bias", (F,)),
                         ("mlp.c_proj.weight", (F, H)), ("mlp.c_proj.bias", (H,)))}})
    for name, shape in want.items():
        entry = table.get(prefix + name)
        if entry is None:
            raise ModelError(f"{weights}: tensor {prefix + name} is missing (a GPT-2 "
                             f"model.safetensors as GPT2Model saves it)")
        if tuple(entry["shape"]) != shape:
            raise ModelError(f"{weights}: tensor {prefix + name} has shape "
                             f"{tuple(entry['shape'])}, but config.json makes it {shape}")
    st, tokenizers = _import_dependencies()
    try:
        opened = st.safe_open(str(weights), framework="np")
    except Exception as e:    # the loader's own error class; the header was checked
        raise ModelError(f"{weights} cannot be read as safetensors: {e}") from None
    with opened as tensors:
        def get(name: str) -> np.ndarray:
            return read_tensor(tensors, weights, prefix + name)

        blocks = []
        for i in range(config["n_layer"]):
            w = {key: get(f"h.{i}.{name}") for key, name in _BLOCK.items()}
            qkv, bqkv = get(f"h.{i}.attn.c_attn.weight"), get(f"h.{i}.attn.c_attn.bias")
            for j, n in enumerate("qkv"):
                w[f"w{n}"] = np.ascontiguousarray(qkv[:, j * H:(j + 1) * H])
                w[f"b{n}"] = bqkv[j * H:(j + 1) * H]
            w["heads"], w["eps"] = config["n_head"], float(config["layer_norm_epsilon"])
            check_weights(w)
            blocks.append(w)
        model = Gpt2Model(wte=get("wte.weight"), wpe=get("wpe.weight"), blocks=blocks,
                          ln_f=(get("ln_f.weight"), get("ln_f.bias"),
                                float(config["layer_norm_epsilon"])))
    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(tok_path))
    except Exception as e:    # tokenizers raises a bare Exception on a bad file
        raise ModelError(f"{tok_path} is not a tokenizer file: {str(e)[:200]}") from None
    if tokenizer.get_vocab_size() > V:
        raise ModelError(f"{tok_path} has {tokenizer.get_vocab_size()} tokens, more than the "
                         f"{V} of config.json's vocab_size: the tokenizer is not this model's")
    return model, tokenizer, config
