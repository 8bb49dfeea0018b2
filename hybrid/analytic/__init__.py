"""Analytic cost model of hybrid models (docs/analytic.md) and the measurements it is checked against.

- costs.py     parameters, FLOPs, activation / cache memory from the block dicts
- rates.py     device matmul rate and bandwidth (a table of measured devices, else measured now)
- roofline.py  predicted training-step time
- compare.py   crossover lengths vs a pure transformer; the recall-capacity proxy
- frontier.py  the predicted cost / recall-capacity Pareto frontier over attention fractions
- measure.py   parameter count, timed step, peak memory, cache bytes of the real model
- report.py    the build report (predicted vs measured, relative error)
"""
