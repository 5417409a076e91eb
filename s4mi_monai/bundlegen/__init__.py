"""The generator of ``bundles/``: ``s4mi bundles`` writes every bundle's configs and README from these modules.

- :mod:`~s4mi_monai.bundlegen.registry`: the bundles (method x dataset);
- :mod:`~s4mi_monai.bundlegen.parts`: sections that several families share, and :class:`~s4mi_monai.bundlegen.parts.Scope`;
- :mod:`~s4mi_monai.bundlegen.supervised`, :mod:`~s4mi_monai.bundlegen.self_supervised`,
  :mod:`~s4mi_monai.bundlegen.crossteach`: the configs of each method family;
- :mod:`~s4mi_monai.bundlegen.metadata`, :mod:`~s4mi_monai.bundlegen.readme`: ``metadata.json`` and ``docs/README.md``;
- :mod:`~s4mi_monai.bundlegen.write`: every file of a bundle, written to disk.

The configs call the run-time helpers of :mod:`s4mi_monai.bundle`, which imports nothing from here.
"""
