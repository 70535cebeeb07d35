"""The paper's faithfulness experiments, rerunnable on any model: ``neurflow experiments SPEC.json``.

Modules, one job each:

* :mod:`.spec`            the experiment spec (a job spec plus an ``experiments`` section)
* :mod:`.labeled_images`  images with their true class (a folder per class, or a CSV)
* :mod:`.fidelity`        masking / retaining core neurons vs random sets (accuracy curves)
* :mod:`.patch_pool`      a class's patches and an upper neuron's top-N overlap after masking
* :mod:`.attributions`    per-channel importance of lower neurons by several attribution methods
* :mod:`.edge_fidelity`   importance vs overlap correlation, and sum vs mean over subsets
* :mod:`.optimality`      the core set vs same-size sets chosen otherwise
* :mod:`.runner`          all of it from a spec, into :class:`.results.ExperimentResults`
"""
