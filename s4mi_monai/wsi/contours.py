"""Mask outlines as GeoJSON polygons that QuPath imports as annotations.

Each 4-connected region of a class becomes one polygon traced along pixel edges, an outer ring and one
ring per hole turning the other way, so the polygon covers exactly the region's pixels. Coordinates are pixel corners scaled by ``scale`` (the mask's downsample from level 0),
which is the frame QuPath uses for the slide.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

__all__ = ["mask_features", "region_rings"]

Ring = list[tuple[int, int]]
CROSS = ndimage.generate_binary_structure(2, 1)
# the boundary edges of a pixel, all walked the same way round it: (neighbour offset (dy, dx), edge start, edge end),
# the corners as (x, y) offsets from the pixel's top-left corner
SIDES = (
    ((-1, 0), (1, 0), (0, 0)),  # top side: walked right to left
    ((0, -1), (0, 0), (0, 1)),  # left side: walked downwards
    ((1, 0), (0, 1), (1, 1)),  # bottom side: walked left to right
    ((0, 1), (1, 1), (1, 0)),  # right side: walked upwards
)


def _signed_area(ring: Ring) -> float:
    x, y = np.asarray(ring, dtype=np.float64).T
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def _simplify(ring: Ring) -> Ring:
    """Drop vertices in the middle of straight runs; the ring stays closed (first == last)."""
    points = ring[:-1]
    kept = []
    for i, point in enumerate(points):
        before, after = points[i - 1], points[(i + 1) % len(points)]
        if (point[0] - before[0]) * (after[1] - point[1]) != (point[1] - before[1]) * (after[0] - point[0]):
            kept.append(point)
    return [*kept, kept[0]]


def region_rings(region: np.ndarray) -> list[Ring]:
    """The closed boundary rings of one 4-connected region (a boolean mask) along pixel edges, outer ring first.

    Corners are (x, y) pixel corners. Where two boundary runs meet at one corner (pixels touching diagonally),
    the walk takes the left-most turn, which keeps the rings apart.
    """
    padded = np.pad(region, 1)
    edges: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    ys, xs = np.nonzero(padded & ~ndimage.binary_erosion(padded, CROSS))  # only pixels on the boundary have boundary edges
    for (dy, dx), start, end in SIDES:
        outside = ~padded[ys + dy, xs + dx]
        for y, x in zip(ys[outside] - 1, xs[outside] - 1):
            edges[(int(x) + start[0], int(y) + start[1])].append((int(x) + end[0], int(y) + end[1]))
    rings = []
    while edges:
        start = next(iter(edges))
        ring, previous, current = [start], None, start
        while True:
            options = edges[current]
            if len(options) == 1 or previous is None:
                nxt = options.pop(0)
            else:  # a corner touch: take the left-most turn relative to the incoming direction
                incoming = (current[0] - previous[0], current[1] - previous[1])
                nxt = max(options, key=lambda p: incoming[0] * (p[1] - current[1]) - incoming[1] * (p[0] - current[0]))
                options.remove(nxt)
            if not options:
                del edges[current]
            ring.append(nxt)
            previous, current = current, nxt
            if current == start:
                break
        rings.append(_simplify(ring))
    rings.sort(key=lambda r: abs(_signed_area(r)), reverse=True)
    return rings


def mask_features(labels: np.ndarray, class_names: Sequence[str], scale: float = 1.0, colors: Mapping[int, Sequence[int]] | None = None) -> dict:
    """A GeoJSON FeatureCollection: one Polygon feature per region of each class except 0 (background).

    ``properties`` follow QuPath's GeoJSON import: ``objectType`` annotation and a ``classification`` name.
    """
    features = []
    for value in range(1, len(class_names)):
        components, _ = ndimage.label(labels == value)
        for index, box in enumerate(ndimage.find_objects(components), start=1):  # each region within its bounding box
            rings = region_rings(components[box] == index)
            top, left = box[0].start, box[1].start
            polygon = []
            for k, ring in enumerate(rings):  # the outer ring one way round, holes the other
                oriented = ring if (k == 0) == (_signed_area(ring) > 0) else ring[::-1]
                polygon.append([[round((x + left) * scale, 3), round((y + top) * scale, 3)] for x, y in oriented])
            classification = {"name": class_names[value]}
            if colors and value in colors:
                classification["color"] = list(colors[value])
            features.append(
                {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": polygon}, "properties": {"objectType": "annotation", "classification": classification}}
            )
    return {"type": "FeatureCollection", "features": features}
