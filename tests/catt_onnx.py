"""Tiny CATT encoder-only ONNX files with random weights, for the "catt" diacritizer's tests.

catt_tashkeel 1.0.2's CATTEncoderOnly runs two sessions and these graphs keep its contract:
- encoder.onnx: `src` int64 [batch, chars] (letter ids) and `src_mask` bool [batch, 1, chars,
  chars] (its padding mask) in, `encoder_output` float [batch, chars, width] out;
- decoder.onnx: `enc_src` (the encoder's output) in, `decoder_output` float [batch, chars,
  classes] out, whose argmax per character is an index into CLASSES.
The names are those of CATT's own export (export_to_onnx.py); catt reads outputs by position,
but onnxruntime refuses a feed that names no input and a dtype or rank other than declared, so
these files check what catt feeds. A character's class here depends on its letter alone (an
embedding, then one linear layer): enough to run every step of catt's encode and decode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# catt_tashkeel 1.0.2's TashkeelTokenizer: 3 specials, 37 Buckwalter letters and <MASK> in;
# 3 specials and 15 tags out (<NT> is no mark; <SF> and the like are shadda with a haraka).
LETTER_IDS = 41
CLASSES = (
    "<PAD>", "<BOS>", "<EOS>",
    "<NT>", "<SD>", "<SDD>", "<SF>", "<SFF>", "<SK>", "<SKK>",
    "F", "K", "N", "a", "i", "o", "u", "~",
)  # fmt: skip
WIDTH = 8  # the real model's is 512; nothing outside the two files depends on it
# Off-limits logits: catt's decode drops a <PAD> prediction and then pairs the letters with the
# wrong marks, which a trained model never causes, so a random one must not either.
SPECIALS = 3
NEVER = -1e4
ALWAYS = 1e4
OPSET = 17
IR_VERSION = 8  # what onnxruntime 1.16, the oldest the [silma] extra allows, reads


def write_catt_model(folder: Path, *, seed: int = 0, always: str | None = None) -> Path:
    """Write encoder.onnx and decoder.onnx under `folder` and return it.

    Random (seeded) weights pick each letter's mark; with `always`, a class of CLASSES, that
    class wins at every letter, so a test knows the exact output.
    """
    rng = np.random.default_rng(seed)
    embedding = rng.standard_normal((LETTER_IDS, WIDTH)).astype(np.float32)
    weight = rng.standard_normal((WIDTH, len(CLASSES))).astype(np.float32)
    bias = np.zeros(len(CLASSES), np.float32)
    bias[:SPECIALS] = NEVER
    if always is not None:
        bias[CLASSES.index(always)] = ALWAYS
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(_encoder(embedding), folder / "encoder.onnx")
    onnx.save(_decoder(weight, bias), folder / "decoder.onnx")
    return folder


def _encoder(embedding: np.ndarray) -> onnx.ModelProto:
    # src_mask is declared and left unused: the real encoder's attention reads it, and catt
    # always feeds it, so the input must exist with its dtype and rank.
    graph = helper.make_graph(
        [helper.make_node("Gather", ["embedding", "src"], ["encoder_output"])],
        "catt_encoder",
        [
            helper.make_tensor_value_info("src", TensorProto.INT64, ["batch", "chars"]),
            helper.make_tensor_value_info(
                "src_mask", TensorProto.BOOL, ["batch", 1, "chars", "chars"]
            ),
        ],
        [
            helper.make_tensor_value_info(
                "encoder_output", TensorProto.FLOAT, ["batch", "chars", WIDTH]
            )
        ],
        [numpy_helper.from_array(embedding, "embedding")],
    )
    return _model(graph)


def _decoder(weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["enc_src", "weight"], ["scores"]),
            helper.make_node("Add", ["scores", "bias"], ["decoder_output"]),
        ],
        "catt_decoder",
        [helper.make_tensor_value_info("enc_src", TensorProto.FLOAT, ["batch", "chars", WIDTH])],
        [
            helper.make_tensor_value_info(
                "decoder_output", TensorProto.FLOAT, ["batch", "chars", len(CLASSES)]
            )
        ],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    return _model(graph)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    onnx.checker.check_model(model, full_check=True)  # a broken helper fails here, not in catt
    return model
