"""The PiCIE network (Cho et al., CVPR 2021): a ResNet encoder and a Panoptic-FPN decoder giving per-pixel embeddings.

The reference ``PanopticFPN`` runs a torchvision ResNet (res2..res5, strides 4 to 32) and an ``FPNDecoder``:
1x1 lateral convolutions to 128 channels, then top-down ``upsample(bilinear) + add`` from res5 to res2, with
no 3x3 smoothing. Here the encoder is the package's MONAI ResNet with torchvision's structure
(:class:`~s4mi_monai.networks.classifiers.ResNetBackbone`), the very encoder of
:class:`~s4mi_monai.networks.unet.ResNetUNet`, so that torchvision ImageNet weights load by name and a
PiCIE-pretrained encoder initialises a supervised U-Net (:meth:`PiCIENet.encoder_state_dict`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .classifiers import ResNetBackbone
from .weights import LoadReport, load_pretrained

__all__ = ["PICIE_ENCODERS", "FPNDecoder", "PiCIENet", "PiCIESegmenter"]

PICIE_ENCODERS = ("resnet18", "resnet34")


class FPNDecoder(nn.Module):
    """Panoptic-FPN top-down path without smoothing: ``p5 = L5(c5)``, ``p_l = up(p_{l+1}) + L_l(c_l)`` down to p2.

    ``L_l`` are 1x1 convolutions (with bias, as the reference) to ``out_channels``; ``up`` is bilinear
    resizing (``align_corners=False``) to the size of the next finer level, so odd sizes work too.
    """

    def __init__(self, in_channels: tuple[int, int, int, int], out_channels: int = 128) -> None:
        super().__init__()
        # top-down order, coarsest level first (a plain loop over a ModuleList keeps the decoder scriptable)
        self.laterals = nn.ModuleList(nn.Conv2d(channels, out_channels, kernel_size=1) for channels in reversed(in_channels))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        decoded = features[-1]
        for level, lateral in enumerate(self.laterals):
            skip = features[len(features) - 1 - level]
            if level == 0:
                decoded = lateral(skip)
            else:
                decoded = F.interpolate(decoded, size=skip.shape[-2:], mode="bilinear", align_corners=False) + lateral(skip)
        return decoded


class PiCIENet(nn.Module):
    """ResNet-18/34 + FPN decoder; ``forward`` maps (B, C, H, W) images to (B, 128, ⌈H/4⌉, ⌈W/4⌉) unit-norm embeddings.

    Each pixel's embedding is L2-normalised (the reference's ``metric='cosine'``), so the squared distance to
    a centroid is ``1 − 2⟨z, μ⟩ + ‖μ‖²``. ``pretrained_weights`` is a local file (torchvision ImageNet ResNet
    or an own checkpoint) loaded into the encoder by :func:`~s4mi_monai.networks.weights.load_pretrained`
    (its report is kept in :attr:`weights_report`). Channels-last inputs are handled like any CNN input; the
    output follows the input's memory format.
    """

    def __init__(
        self,
        encoder: str = "resnet18",
        in_channels: int = 3,
        embed_dim: int = 128,
        pretrained_weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        if encoder not in PICIE_ENCODERS:
            raise ValueError(f"PiCIE encoder must be one of {PICIE_ENCODERS}, got {encoder!r}")
        self.encoder = ResNetBackbone(encoder, in_channels)
        self.weights_report: LoadReport | None = load_pretrained(self.encoder, pretrained_weights) if pretrained_weights else None
        self.decoder = FPNDecoder(self.encoder.stage_channels[1:], embed_dim)
        self.embed_dim = embed_dim
        self.output_stride = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stages = self.encoder.feature_maps(x)[1:]
        return F.normalize(self.decoder(stages), dim=1)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's tensors under ``encoder.*``, the names of :class:`~s4mi_monai.networks.unet.ResNetUNet`'s encoder,
        so ``unet.load_state_dict(picie.encoder_state_dict(), strict=False)`` (or ``load_pretrained`` on a saved copy)
        starts a supervised U-Net from the PiCIE encoder."""
        return {f"encoder.{name}": tensor for name, tensor in self.encoder.state_dict().items()}


class PiCIESegmenter(nn.Module):
    """A trained :class:`PiCIENet` with its final centroids and cluster-to-class matching: a segmentation network.

    ``forward`` embeds the image, scores each pixel against the K centroids with the inner product ``⟨z, μ_k⟩``
    (the reference's frozen 1x1 classifier), upsamples the scores bilinearly to the input size and returns

    - ``output="classes"`` (default): (B, n_classes, H, W) class scores, the best score of the clusters matched
      to each class, so that ``argmax`` is the matched mask and the shared segmentation evaluator, MONAI's
      postprocessing and inference work as for any segmentation network. Clusters left unmatched (Hungarian
      matching with K > n_classes) count as background (class 0);
    - ``output="clusters"``: (B, K, H, W) cluster scores, whose ``argmax`` is the cluster map.

    ``grayscale_input`` turns RGB inputs into 3-channel gray first, as the network saw them in training. The
    centroids and the matching are buffers, so ``model.pt`` holds everything inference needs and no labels.
    """

    def __init__(
        self,
        network: PiCIENet,
        n_clusters: int = 2,
        n_classes: int = 2,
        output: str = "classes",
        grayscale_input: bool = False,
    ) -> None:
        super().__init__()
        if output not in ("classes", "clusters"):
            raise ValueError(f"output must be 'classes' or 'clusters', got {output!r}")
        self.network = network
        self.register_buffer("centroids", torch.zeros(n_clusters, network.embed_dim))
        self.register_buffer("cluster_to_class", torch.arange(n_clusters) % n_classes)
        self.n_classes = n_classes
        self.return_clusters = output == "clusters"
        self.grayscale_input = grayscale_input

    def set_clusters(self, centroids: torch.Tensor, cluster_to_class: list[int]) -> None:
        """Install the final centroids (K, D) and the class of each cluster (-1: unmatched, predicted background)."""
        if centroids.shape != self.centroids.shape:
            raise ValueError(f"expected centroids of shape {tuple(self.centroids.shape)}, got {tuple(centroids.shape)}")
        self.centroids.copy_(centroids)
        self.cluster_to_class.copy_(torch.tensor([max(int(c), 0) for c in cluster_to_class]))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The network's pixel embeddings of ``x``, seen as in training (3-channel gray when ``grayscale_input``)."""
        if self.grayscale_input:
            gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
            x = gray.expand(-1, 3, -1, -1)
        return self.network(x)

    def cluster_scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) inner products of the pixel embeddings with the centroids, at the input's size."""
        embeddings = self.embed(x)
        scores = torch.einsum("bdhw,kd->bkhw", embeddings.float(), self.centroids.float())
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.cluster_scores(x)
        if self.return_clusters:
            return scores
        shape = (scores.shape[0], self.n_classes, scores.shape[2], scores.shape[3])
        floor = scores.detach().amin() - 1.0
        classes = torch.full(shape, 0.0, dtype=scores.dtype, device=scores.device) + floor
        index = self.cluster_to_class.view(1, -1, 1, 1).expand_as(scores)
        return classes.scatter_reduce(1, index, scores, reduce="amax", include_self=True)
