"""Classification inference results as one CSV: per image, the class probabilities and the predicted class(es)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.data import MetaTensor
from monai.utils import (
    IgniteInfo,
    PostFix,
    convert_to_tensor,
    evenly_divisible_all_gather,
    min_version,
    optional_import,
    string_list_all_gather,
)

from s4mi_monai.distributed import is_main_process
from s4mi_monai.io import atomic_write

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

FILENAME_KEY = "filename_or_obj"


class ProbabilityCSVWriter:
    """Write ``image,<class_1>,...,<class_C>,prediction`` rows, sorted by image, at the evaluator's ``COMPLETED``.

    Attach to an inference evaluator whose postprocessing already turned ``pred`` into probabilities
    (softmax, or sigmoid for ``multi_label``). The image is the source filename from the meta data of
    ``batch[image_key]``; the prediction is the most probable class, or for ``multi_label`` the
    ``;``-joined classes with probability above ``threshold``. Works with decollated (list of per-sample
    dicts) and collated (batch dict) batches; in a distributed run rank 0 writes the gathered rows.
    """

    def __init__(
        self,
        output_path: str,
        class_names: Sequence[str],
        multi_label: bool = False,
        image_key: str = "image",
        pred_key: str = "pred",
        threshold: float = 0.5,
    ) -> None:
        self.output_path = output_path
        self.class_names = list(class_names)
        self.multi_label = multi_label
        self.image_key = image_key
        self.pred_key = pred_key
        self.threshold = threshold
        self._filenames: list[str] = []
        self._probabilities: list[torch.Tensor] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def _reset(self, engine: Engine) -> None:
        self._filenames, self._probabilities = [], []

    def _collect(self, engine: Engine) -> None:
        filenames = self._batch_filenames(engine.state.batch)
        probabilities = self._batch_probabilities(engine.state.output)
        if len(filenames) != len(probabilities):
            raise ValueError(f"{len(filenames)} filenames but {len(probabilities)} probability vectors in the batch")
        for vector in probabilities:
            if vector.numel() != len(self.class_names):
                raise ValueError(f"{vector.numel()} probabilities per image for {len(self.class_names)} class names")
        self._filenames.extend(filenames)
        self._probabilities.extend(probabilities)

    def _batch_filenames(self, batch: Any) -> list[str]:
        samples = batch if isinstance(batch, Sequence) else [batch]
        filenames: list[str] = []
        for sample in samples:
            image = sample[self.image_key]
            meta = image.meta if isinstance(image, MetaTensor) else sample[PostFix.meta(self.image_key)]
            names = meta[FILENAME_KEY]
            filenames.extend([str(names)] if isinstance(names, str) else [str(name) for name in names])
        return filenames

    def _batch_probabilities(self, output: Any) -> list[torch.Tensor]:
        if isinstance(output, Mapping):  # collated: one (batch, classes) tensor
            return [row.flatten() for row in self._plain_tensor(output[self.pred_key])]
        return [self._plain_tensor(sample[self.pred_key]).flatten() for sample in output]

    @staticmethod
    def _plain_tensor(value: Any) -> torch.Tensor:
        return convert_to_tensor(value, track_meta=False).detach().float().cpu()

    def write(self, engine: Engine | None = None) -> None:
        """Gather the collected rows (across ranks when distributed) and write the CSV atomically."""
        filenames = string_list_all_gather(self._filenames)
        stacked = torch.stack(self._probabilities) if self._probabilities else torch.zeros(0, len(self.class_names))
        probabilities = evenly_divisible_all_gather(stacked)
        if not is_main_process():
            return
        rows = dict(zip(filenames, probabilities.tolist()))  # a DistributedSampler may repeat samples
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["image", *self.class_names, "prediction"])
        for filename in sorted(rows):
            writer.writerow([filename, *(f"{p:.6f}" for p in rows[filename]), self._prediction(rows[filename])])
        atomic_write(self.output_path, lambda out: out.write(text.getvalue().encode("utf-8")))

    def _prediction(self, probabilities: list[float]) -> str:
        if self.multi_label:
            return ";".join(name for name, p in zip(self.class_names, probabilities) if p > self.threshold)
        return self.class_names[probabilities.index(max(probabilities))]
