"""Quantization: plans (which precision each layer gets). Sensitivity analysis, calibration and
per-target realization build on `QuantPlan`; until they land, exporters accept only plans whose
every layer is a float precision they support, and say so plainly for the rest."""
