"""The synthetic chest-CT cohort, written in CT-RATE's layout (see docs/synthetic_cohort.md).

Modules, one job each: ``geometry`` (grid and shape primitives), ``canvas`` (tissue classes, HU),
``phantom`` (anatomy), ``findings`` (what each label looks like, per difficulty), ``painters``
(drawing findings), ``render`` (HU, noise, kernel), ``reports`` (text), ``patient`` (one patient's
files and rows), ``cohort`` (planning, parallel driver, tables), ``visibility`` (measurement), ``sites``
(the cohort as a second site with another dataset's label columns).
"""

from ctvlp.data.synth.cohort import SynthConfig, plan_cohort, write_cohort

__all__ = ["SynthConfig", "plan_cohort", "write_cohort"]
