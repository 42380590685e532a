"""Procedural synthetic colour fundus photographs (Med-AIGC)."""
from engine.synth.captions import build_caption, label_caption
from engine.synth.dataset import SyntheticFundusStream
from engine.synth.render import SyntheticFundus, render_fundus
from engine.synth.schema import (CONDITION_FLAGS, CONDITIONS, LABEL_COLUMNS, labels_to_classes,
                                 normalise_labels)
from engine.synth.writer import generate_dataset
from engine.synth.benchmark import condition_class, write_benchmark

__all__ = ["LABEL_COLUMNS", "CONDITION_FLAGS", "CONDITIONS", "labels_to_classes", "normalise_labels",
           "render_fundus", "SyntheticFundus", "build_caption", "label_caption", "SyntheticFundusStream",
           "generate_dataset", "condition_class", "write_benchmark"]
