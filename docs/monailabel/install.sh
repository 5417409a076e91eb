#!/usr/bin/env bash
# A MONAI Label environment beside s4mi-monai's versions (CPU torch 2.13.0, MONAI 1.6.1, numpy 2), measured on
# 2026-12-02: monailabel 0.8.5 (the latest on PyPI) cannot be installed with its declared dependencies here
# (numpymaxflow and pydicom-seg need numpy < 2; sam2 builds a CUDA torch; PyPI's torchvision does not load beside a
# CPU torch), so it is installed without them and given what bundle inference and the server import.
# Usage: bash docs/monailabel/install.sh [VENV_DIR]   (about 2 minutes, 2.3 GB; default .venv-monailabel)
set -euo pipefail
VENV=${1:-.venv-monailabel}
python3.11 -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install --quiet --upgrade pip
"$PIP" install --quiet torch==2.13.0
CONSTRAINTS=$(mktemp)
printf "torch==2.13.0\nmonai==1.6.1\nnumpy==2.4.6\n" > "$CONSTRAINTS"
"$PIP" install --quiet -c "$CONSTRAINTS" monai==1.6.1 pytorch-ignite pillow scipy einops tensorboard matplotlib tiffslide \
    nibabel scikit-image shapely pynrrd itk-core itk-io expiring_dict pydantic pydantic-settings
"$PIP" install --quiet --no-deps monailabel==0.8.5
# the server (monailabel start_server)
"$PIP" install --quiet -c "$CONSTRAINTS" uvicorn fastapi python-multipart pyjwt requests cachetools passlib schedule timeloop \
    watchdog psutil jsonschema SimpleITK girder-client "pydicom<3" "dicomweb-client[gcp]==0.59.1"
"$PIP" install --quiet --no-deps pydicom-seg==0.4.1
rm -f "$CONSTRAINTS"
echo "ready: PYTHONPATH=docs/monailabel/shim $VENV/bin/python -c 'import monailabel.tasks.infer.bundle'"
